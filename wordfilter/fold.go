package wordfilter

import (
	"slices"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/width"
)

// Fold returns the rune r is compared as. It first folds width: full-width
// ASCII (U+FF01–U+FF5E) becomes ASCII (U+0021–U+007E), the ideographic
// space U+3000 a space, other full-width signs their narrow form (￥ to ¥)
// and half-width Katakana and Hangul their usual wide form (golang.org/x/text/width,
// Properties.Folded). It then folds case with unicode.ToLower of
// unicode.ToUpper, which also joins the lower-case variants Unicode keeps
// apart (ſ with s, ς with σ, ı with i).
//
// Fold maps one rune to one rune; Fold(Fold(r)) == Fold(r).
func Fold(r rune) rune {
	switch {
	case r < utf8.RuneSelf:
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	case 0x3001 <= r && r <= 0xA63F, 0xAC00 <= r && r <= 0xD7A3:
		// CJK punctuation, Kana, CJK ideographs, Yi and Hangul
		// syllables have no width or case variants (TestFoldFastPath).
		return r
	}
	return foldSlow(r)
}

// foldSlow is Fold without its shortcuts.
func foldSlow(r rune) rune {
	if f := width.LookupRune(r).Folded(); f != 0 {
		r = f
	}
	return unicode.ToLower(unicode.ToUpper(r))
}

// appendFolded appends the folded form of s to dst, one unit per rune of
// s: a valid rune is appended as Fold of it, a byte that is not valid
// UTF-8 is copied unchanged.
func appendFolded(dst []byte, s string) []byte {
	dst = slices.Grow(dst, len(s))
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			// Copy a run of ASCII at once, then lower it in place.
			j := i + 1
			for j < len(s) && s[j] < utf8.RuneSelf {
				j++
			}
			n := len(dst)
			dst = append(dst, s[i:j]...)
			for k, c := range dst[n:] {
				if 'A' <= c && c <= 'Z' {
					dst[n+k] = c + 'a' - 'A'
				}
			}
			i = j
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[i])
		} else {
			dst = utf8.AppendRune(dst, Fold(r))
		}
		i += size
	}
	return dst
}

// foldedLen returns how many bytes the unit of s starting at byte i takes
// in s and in its folded form.
func foldedLen(s string, i int) (orig, folded int) {
	if s[i] < utf8.RuneSelf {
		return 1, 1
	}
	r, size := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && size == 1 {
		return 1, 1
	}
	return size, utf8.RuneLen(Fold(r))
}
