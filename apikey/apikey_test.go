package apikey

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const goodFile = `# operators' keys
modbot   Zt3m9L0bVQ2hR6pX8yK4wN1c

  alerts	3kd9X2mQ7vB5nL8pR1tY6wZ0  
ci.job-1 !#$%&'()*+,-./:;<=>?@[]^_{|}~
`

func TestParseAndMatch(t *testing.T) {
	k, err := Parse(strings.NewReader(goodFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Names(); !slices.Equal(got, []string{"modbot", "alerts", "ci.job-1"}) {
		t.Fatalf("names %v", got)
	}
	for key, want := range map[string]string{
		"Zt3m9L0bVQ2hR6pX8yK4wN1c":      "modbot",
		"3kd9X2mQ7vB5nL8pR1tY6wZ0":      "alerts",
		"!#$%&'()*+,-./:;<=>?@[]^_{|}~": "ci.job-1",
	} {
		if name, ok := k.Match(key); !ok || name != want {
			t.Errorf("Match(key of %s) = %q, %v", want, name, ok)
		}
	}
	for _, key := range []string{"", "Zt3m9L0bVQ2hR6pX8yK4wN1", "Zt3m9L0bVQ2hR6pX8yK4wN1cx", "zt3m9L0bVQ2hR6pX8yK4wN1c", "modbot", strings.Repeat("x", 1000)} {
		if name, ok := k.Match(key); ok {
			t.Errorf("Match(%q) = %q: a wrong key matched", key, name)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const key = "0123456789abcdef"
	cases := map[string]struct{ file, want string }{
		"name only":     {"modbot\n", "line 1: want a name and a key"},
		"three fields":  {"modbot " + key + " extra\n", "line 1: want a name and a key"},
		"bad name":      {"mod/bot " + key + "\n", `line 1: name "mod/bot" must be`},
		"long name":     {strings.Repeat("n", 65) + " " + key + "\n", "must be 1 to 64"},
		"short key":     {"# c\nmodbot 0123456789abcde\n", "line 2: the key of modbot must be 16 to 256"},
		"non-ASCII key": {"modbot 0123456789abcdéf\n", "the key of modbot must be"},
		"same name":     {"a " + key + "\na " + key + "x\n", "line 2: name a is given on line 1 already"},
		"same key":      {"a " + key + "\nb " + key + "\n", "line 2: the key of b is the key of line 1"},
		"long line":     {strings.Repeat("x", 5000) + "\n", "longer than"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.file))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalid with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), key) {
				t.Fatalf("the error shows a key: %v", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	if _, err := Load(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte(goodFile), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := Load(path)
	if err != nil || k.Len() != 3 {
		t.Fatalf("Load = %v keys, %v", k, err)
	}
	if err := os.WriteFile(path, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), path+": ") {
		t.Fatalf("Load of a bad file: %v", err)
	}
}

func TestBearer(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc":    "abc",
		"bearer abc":    "abc",
		"BEARER   abc ": "abc",
		"Basic abc":     "",
		"Bearer":        "",
		"Bearer ":       "",
		"abc":           "",
		"":              "",
	} {
		got, ok := Bearer(header)
		if got != want || ok != (want != "") {
			t.Errorf("Bearer(%q) = %q, %v; want %q", header, got, ok, want)
		}
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(10, 3)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.Allow("a", now); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i)
		}
	}
	ok, wait := l.Allow("a", now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("4th request: %v, wait %v; want refused, 100ms", ok, wait)
	}
	if ok, _ := l.Allow("b", now); !ok {
		t.Fatal("another key's request was refused")
	}
	if ok, _ := l.Allow("a", now.Add(100*time.Millisecond)); !ok {
		t.Fatal("a request refused after the bucket refilled one token")
	}
	if ok, _ := l.Allow("a", now.Add(100*time.Millisecond)); ok {
		t.Fatal("two requests allowed on one refilled token")
	}
	if ok, _ := NewLimiter(0, 0).Allow("a", now); !ok {
		t.Fatal("a limiter of rate 0 refused")
	}
	k, _ := Parse(strings.NewReader("b 0123456789abcdef\n"))
	l.Keep(k)
	if _, kept := l.buckets["a"]; kept {
		t.Fatal("the bucket of a key no longer in the file is kept")
	}
}
