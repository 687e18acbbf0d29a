package accounts

import (
	"errors"
	"strings"
	"testing"
)

// Lookalike spellings share one key; different names do not.
func TestKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice", "alice"},
		{"Alice", "alice"},
		{"ALICE", "alice"},
		{"ａｌｉｃｅ", "alice"},         // full-width
		{"Ａｌｉｃｅ", "alice"},         // full-width capital
		{"ｱﾘｽ", "アリス"},             // half-width katakana
		{"Straße", "strasse"},      // ß folds to ss
		{"STRASSE", "strasse"},     // so both spellings are one name
		{"ﬁsh", "fish"},            // ligature
		{"Ⅸ", "ix"},                // Roman numeral
		{"é", "é"},                 // e + combining acute: composed
		{"Σίσυφος", "σίσυφοσ"},     // final sigma folds like any sigma
		{"ΣΊΣΥΦΟΣ", "σίσυφοσ"},     // and capitals too
		{"аlice", "аlice"},         // Cyrillic а stays Cyrillic: not "alice"
		{"张伟", "张伟"},               // no case
		{"bob_1.x-y", "bob_1.x-y"}, // punctuation kept
	} {
		if got := Key(tc.in); got != tc.want {
			t.Errorf("Key(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if k := Key(tc.in); Key(k) != k {
			t.Errorf("Key(Key(%q)) = %q, not stable", tc.in, Key(k))
		}
	}
}

// Canonical accepts names of one script and refuses mixed scripts and
// characters that are not allowed in a username.
func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		why      string // part of the error; "" when valid
	}{
		{"alice", "alice", ""},
		{"Alice", "alice", ""},
		{"ａｌｉｃｅ", "alice", ""},
		{"Bob_1", "bob_1", ""},
		{"li.wei", "li.wei", ""},
		{"张伟", "张伟", ""},
		{"田中さん", "田中さん", ""},           // Han + Hiragana: Japanese
		{"タナカtanaka", "タナカtanaka", ""}, // Katakana + Latin: allowed mix
		{"김민준", "김민준", ""},             // Hangul
		{"Иван", "иван", ""},           // all Cyrillic
		{"Ελένη", "ελένη", ""},         // all Greek
		{"محمد", "محمد", ""},           // Arabic, right to left
		{"Straße", "strasse", ""},
		{"аlice", "", "mixes letters"},    // Cyrillic а, Latin lice
		{"pаypal", "", "mixes letters"},   // Cyrillic а inside
		{"gοogle", "", "mixes letters"},   // Greek ο inside
		{"иванivan", "", "mixes letters"}, // Cyrillic + Latin
		{"김tanaka田", "김tanaka田", ""},      // Hangul + Latin + Han: a Korean mix
		{"김タナカ", "", "mixes letters"},     // Hangul + Katakana
		{"a৪", "", "mixes letters"},       // Bengali digit beside Latin
		{"", "", "username must be"},
		{"a b", "", "username must be"},
		{"a:b", "", "username must be"},
		{"a@b", "", "username must be"},
		{strings.Repeat("x", 33), "", "username must be"},
		{strings.Repeat("ß", 20), "", "username must be"}, // 40 runes once folded
		{"Ⅸ", "", "username must be"},                     // not a letter as typed
		{"abc\u0627", "", "mixes letters"},                // Latin + Arabic
		{"\u05d0a", "", "mixes letters"},                  // Hebrew + Latin
	} {
		got, err := Canonical(tc.in)
		switch {
		case tc.want != "":
			if err != nil || got != tc.want {
				t.Errorf("Canonical(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		case err == nil:
			t.Errorf("Canonical(%q) = %q, want an error with %q", tc.in, got, tc.why)
		case !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.why):
			t.Errorf("Canonical(%q) error %q, want ErrInvalid with %q", tc.in, err, tc.why)
		}
	}
}

// Every canonical name is its own key and canonical again.
func TestCanonicalIsStable(t *testing.T) {
	for _, in := range []string{"Alice", "ａｌｉｃｅ", "Straße", "田中さん", "Ελένη", "Σίσυφος", "ǅemal", "ﬀ_x"} {
		c, err := Canonical(in)
		if err != nil {
			t.Errorf("Canonical(%q): %v", in, err)
			continue
		}
		if Key(c) != c {
			t.Errorf("Key(Canonical(%q)) = %q, want %q", in, Key(c), c)
		}
		if again, err := Canonical(c); err != nil || again != c {
			t.Errorf("Canonical(Canonical(%q)) = %q, %v; want %q", in, again, err, c)
		}
	}
}
