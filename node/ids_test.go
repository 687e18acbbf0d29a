package node

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Ids are unique across the reads of random bytes, time-ordered to the
// millisecond, and shaped as before: the time in base 36, a dash, 16 hex
// digits.
func TestIDsAreUniqueAcrossReads(t *testing.T) {
	var s idSource
	shape := regexp.MustCompile(`^[0-9a-z]+-[0-9a-f]{16}$`)
	seen := map[string]bool{}
	start := time.Now().UnixMilli()
	prev := int64(0)
	for i := range 5 * idBatch / 8 { // five reads of random bytes
		id := s.next()
		if !shape.MatchString(id) {
			t.Fatalf("id %d is %q", i, id)
		}
		if seen[id] {
			t.Fatalf("id %d, %q, was handed out before", i, id)
		}
		seen[id] = true
		ms, err := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 36, 64)
		if err != nil || ms < start || ms < prev {
			t.Fatalf("id %d, %q: time %d, want from %d on and no lower than the one before (%d)", i, id, ms, start, prev)
		}
		prev = ms
	}
	suffixes := map[string]bool{}
	for id := range seen {
		suffixes[strings.SplitN(id, "-", 2)[1]] = true
	}
	if len(suffixes) != len(seen) {
		t.Fatalf("%d ids share %d random parts", len(seen), len(suffixes))
	}
}
