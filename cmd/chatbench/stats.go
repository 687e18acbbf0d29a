package main

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 2 minutes with three
// significant digits.
const (
	histMin    = 1
	histMax    = int64(2 * time.Minute / time.Microsecond)
	histDigits = 3
	histShards = 16
)

// latency is a histogram safe for concurrent recording: recorders are
// spread over shards, merged when read.
type latency struct {
	shards [histShards]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
	}
}

func newLatency() *latency {
	l := &latency{}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(histMin, histMax, histDigits)
	}
	return l
}

// record adds d; hint picks the shard (any number, e.g. a connection index).
func (l *latency) record(hint int, d time.Duration) {
	us := d.Microseconds()
	us = max(histMin, min(us, histMax))
	s := &l.shards[uint(hint)%histShards]
	s.mu.Lock()
	_ = s.h.RecordValue(us)
	s.mu.Unlock()
}

// merged returns a copy of all shards together.
func (l *latency) merged() *hdrhistogram.Histogram {
	out := hdrhistogram.New(histMin, histMax, histDigits)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// LatencySummary is a histogram's figures in milliseconds.
type LatencySummary struct {
	Count  int64   `json:"count"`
	MeanMs float64 `json:"meanMs"`
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	P999Ms float64 `json:"p999Ms"`
	MaxMs  float64 `json:"maxMs"`
}

func summarize(h *hdrhistogram.Histogram) LatencySummary {
	if h.TotalCount() == 0 {
		return LatencySummary{}
	}
	ms := func(us int64) float64 { return round3(float64(us) / 1000) }
	return LatencySummary{
		Count:  h.TotalCount(),
		MeanMs: round3(h.Mean() / 1000),
		P50Ms:  ms(h.ValueAtQuantile(50)),
		P99Ms:  ms(h.ValueAtQuantile(99)),
		P999Ms: ms(h.ValueAtQuantile(99.9)),
		MaxMs:  ms(h.Max()),
	}
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// msgState is what the tracker knows of one sent message.
type msgState struct {
	due       time.Time // when the pacer scheduled the send: latencies start here
	expected  int32     // deliveries expected (1 for a direct message, members for a room)
	delivered int32
	acked     bool
	failed    bool
}

// tracker follows every message of a run from send to reply to each
// delivery. Messages are keyed by a number unique in the run, carried in
// the request id, the clientMsgId and the text. Safe for concurrent use.
type tracker struct {
	runID  string
	shards [64]struct {
		mu sync.Mutex
		m  map[uint64]*msgState
	}
	next atomic.Uint64

	sent, acked, failed, delivered, duplicates, unknown atomic.Int64

	e2e *latency // due -> delivery push
	ack *latency // due -> reply
}

func newTracker(runID string) *tracker {
	t := &tracker{runID: runID, e2e: newLatency(), ack: newLatency()}
	for i := range t.shards {
		t.shards[i].m = map[uint64]*msgState{}
	}
	return t
}

// add registers a message about to be sent and returns its key.
func (t *tracker) add(due time.Time, expected int) uint64 {
	k := t.next.Add(1)
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	s.m[k] = &msgState{due: due, expected: int32(expected)}
	s.mu.Unlock()
	t.sent.Add(1)
	return k
}

// text is the chat text of message k: it names the run and the key, and
// the due time for readers of the raw frames.
func (t *tracker) text(k uint64, due time.Time) string {
	return "bench " + t.runID + " " + strconv.FormatUint(k, 10) + " " + strconv.FormatInt(due.UnixNano(), 10)
}

// parseText returns the key of a text made by text for this run.
func (t *tracker) parseText(text string) (uint64, bool) {
	f := strings.Fields(text)
	if len(f) != 4 || f[0] != "bench" || f[1] != t.runID {
		return 0, false
	}
	k, err := strconv.ParseUint(f[2], 10, 64)
	return k, err == nil
}

// reply records the reply to message k: code 0 acknowledges it.
func (t *tracker) reply(hint int, k uint64, code int, now time.Time) {
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	m := s.m[k]
	var due time.Time
	first := false
	if m != nil && !m.acked && !m.failed {
		first = true
		if code == 0 {
			m.acked = true
		} else {
			m.failed = true
		}
		due = m.due
	}
	s.mu.Unlock()
	if !first {
		return
	}
	if code == 0 {
		t.acked.Add(1)
		t.ack.record(hint, now.Sub(due))
	} else {
		t.failed.Add(1)
	}
}

// sendFailed records that message k could not be written.
func (t *tracker) sendFailed(k uint64) { t.reply(0, k, -1, time.Now()) }

// deliver records a message push of message k to one recipient.
func (t *tracker) deliver(hint int, k uint64, now time.Time) {
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	m := s.m[k]
	var due time.Time
	dup := false
	if m != nil {
		m.delivered++
		dup = m.delivered > m.expected
		due = m.due
	}
	s.mu.Unlock()
	switch {
	case m == nil:
		t.unknown.Add(1)
	case dup:
		t.duplicates.Add(1)
	default:
		t.delivered.Add(1)
		t.e2e.record(hint, now.Sub(due))
	}
}

// outstanding is the number of deliveries still expected for acknowledged
// messages.
func (t *tracker) outstanding() int64 {
	var n int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, m := range s.m {
			if m.acked && m.delivered < m.expected {
				n += int64(m.expected - m.delivered)
			}
		}
		s.mu.Unlock()
	}
	return n
}

// tally counts, at the end: deliveries expected of acknowledged messages,
// messages acknowledged but not delivered to every recipient (lost), and
// messages without any reply (unacked).
func (t *tracker) tally() (expected, lostMsgs, lostDeliveries, unacked int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, m := range s.m {
			switch {
			case m.acked:
				expected += int64(m.expected)
				if m.delivered < m.expected {
					lostMsgs++
					lostDeliveries += int64(m.expected - m.delivered)
				}
			case !m.failed:
				unacked++
			}
		}
		s.mu.Unlock()
	}
	return
}
