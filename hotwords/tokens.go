package hotwords

import (
	"unicode"
	"unicode/utf8"

	"chatcluster/wordfilter"
)

// Limits of Tokens.
const (
	MaxTokens    = 32 // distinct tokens taken from one message
	minWordRunes = 2
	maxWordRunes = 32
)

// Tokens returns the words of text that count towards the ranking, folded,
// distinct, in order of first appearance, at most MaxTokens of them. The
// rule is in the package documentation.
func Tokens(text string) []string {
	t := tokenizer{prevHan: -1}
	for _, r := range text {
		if len(t.out) == MaxTokens {
			break
		}
		t.add(wordfilter.Fold(r))
	}
	t.endWord()
	return t.out
}

// tokenizer is the state of one Tokens call.
type tokenizer struct {
	out []string

	prevHan rune // the previous rune if it was Han, else -1

	word       []byte // the current word, folded
	wordRunes  int
	wordLetter bool // the word has a letter
	wordMasked bool // the word has a '*'
}

// add takes the next folded rune.
func (t *tokenizer) add(r rune) {
	if unicode.Is(unicode.Han, r) {
		t.endWord()
		if t.prevHan >= 0 {
			var b [2 * utf8.UTFMax]byte
			t.emit(string(utf8.AppendRune(utf8.AppendRune(b[:0], t.prevHan), r)))
		}
		t.prevHan = r
		return
	}
	t.prevHan = -1
	switch {
	case r == '*':
		t.wordMasked = true
	case unicode.IsLetter(r):
		t.wordLetter = true
	case unicode.IsDigit(r), unicode.IsMark(r):
	default:
		t.endWord()
		return
	}
	t.word = utf8.AppendRune(t.word, r)
	t.wordRunes++
}

// endWord emits the current word if it counts, and starts a new one.
func (t *tokenizer) endWord() {
	if t.wordRunes >= minWordRunes && t.wordRunes <= maxWordRunes &&
		t.wordLetter && !t.wordMasked && !isStopWord(t.word) {
		t.emit(string(t.word))
	}
	t.word = t.word[:0]
	t.wordRunes = 0
	t.wordLetter = false
	t.wordMasked = false
}

// emit adds token unless it is already there or the list is full.
func (t *tokenizer) emit(token string) {
	if len(t.out) == MaxTokens {
		return
	}
	for _, have := range t.out {
		if have == token {
			return
		}
	}
	t.out = append(t.out, token)
}

// isStopWord reports whether w (folded) is too common to be worth ranking.
// Words of one letter need no entry: they are too short anyway. Keep the
// list in the package documentation in step.
func isStopWord(w []byte) bool {
	switch string(w) {
	case "am", "an", "and", "are", "as", "at", "be", "been", "but", "by",
		"can", "did", "do", "does", "don", "for", "from", "had", "has", "have",
		"he", "her", "his", "if", "in", "is", "it", "its", "just", "ll",
		"me", "my", "no", "not", "of", "on", "or", "re", "she", "so",
		"that", "the", "them", "they", "this", "to", "us", "ve", "was", "we",
		"were", "what", "will", "with", "you", "your":
		return true
	}
	return false
}
