package webhook

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	lo, hi := time.Second, 20*time.Second
	for failed, want := range map[int]time.Duration{
		0: 0, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second,
		5: 16 * time.Second, 6: 20 * time.Second, 7: 20 * time.Second, 1000: 20 * time.Second,
	} {
		if got := Backoff(failed, lo, hi); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", failed, got, want)
		}
	}
	// The defaults: an event is tried for about half an hour.
	var total time.Duration
	for failed := 1; failed < DefaultAttempts; failed++ {
		total += Backoff(failed, DefaultRetryMin, DefaultRetryMax)
	}
	if total < 20*time.Minute || total > 40*time.Minute {
		t.Errorf("the default policy waits %v over its attempts", total)
	}
}

func TestJitterStaysInRange(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, time.Millisecond, time.Second, time.Hour} {
		for range 200 {
			if j := jitter(d); j < d/2 || j > d {
				t.Fatalf("jitter(%v) = %v, outside [%v, %v]", d, j, d/2, d)
			}
		}
	}
}
