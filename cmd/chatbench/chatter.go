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
// frame while it has none), to the conversation with its pair.
type chatter struct {
	wg            sync.WaitGroup
	typing, reads atomic.Int64
	failed        atomic.Int64 // frames that could not be written
	start, end    time.Time
	rate          float64 // per user per second; 0: no chatter
}

// startChatter starts one sender per connection at rate frames per second
// from start to end; rate 0 starts nothing.
func startChatter(ctx context.Context, cs []*client, rate float64, start, end time.Time) *chatter {
	ch := &chatter{start: start, end: end, rate: rate}
	if rate <= 0 {
		return ch
	}
	for i, c := range cs {
		conv := protocol.DMConv(c.user, cs[i^1].user)
		ch.wg.Add(1)
		go func() {
			defer ch.wg.Done()
			n := 0
			newPacer(senderStart(start, rate, i, len(cs)), rate).run(ctx, end, func(time.Time) {
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

// ChatterResult is what a dm run's chatter sent: typing and read frames,
// those the server refused (an error reply) and those that could not be
// written.
type ChatterResult struct {
	PerUser   float64 `json:"perUser"` // frames per user per second
	PerSec    float64 `json:"perSec"`  // frames per second in all
	Typing    int64   `json:"typing"`
	Reads     int64   `json:"reads"`
	Refused   int64   `json:"refused"`
	Unwritten int64   `json:"unwritten"`
}

func (r *ChatterResult) note() string {
	return fmt.Sprintf("chatter: %d typing and %d read frames sent beside the messages (%.0f/s in all, %g/s per user), %d refused, %d not written",
		r.Typing, r.Reads, r.PerSec, r.PerUser, r.Refused, r.Unwritten)
}

// wait waits for the senders to end and returns what they sent; nil
// without chatter. The refused count is of the replies read by then.
func (ch *chatter) wait(cs []*client) *ChatterResult {
	if ch.rate <= 0 {
		return nil
	}
	ch.wg.Wait()
	r := &ChatterResult{PerUser: ch.rate, Typing: ch.typing.Load(), Reads: ch.reads.Load(), Unwritten: ch.failed.Load()}
	for _, c := range cs {
		r.Refused += c.chatterRefused.Load()
	}
	if secs := ch.end.Sub(ch.start).Seconds(); secs > 0 {
		r.PerSec = math.Round(float64(r.Typing+r.Reads) / secs)
	}
	return r
}

// chatterNote compares a dm run with chatter to the same run without.
func chatterNote(with, without Result) string {
	a, b := with.Latency.P99Ms, without.Latency.P99Ms
	if b <= 0 {
		return "chatter: no p99 of the run without chatter to compare with"
	}
	return fmt.Sprintf("chatter: message p99 %.1f ms with chatter, %.1f ms without (%s): %+.0f%%",
		a, b, without.Label, (a/b-1)*100)
}

// chatterTarget is how much typing and read traffic may raise the message
// p99 of a dm run at most.
const chatterTarget = 0.10

// writeChatter sets each dm run with chatter beside the same run without:
// the message p99 of both and the change, on each target.
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
		p, ok := plain[key(r)]
		if r.Scenario != "dm" || r.Chatter == nil || !ok || p.Latency.P99Ms <= 0 {
			continue
		}
		if !header {
			fmt.Fprintf(b, "\n## Typing and read traffic\n\nEach run below sends, beside the messages of the dm run of the same rate, typing and read frames from every user (alternately; a read reports the user's last own seq), and is set beside that run without them. The target: message p99 at most %.0f%% higher.\n\n", chatterTarget*100)
			b.WriteString("| run | target | frames/s | refused | p99 ms without | p99 ms with | change | within target |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
			header = true
		}
		change := r.Latency.P99Ms/p.Latency.P99Ms - 1
		within := "yes"
		if change > chatterTarget {
			within = "no"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %d | %s | %s | %+.0f%% | %s |\n", r.Label, r.Target, num(r.Chatter.PerSec), r.Chatter.Refused,
			num(p.Latency.P99Ms), num(r.Latency.P99Ms), change*100, within)
	}
}
