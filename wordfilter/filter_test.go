package wordfilter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func mustNew(t testing.TB, words ...string) *Filter {
	t.Helper()
	f, err := New(words)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMask(t *testing.T) {
	tests := []struct {
		name   string
		words  []string
		text   string
		want   string
		masked bool
	}{
		{"plain", []string{"bad"}, "a bad day", "a *** day", true},
		{"mixed case", []string{"bad"}, "BaD", "***", true},
		{"upper word lower text", []string{"BAD"}, "so bad", "so ***", true},
		{"full-width text", []string{"bad"}, "ＢＡＤ day", "*** day", true},
		{"full-width word", []string{"ｂａｄ"}, "Bad!", "***!", true},
		{"half and full mixed", []string{"bad"}, "bＡd", "***", true},
		{"ideographic space", []string{"go away"}, "ＧＯ\u3000ＡＷＡＹ now", "******* now", true},
		{"full-width punctuation", []string{"a!b"}, "ａ！ｂ", "***", true},
		{"inside a longer word", []string{"ass"}, "classic", "cl***ic", true},
		{"repeated", []string{"bad"}, "badbad bad", "****** ***", true},
		{"overlapping", []string{"abc", "bcd"}, "abcd", "****", true},
		{"contained", []string{"abcd", "bc"}, "abcx abcd", "a**x ****", true},
		{"overlapping runs", []string{"aa"}, "aaa", "***", true},
		{"adjacent", []string{"ab", "cd"}, "xabcdx", "x****x", true},
		{"chinese", []string{"坏蛋"}, "你这个坏蛋！", "你这个**！", true},
		{"chinese and latin", []string{"坏蛋", "bad"}, "坏蛋BAD坏", "*****坏", true},
		{"emoji neighbours", []string{"bad"}, "😀bad😀 ＢＡＤ🇫🇷", "😀***😀 ***🇫🇷", true},
		{"accented", []string{"éclair"}, "ÉCLAIR café", "****** café", true},
		{"greek sigma", []string{"σοφος"}, "ΣΟΦΟΣ σοφος σοφοσ", "***** ***** *****", true},
		{"kelvin sign", []string{"kilo"}, "\u212Ailo", "****", true},
		{"half-width katakana", []string{"カタカナ"}, "ｶﾀｶﾅ", "****", true},
		{"invalid bytes kept", []string{"bad"}, "\xffbad\xfe", "\xff***\xfe", true},
		{"no match", []string{"bad"}, "a good day", "a good day", false},
		{"partial", []string{"bad"}, "ba d", "ba d", false},
		{"empty text", []string{"bad"}, "", "", false},
		{"empty list", nil, "bad", "bad", false},
		{"blank words", []string{"", "  "}, "bad", "bad", false},
		{"trimmed word", []string{"  bad\t"}, "bad", "***", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := mustNew(t, tc.words...)
			got, masked := f.Mask(tc.text)
			if got != tc.want || masked != tc.masked {
				t.Fatalf("Mask(%q) = %q, %v; want %q, %v", tc.text, got, masked, tc.want, tc.masked)
			}
			if utf8.RuneCountInString(got) != utf8.RuneCountInString(tc.text) {
				t.Fatalf("Mask(%q) = %q changed the rune count", tc.text, got)
			}
		})
	}
}

// naiveMask is Mask done the slow, obvious way: compare every word at every
// rune of the text.
func naiveMask(words []string, text string) string {
	type unit struct {
		orig string
		r    rune // folded; -1 for a byte that is not UTF-8
	}
	var units []unit
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		u := unit{orig: text[i : i+size], r: Fold(r)}
		if r == utf8.RuneError && size == 1 {
			u.r = -1
		}
		units = append(units, u)
		i += size
	}
	hit := make([]bool, len(units))
	for _, w := range words {
		var wr []rune
		for _, r := range strings.TrimSpace(w) {
			wr = append(wr, Fold(r))
		}
		if len(wr) == 0 {
			continue
		}
	next:
		for i := 0; i+len(wr) <= len(units); i++ {
			for k, r := range wr {
				if units[i+k].r != r {
					continue next
				}
			}
			for k := range wr {
				hit[i+k] = true
			}
		}
	}
	var b strings.Builder
	for i, u := range units {
		if hit[i] {
			b.WriteByte('*')
		} else {
			b.WriteString(u.orig)
		}
	}
	return b.String()
}

func TestMaskMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	// A small alphabet, so that words occur often, with every kind of
	// rune Fold treats differently and a byte that is not UTF-8.
	alphabet := []string{"a", "A", "ａ", "Ａ", "b", "B", "ｂ", " ", "\u3000", "坏", "蛋", "ſ", "s", "S", "😀", "\xff", "é", "É"}
	randText := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for i := range 2000 {
		var words []string
		for range 1 + rng.IntN(4) {
			if w := randText(1 + rng.IntN(3)); utf8.ValidString(w) {
				words = append(words, w)
			}
		}
		text := randText(rng.IntN(20))
		f := mustNew(t, words...)
		got, masked := f.Mask(text)
		want := naiveMask(words, text)
		if got != want || masked != (want != text) {
			t.Fatalf("case %d: words %q: Mask(%q) = %q, %v; want %q", i, words, text, got, masked, want)
		}
	}
}

func TestNilFilter(t *testing.T) {
	var f *Filter
	if got, masked := f.Mask("bad"); got != "bad" || masked {
		t.Fatalf("nil filter: %q %v", got, masked)
	}
	if f.Len() != 0 {
		t.Fatalf("nil filter Len = %d", f.Len())
	}
}

func TestLen(t *testing.T) {
	f := mustNew(t, "bad", "BAD", "ｂａｄ", "", "worse", "坏蛋")
	if f.Len() != 3 {
		t.Fatalf("Len = %d, want 3 (bad, worse, 坏蛋)", f.Len())
	}
	if n := mustNew(t).Len(); n != 0 {
		t.Fatalf("empty Len = %d", n)
	}
}

func TestNewInvalidUTF8(t *testing.T) {
	_, err := New([]string{"ok", "b\xffd"})
	if !errors.Is(err, ErrInvalidUTF8) || !strings.Contains(err.Error(), "word 1") {
		t.Fatalf("err = %v, want ErrInvalidUTF8 naming word 1", err)
	}
}

func TestFold(t *testing.T) {
	for r, want := range map[rune]rune{
		'A': 'a', 'z': 'z', '1': '1', 'Ａ': 'a', 'ｚ': 'z', '！': '!', '～': '~',
		'\u3000': ' ', 'É': 'é', 'ſ': 's', 'ς': 'σ', '\u212A': 'k', 'ｶ': 'カ', '坏': '坏',
	} {
		if got := Fold(r); got != want {
			t.Errorf("Fold(%q) = %q, want %q", r, got, want)
		}
	}
	for r := rune(0xFF01); r <= 0xFF5E; r++ {
		if got, ascii := Fold(r), Fold(r-0xFEE0); got != ascii {
			t.Errorf("Fold(%U) = %U, want %U", r, got, ascii)
		}
	}
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue // surrogates never come out of decoding
		}
		f := Fold(r)
		if !utf8.ValidRune(f) || Fold(f) != f {
			t.Fatalf("Fold(%U) = %U, not a valid fixed point", r, f)
		}
	}
}

func TestFoldFastPath(t *testing.T) {
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if got, want := Fold(r), foldSlow(r); got != want {
			t.Fatalf("Fold(%U) = %U, want %U", r, got, want)
		}
	}
}

func writeList(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "words.txt")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	path := writeList(t, "\uFEFF# unwanted words\n\nbad\r\n  worse  \n\t# indented comment\n坏蛋\n")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != 3 {
		t.Fatalf("Len = %d, want 3", f.Len())
	}
	if got, _ := f.Mask("bad, worse, 坏蛋 # unwanted"); got != "***, *****, ** # unwanted" {
		t.Fatalf("Mask = %q", got)
	}
}

