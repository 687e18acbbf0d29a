package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/protocol"
)

// chatter sends typing and read frames beside a dm run's messages: what
// the users of a chat app send most besides messages, which must not slow
// the messages down. Each user sends at its own rate, alternately a typing
// frame and a read frame (up to the last seq of its own messages; a typing
// frame while it has none), to the conversation with its pair, in the
// chatter phases of the run only (chatterPhases).
type chatter struct {
	wg            sync.WaitGroup
	typing, reads atomic.Int64
	failed        atomic.Int64 // frames that could not be written
	start, end    time.Time
	rate          float64 // per user per second; 0: no chatter
	phases        chatterPhases
	// quiet and during are the latencies of the messages due in the quiet
	// and in the chatter phases (record).
	quiet, during *latency
}

// chatterPhases splits a run with chatter into phases of equal length,
// quiet and chatter by turns, quiet first, so that the messages of one run
// are measured both with chatter and without, a second apart. Two runs,
// one after the other, differ by more than what chatter does: on this
// machine the p99 of two runs of the same load, a minute apart, differed
// by up to 80%, as the store, the history writer and the rest of the
// machine moved on; phases a second long see the same state. A message
// due within guard after a phase began counts in neither phase: the queues
// the phase before left are still draining.
type chatterPhases struct {
	start time.Time
	phase time.Duration
	guard time.Duration
}

// of returns the phase a message due at t counts in: 0 quiet, 1 chatter,
// -1 neither (within the guard, or before start).
func (p chatterPhases) of(t time.Time) int {
	if p.phase <= 0 || t.Before(p.start) {
		return -1
	}
	d := t.Sub(p.start)
	if d%p.phase < p.guard {
		return -1
	}
	return int(d/p.phase) % 2
}

// chatterOn reports whether t is in a chatter phase, guard included: the
// chatter starts as the phase does.
func (p chatterPhases) chatterOn(t time.Time) bool {
	return p.phase > 0 && !t.Before(p.start) && int(t.Sub(p.start)/p.phase)%2 == 1
}

// chatterSeconds is how long the chatter phases of [start, end) last in
// all.
func (p chatterPhases) chatterSeconds(end time.Time) float64 {
	if p.phase <= 0 || !end.After(p.start) {
		return 0
	}
	d := end.Sub(p.start)
	n := d / p.phase
	on := (n / 2) * p.phase
	if n%2 == 1 {
		on += d % p.phase // ends in a chatter phase
	}
	return on.Seconds()
}

// startChatter starts one sender per connection at rate frames per second
// during the chatter phases from start to end, the phases phase long;
// rate 0 starts nothing.
func startChatter(ctx context.Context, cs []*client, rate float64, start, end time.Time, phase time.Duration) *chatter {
	ch := &chatter{start: start, end: end, rate: rate,
		phases: chatterPhases{start: start, phase: phase, guard: min(250*time.Millisecond, phase/4)},
		quiet:  newLatency(), during: newLatency()}
	if rate <= 0 {
		return ch
	}
	for i, c := range cs {
		conv := protocol.DMConv(c.user, cs[i^1].user)
		ch.wg.Add(1)
		go func() {
			defer ch.wg.Done()
			n := 0
			newPacer(senderStart(start, rate, i, len(cs)), rate).run(ctx, end, func(due time.Time) {
				if !ch.phases.chatterOn(due) {
					return
				}
				n++
				var err error
				if seq := c.lastSeq.Load(); n%2 == 0 && seq > 0 {
					err = c.read(conv, seq)
					ch.reads.Add(1)
				} else {
					err = c.typing(conv)
					ch.typing.Add(1)
				}
				if err != nil {
					ch.failed.Add(1)
				}
			})
		}()
	}
	return ch
}

// record counts the latency of a message due at due and delivered at at
// in the phase it was due in (a tracker's onDeliver).
func (ch *chatter) record(to int, due, at time.Time) {
	switch ch.phases.of(due) {
	case 0:
		ch.quiet.record(to, at.Sub(due))
	case 1:
		ch.during.record(to, at.Sub(due))
	}
}

// ChatterResult is what a dm run's chatter sent: typing and read frames,
// those the server refused (an error reply) and those that could not be
// written.
type ChatterResult struct {
	PerUser float64 `json:"perUser"` // frames per user per second, in the chatter phases
	PerSec  float64 `json:"perSec"`  // frames per second in all, in the chatter phases
	PhaseMs float64 `json:"phaseMs"` // how long each phase lasted
	GuardMs float64 `json:"guardMs"` // the start of each phase whose messages count in neither
	// Quiet and During are the latencies of the messages due in the quiet
	// phases and in the chatter phases of the run.
	Quiet     LatencySummary `json:"quiet"`
	During    LatencySummary `json:"during"`
	Typing    int64          `json:"typing"`
	Reads     int64          `json:"reads"`
	Refused   int64          `json:"refused"`
	Unwritten int64          `json:"unwritten"`
}

