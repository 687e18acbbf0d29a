package accounts

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/norm"

	"chatcluster/protocol"
)

// Key is the normal form usernames are compared under: Unicode NFKC, then
// full case folding, then NFKC again (NFKC_Casefold). "Alice", "ALICE" and
// the full-width "ａｌｉｃｅ" all have the key "alice". Two users never
// share a key: a name is registered under its key (see Canonical), and the
// names of an earlier build are reserved under theirs (MigrateNames).
func Key(name string) string {
	return norm.NFKC.String(cases.Fold().String(norm.NFKC.String(name)))
}

// usernameProfile is RFC 8264's IdentifierClass with the mappings of Key
// (width, case folding, NFKC) and RFC 5893's Bidi Rule: the PRECIS check
// of what a username may be made of. It is immutable and safe for
// concurrent use.
var usernameProfile = precis.NewIdentifier(
	precis.FoldWidth, precis.FoldCase(), precis.Norm(norm.NFKC), precis.BidiRule, precis.DisallowEmpty,
)

// Canonical returns the name a new user is registered under: Key(name),
// provided that name and its key are valid names (protocol.ValidName), the
// letters of the key are of one script (see scriptsOK) and the key passes
// the PRECIS identifier rules (usernameProfile). Otherwise it returns an error that
// wraps ErrInvalid and says why.
func Canonical(name string) (string, error) {
	k := Key(name)
	if !protocol.ValidName(name) || !protocol.ValidName(k) {
		return "", fmt.Errorf("%w: username must be 1 to %d letters, digits, '_', '-' or '.'", ErrInvalid, protocol.MaxUsernameLen)
	}
	if scripts, ok := scriptsOK(k); !ok {
		return "", fmt.Errorf("%w: username mixes letters of different scripts (%s); use one script", ErrInvalid, strings.Join(scripts, ", "))
	}
	if p, err := usernameProfile.String(k); err != nil || p != k {
		return "", fmt.Errorf("%w: username has characters that are not allowed in a username", ErrInvalid)
	}
	return k, nil
}

// The script sets one name may combine, after Unicode's "Highly
// Restrictive" level of mixed-script detection (UTS #39, section 5.2):
// Latin with the scripts written beside it in Japanese, Chinese and
// Korean.
var mixes = [][]string{
	{"Han", "Hiragana", "Katakana", "Latin"},
	{"Bopomofo", "Han", "Latin"},
	{"Hangul", "Han", "Latin"},
}

// scriptsOK reports whether the letters of s are of one script (or one of
// the mixes), ignoring characters of the Common and Inherited scripts
// (ASCII digits, '_', '-', '.', combining marks). It also returns the
// scripts found, sorted. A name such as "аlice", a Cyrillic "а" among
// Latin letters, mixes two and is refused; a name all in one script is
// fine.
func scriptsOK(s string) ([]string, bool) {
	var found []string
	for _, r := range s {
		name := scriptOf(r)
		if name != "" && !slices.Contains(found, name) {
			found = append(found, name)
		}
	}
	slices.Sort(found)
	if len(found) <= 1 {
		return found, true
	}
	for _, m := range mixes {
		if !slices.ContainsFunc(found, func(n string) bool { return !slices.Contains(m, n) }) {
			return found, true
		}
	}
	return found, false
}

// scriptOf is the Unicode script of r: "" for Common and Inherited,
// "Unknown" for a code point of no script.
func scriptOf(r rune) string {
	if unicode.In(r, unicode.Common, unicode.Inherited) {
		return ""
	}
	if unicode.In(r, unicode.Latin) { // the usual case first
		return "Latin"
	}
	for name, table := range unicode.Scripts {
		if unicode.Is(table, r) {
			return name
		}
	}
	return "Unknown"
}