func TestLoadEmpty(t *testing.T) {
	for _, content := range []string{"", "\n\n", "# nothing yet\n   \n"} {
		f, err := Load(writeList(t, content))
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if got, masked := f.Mask("anything"); f.Len() != 0 || got != "anything" || masked {
			t.Fatalf("%q: Len %d, Mask %q %v", content, f.Len(), got, masked)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	path := writeList(t, "bad\n# fine\nb\xe9d\n")
	_, err := Load(path)
	if !errors.Is(err, ErrInvalidUTF8) || !strings.Contains(err.Error(), path+":3:") {
		t.Fatalf("invalid UTF-8: err = %v, want ErrInvalidUTF8 at %s:3", err, path)
	}

	long := writeList(t, "ok\n"+strings.Repeat("x", maxLine+1)+"\n")
	if _, err := Load(long); err == nil || !strings.Contains(err.Error(), long+":2:") {
		t.Fatalf("long line: err = %v, want it at %s:2", err, long)
	}

	missing := filepath.Join(t.TempDir(), "none.txt")
	if _, err := Load(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestMaskConcurrent(t *testing.T) {
	f := mustNew(t, "bad", "坏蛋")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				text := fmt.Sprintf("%d BAD %d 坏蛋 %s", g, i, strings.Repeat("ok ", i))
				want := fmt.Sprintf("%d *** %d ** %s", g, i, strings.Repeat("ok ", i))
				if got, _ := f.Mask(text); got != want {
					t.Errorf("Mask(%q) = %q", text, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestMaskUnchangedAllocatesNothing(t *testing.T) {
	f := mustNew(t, "bad", "坏蛋")
	text := "a perfectly harmless message, ＦＵＬＬ-width and 中文 too"
	f.Mask(text) // warm the buffer pool
	if n := testing.AllocsPerRun(100, func() { f.Mask(text) }); n != 0 {
		t.Fatalf("Mask of a clean text allocates %v times", n)
	}
}

// benchClean is a message of about 200 bytes that none of benchWords
// matches.
const benchClean = "Hey team, the deploy finished at 14:05 and every node looks healthy. " +
	"今天天气很好，我们下午开会吧。 Let me know if the dashboard shows anything odd 🙂 otherwise see you tomorrow!"

// benchWords returns n distinct pseudo-words of 3 to 7 letters, a fifth of
// them Chinese, none of which occurs in benchClean.
func benchWords(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	const latin = "abcdefghijklmnopqrstuvwxyz"
	hanRunes := []rune("坏蛋笨猪傻瓜混球垃圾废物讨厌滚开天气很好")
	clean := strings.ToLower(benchClean)
	seen := make(map[string]bool, n)
	words := make([]string, 0, n)
	for len(words) < n {
		var b strings.Builder
		if len(words)%5 == 0 {
			for range 2 + rng.IntN(2) {
				b.WriteRune(hanRunes[rng.IntN(len(hanRunes))])
			}
		} else {
			for range 3 + rng.IntN(5) {
				b.WriteByte(latin[rng.IntN(len(latin))])
			}
		}
		if w := b.String(); !seen[w] && !strings.Contains(clean, w) {
			seen[w] = true
			words = append(words, w)
		}
	}
	return words
}

func BenchmarkMask(b *testing.B) {
	words := benchWords(1000)
	f, err := New(words)
	if err != nil {
		b.Fatal(err)
	}
	// Three listed words (one Chinese, one in upper case) in place of a
	// clause of about the same length.
	dirty := strings.Replace(benchClean, "every node looks healthy",
		words[0]+" node "+strings.ToUpper(words[1])+" and "+words[2], 1)
	if _, masked := f.Mask(benchClean); masked {
		b.Fatal("clean message matched")
	}
	if _, masked := f.Mask(dirty); !masked {
		b.Fatal("dirty message did not match")
	}
	for _, bc := range []struct{ name, text string }{{"clean", benchClean}, {"dirty", dirty}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.text)))
			for b.Loop() {
				f.Mask(bc.text)
			}
		})
	}
}