func (r *ChatterResult) note() string {
	return fmt.Sprintf("chatter: %d typing and %d read frames sent beside the messages in the chatter phases (%.0f/s in all, %g/s per user), %d refused, %d not written; phases of %.0f ms by turns, quiet first, the first %.0f ms of each counted in neither",
		r.Typing, r.Reads, r.PerSec, r.PerUser, r.Refused, r.Unwritten, r.PhaseMs, r.GuardMs)
}

// wait waits for the senders to end and returns what they sent; nil
// without chatter. The refused count is of the replies read by then.
func (ch *chatter) wait(cs []*client) *ChatterResult {
	if ch.rate <= 0 {
		return nil
	}
	ch.wg.Wait()
	r := &ChatterResult{PerUser: ch.rate, Typing: ch.typing.Load(), Reads: ch.reads.Load(), Unwritten: ch.failed.Load(),
		PhaseMs: ms(ch.phases.phase), GuardMs: ms(ch.phases.guard)}
	for _, c := range cs {
		r.Refused += c.chatterRefused.Load()
	}
	if secs := ch.phases.chatterSeconds(ch.end); secs > 0 {
		r.PerSec = math.Round(float64(r.Typing+r.Reads) / secs)
	}
	return r
}

// summarize adds the latencies of both phases to r: call it once the
// deliveries are in.
func (ch *chatter) summarize(r *ChatterResult) {
	r.Quiet, r.During = summarize(ch.quiet.merged()), summarize(ch.during.merged())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// chatterNote compares, in a dm run with chatter, the message latency of
// the chatter phases with that of the quiet phases, and names the p99 of
// the run without chatter, without, for what it is worth.
func chatterNote(with, without Result) string {
	c := with.Chatter
	if c == nil || c.Quiet.P99Ms <= 0 {
		return "chatter: no p99 of the quiet phases to compare with"
	}
	return fmt.Sprintf("chatter: message p99 %.1f ms in the chatter phases, %.1f ms in the quiet phases (%d and %d messages): %+.0f%%; p50 %.2f and %.2f ms; the run without chatter (%s), a separate run: p99 %.1f ms",
		c.During.P99Ms, c.Quiet.P99Ms, c.During.Count, c.Quiet.Count, (c.During.P99Ms/c.Quiet.P99Ms-1)*100,
		c.During.P50Ms, c.Quiet.P50Ms, without.Label, without.Latency.P99Ms)
}

// chatterTarget is how much typing and read traffic may raise the message
// p99 of a dm run at most.
const chatterTarget = 0.10

// writeChatter sets, for each dm run with chatter, the message p99 of its
// chatter phases beside that of its quiet phases, on each target, and the
// p99 of the run of the same rate without chatter.
func writeChatter(b *strings.Builder, results []Result) {
	plain := map[string]Result{} // target + " " + rate
	key := func(r Result) string { return fmt.Sprintf("%s %v", r.Target, r.Params["rate"]) }
	for _, r := range results {
		if r.Scenario == "dm" && r.Chatter == nil {
			plain[key(r)] = r
		}
	}
	header := false
	for _, r := range results {
		c := r.Chatter
		if r.Scenario != "dm" || c == nil || c.Quiet.P99Ms <= 0 {
			continue
		}
		if !header {
			fmt.Fprintf(b, "\n## Typing and read traffic\n\nEach run below is the dm run of its rate again, in phases of %s ms by turns: quiet phases, with messages alone, and chatter phases, in which every user also sends typing and read frames at the rate shown (alternately; a read reports the user's last own seq). The messages due in the chatter phases are set beside those due in the quiet phases of the same run, a phase apart, so that what else changes on the machine from one run to the next does not count as chatter; the messages due in the first %s ms of a phase count in neither. The target: message p99 at most %.0f%% higher in the chatter phases. The p99 of the run of the same rate without chatter, a separate run, is given for reference.\n\n", num(c.PhaseMs), num(c.GuardMs), chatterTarget*100)
			b.WriteString("| run | target | frames/s | refused | messages quiet / chatter | p50 ms quiet / chatter | p99 ms quiet | p99 ms chatter | change | within target | p99 ms of the run without |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n")
			header = true
		}
		change := c.During.P99Ms/c.Quiet.P99Ms - 1
		within := "yes"
		if change > chatterTarget {
			within = "no"
		}
		ref := "–"
		if p, ok := plain[key(r)]; ok && p.Latency.P99Ms > 0 {
			ref = num(p.Latency.P99Ms)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %d | %d / %d | %s / %s | %s | %s | %+.0f%% | %s | %s |\n", r.Label, r.Target, num(c.PerSec), c.Refused,
			c.Quiet.Count, c.During.Count, num(c.Quiet.P50Ms), num(c.During.P50Ms), num(c.Quiet.P99Ms), num(c.During.P99Ms), change*100, within, ref)
	}
}
