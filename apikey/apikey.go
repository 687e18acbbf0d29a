package apikey

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Limits of the key file.
const (
	MinKeyLen  = 16
	MaxKeyLen  = 256
	MaxNameLen = 64
	maxLine    = 4 << 10
)

// ErrInvalid is wrapped by every error about the file's content.
var ErrInvalid = errors.New("apikey: invalid key file")

type entry struct {
	name string
	sum  [sha256.Size]byte
}

// Keys is a set of named keys, of which only the sums are kept. It does
// not change once made; safe for concurrent use.
type Keys struct {
	entries []entry
}

// Load reads the key file at path.
func Load(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("apikey: %w", err)
	}
	defer f.Close()
	k, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Parse reads a key file from r. Its errors name the line and wrap
// ErrInvalid; they never show a key.
func Parse(r io.Reader) (*Keys, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLine)
	k := &Keys{}
	names := map[string]int{}
	sums := map[[sha256.Size]byte]int{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrInvalid, n, fmt.Sprintf(format, args...))
		}
		switch {
		case len(fields) != 2:
			return nil, bad("want a name and a key, separated by white space")
		case !validName(fields[0]):
			return nil, bad("name %q must be 1 to %d letters, digits, '_', '-' or '.'", fields[0], MaxNameLen)
		case !validKey(fields[1]):
			return nil, bad("the key of %s must be %d to %d printable ASCII characters", fields[0], MinKeyLen, MaxKeyLen)
		}
		name, sum := fields[0], sha256.Sum256([]byte(fields[1]))
		if first, dup := names[name]; dup {
			return nil, bad("name %s is given on line %d already", name, first)
		}
		if first, dup := sums[sum]; dup {
			return nil, bad("the key of %s is the key of line %d: every key must be its own", name, first)
		}
		names[name], sums[sum] = n, n
		k.entries = append(k.entries, entry{name: name, sum: sum})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line is longer than %d bytes", ErrInvalid, maxLine)
		}
		return nil, fmt.Errorf("apikey: %w", err)
	}
	return k, nil
}

func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func validKey(s string) bool {
	if len(s) < MinKeyLen || len(s) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Len is how many keys there are.
func (k *Keys) Len() int { return len(k.entries) }

// Names are the keys' names, in the file's order.
func (k *Keys) Names() []string {
	out := make([]string, len(k.entries))
	for i, e := range k.entries {
		out[i] = e.name
	}
	return out
}

// Match returns the name of key, if it is one of k's. Its time does not
// depend on which key, if any, key is, nor on how much of one it matches.
func (k *Keys) Match(key string) (string, bool) {
	if len(key) > MaxKeyLen {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.entries {
		if subtle.ConstantTimeCompare(k.entries[i].sum[:], sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return k.entries[found].name, true
}

// Bearer returns the token of an Authorization header "Bearer <token>"
// (the scheme in any case).
func Bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Limiter is a token bucket per key name: Rate requests a second, bursts
// of Burst. Safe for concurrent use.
type Limiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket // by key name; guarded by mu
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns a limiter of rate requests a second per key, in
// bursts of up to burst (at least 1). A rate of 0 limits nothing.
func NewLimiter(rate float64, burst int) *Limiter {
	return &Limiter{rate: rate, burst: float64(max(burst, 1)), buckets: map[string]*bucket{}}
}

// Rate is the requests a second a key may make.
func (l *Limiter) Rate() float64 { return l.rate }

// Allow takes a token of name's bucket at now. When there is none it
// reports false and how long until there is one.
func (l *Limiter) Allow(name string, now time.Time) (bool, time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[name]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[name] = b
	}
	if now.After(b.last) {
		b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// Keep forgets the buckets of names not in k, after a reload dropped
// them.
func (l *Limiter) Keep(k *Keys) {
	keep := make(map[string]bool, k.Len())
	for _, n := range k.Names() {
		keep[n] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for n := range l.buckets {
		if !keep[n] {
			delete(l.buckets, n)
		}
	}
}
