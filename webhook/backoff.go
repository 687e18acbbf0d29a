package webhook

import (
	"math/rand/v2"
	"time"
)

// Backoff is the wait before the next attempt after failed attempts
// (1 or more): lo after the first, doubled after each further one, never
// more than hi.
func Backoff(failed int, lo, hi time.Duration) time.Duration {
	if failed < 1 {
		return 0
	}
	d := lo
	for i := 1; i < failed && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// jitter spreads a wait d over [d/2, d], so that events that failed
// together are not all tried again at the same instant.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
