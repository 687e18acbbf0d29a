package main

import (
	"context"
	"time"
)

// pacer hands out the send times of an open-loop sender: the i-th send is
// due at start + i*interval, whether or not earlier sends were answered,
// so a slow server shows up as latency rather than as a lower send rate.
// A pacer belongs to one goroutine.
type pacer struct {
	start    time.Time
	interval time.Duration
	n        int64 // sends handed out so far
}

// newPacer returns a pacer for rate sends per second starting at start.
// rate must be positive.
func newPacer(start time.Time, rate float64) *pacer {
	iv := time.Duration(float64(time.Second) / rate)
	if iv <= 0 {
		iv = 1
	}
	return &pacer{start: start, interval: iv}
}

// next returns the time the next send is due and counts it as handed out.
func (p *pacer) next() time.Time {
	t := p.start.Add(time.Duration(p.n) * p.interval)
	p.n++
	return t
}

// dueBy is how many sends are due by now (the first one at start).
func (p *pacer) dueBy(now time.Time) int64 {
	if now.Before(p.start) {
		return 0
	}
	return int64(now.Sub(p.start)/p.interval) + 1
}

// run calls send with each due time before end, sleeping until it is due.
// A send that falls behind is made at once (the schedule is kept, no send
// is skipped). It returns when end is reached or ctx ends.
func (p *pacer) run(ctx context.Context, end time.Time, send func(due time.Time)) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due := p.next()
		if !due.Before(end) {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		send(due)
	}
}

// senderStart spreads the first sends of n senders of one rate evenly over
// one interval, so they do not all fire together.
func senderStart(start time.Time, perSenderRate float64, i, n int) time.Time {
	if n <= 0 || perSenderRate <= 0 {
		return start
	}
	iv := float64(time.Second) / perSenderRate
	return start.Add(time.Duration(iv * float64(i) / float64(n)))
}
