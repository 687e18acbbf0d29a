package node

import "testing"

// After writes of the boot key whose outcome was unknown, any value this
// run wrote from the last confirmed one on is no sign of lost data, however
// many failed in a row (a write that timed out may have been applied, the
// one after it never sent); an older value, or another run's, is.
func TestBootKeyRollbackIsJudgedByRunAndCount(t *testing.T) {
	s := &Server{beat: "mx75r1.5"}
	for v, want := range map[string]bool{
		"mx75r1.5":  true,  // the last confirmed write
		"mx75r1.6":  true,  // timed out, but applied; 7 was never sent
		"mx75r1.12": true,  // many failures later
		"mx75r1.4":  false, // Redis came back from an older snapshot
		"mx75q9.9":  false, // another run of this node
		"garbage":   false,
		"mx75r1.x":  false,
	} {
		if got := s.wroteSince(v); got != want {
			t.Errorf("wroteSince(%q) after %q = %v, want %v", v, s.beat, got, want)
		}
	}
}
