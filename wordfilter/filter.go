package wordfilter

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/coregx/ahocorasick"
)

// ErrInvalidUTF8 means a word of the list is not valid UTF-8.
var ErrInvalidUTF8 = errors.New("wordfilter: invalid UTF-8")

// maxLine bounds one line of a word list file.
const maxLine = 64 << 10

// maxPooledBuf is the largest scratch buffer kept for reuse; a longer text
// gets a buffer of its own.
const maxPooledBuf = 64 << 10

// Filter masks the words of one list. Build it with New or Load; it is
// immutable afterwards and safe for concurrent use. A nil *Filter masks
// nothing.
type Filter struct {
	ac    *ahocorasick.Automaton // nil when the list is empty
	words int                    // distinct folded words in ac

	// bufs holds *[]byte scratch buffers for folded texts, so that Mask
	// allocates nothing for a text it leaves unchanged.
	bufs sync.Pool
}

// New builds a Filter for words. Each word is trimmed of surrounding white
// space; empty words are skipped and words equal after Fold count once. A
// word that is not valid UTF-8 is an error (ErrInvalidUTF8). An empty list
// gives a Filter that masks nothing.
func New(words []string) (*Filter, error) {
	f := &Filter{}
	f.bufs.New = func() any {
		b := make([]byte, 0, 512)
		return &b
	}
	seen := make(map[string]struct{}, len(words))
	patterns := make([][]byte, 0, len(words))
	for i, w := range words {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		if !utf8.ValidString(w) {
			return nil, fmt.Errorf("word %d: %w", i, ErrInvalidUTF8)
		}
		p := appendFolded(nil, w)
		if _, dup := seen[string(p)]; dup {
			continue
		}
		seen[string(p)] = struct{}{}
		patterns = append(patterns, p)
	}
	f.words = len(patterns)
	if len(patterns) == 0 {
		return f, nil
	}
	ac, err := ahocorasick.NewBuilder().AddPatterns(patterns).Build()
	if err != nil {
		return nil, fmt.Errorf("wordfilter: %w", err)
	}
	f.ac = ac
	return f, nil
}

// Load builds a Filter from the UTF-8 word list file at path: one word per
// line, surrounding white space trimmed; blank lines and lines whose first
// non-blank character is '#' are skipped (so a word cannot start with '#').
// A leading byte order mark is ignored. Errors name the file and line.
func Load(path string) (*Filter, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wordfilter: %w", err)
	}
	defer file.Close()
	var words []string
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		if !utf8.ValidString(text) {
			return nil, fmt.Errorf("%s:%d: %w", path, line, ErrInvalidUTF8)
		}
		text = strings.TrimSpace(text)
		if text == "" || text[0] == '#' {
			continue
		}
		words = append(words, text)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("wordfilter: %s:%d: %w", path, line+1, err)
	}
	return New(words)
}

// Len returns how many distinct words the filter masks.
func (f *Filter) Len() int {
	if f == nil {
		return 0
	}
	return f.words
}

// Mask returns text with each rune that lies inside an occurrence of a
// listed word replaced by '*', and whether there was any. Runes outside
// occurrences, bytes that are not valid UTF-8 included, are kept as they
// are. When nothing matches, text itself is returned and nothing is
// allocated.
func (f *Filter) Mask(text string) (string, bool) {
	if f == nil || f.ac == nil || text == "" {
		return text, false
	}
	bp := f.bufs.Get().(*[]byte)
	folded := appendFolded((*bp)[:0], text)
	matches := f.ac.FindAllOverlapping(folded)
	out, masked := text, false
	if len(matches) > 0 {
		out, masked = mask(text, len(folded), matches), true
	}
	if cap(folded) <= maxPooledBuf {
		*bp = folded
		f.bufs.Put(bp)
	}
	return out, masked
}

// mask returns text with '*' for every unit (rune, or invalid byte) whose
// folded form overlaps one of matches. n is the length of the folded text
// the matches were found in.
func mask(text string, n int, matches []ahocorasick.Match) string {
	// depth[i] - depth[i-1] is how many matches start minus end at folded
	// byte i; its running sum is how many matches cover byte i.
	depth := make([]int32, n+1)
	for _, m := range matches {
		depth[m.Start]++
		depth[m.End]--
	}
	var b strings.Builder
	b.Grow(len(text))
	var cover int32
	keep := 0 // start of the kept text not yet written
	for i, j := 0, 0; i < len(text); {
		size, fsize := 1, 1
		if text[i] >= utf8.RuneSelf {
			size, fsize = foldedLen(text, i)
		}
		hit := false
		for end := j + fsize; j < end; j++ {
			cover += depth[j]
			hit = hit || cover > 0
		}
		if hit {
			b.WriteString(text[keep:i])
			b.WriteByte('*')
			keep = i + size
		}
		i += size
	}
	b.WriteString(text[keep:])
	return b.String()
}
