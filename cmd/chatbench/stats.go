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
	delivered int32     // live deliveries and recoveries by sync, up to expected
	recovered int32     // of delivered, those found by sync rather than pushed
	from      int32     // index of the sending client
	seq       int64     // from the reply: the message's seq in conv
	conv      string
	acked     bool
	failed    bool
}

// tracker follows every message of one scenario run from send to reply to
// each delivery. Messages are keyed by a number unique in the run, carried
// in the request id and the text; the clientMsgId adds the tracker's id, so
// that it is unique across runs too (a node answers a clientMsgId it has
// seen with the first result and stores nothing). Safe for concurrent use.
type tracker struct {
	id     string // unique per scenario run: "<invocation>.<start>"
	shards [64]struct {
		mu sync.Mutex
		m  map[uint64]*msgState
	}
	next atomic.Uint64

	sent, acked, failed, delivered, duplicates, unknown, recovered atomic.Int64

	e2e *latency // due -> delivery push
	ack *latency // due -> reply

	// onDeliver, when set before the first send, sees every first live
	// delivery: the recipient's and sender's client index, the message's
	// due time and when it arrived.
	onDeliver func(to, from int, due, at time.Time)
}

// newTracker returns a tracker for one scenario run of the invocation
// runID; its id adds the start time, so no two runs share one.
func newTracker(runID string) *tracker {
	id := runID + "." + strconv.FormatInt(time.Now().UnixNano(), 36)
	t := &tracker{id: id, e2e: newLatency(), ack: newLatency()}
	for i := range t.shards {
		t.shards[i].m = map[uint64]*msgState{}
	}
	return t
}

// add registers a message client from is about to send and returns its
// key.
func (t *tracker) add(due time.Time, expected, from int) uint64 {
	k := t.next.Add(1)
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	s.m[k] = &msgState{due: due, expected: int32(expected), from: int32(from)}
	s.mu.Unlock()
	t.sent.Add(1)
	return k
}

// text is the chat text of message k: it names the run and the key, and
// the due time for readers of the raw frames.
func (t *tracker) text(k uint64, due time.Time) string {
	return "bench " + t.id + " " + strconv.FormatUint(k, 10) + " " + strconv.FormatInt(due.UnixNano(), 10)
}

// clientMsgID is the idempotency key of message k.
func (t *tracker) clientMsgID(k uint64) string {
	return t.id + "-" + strconv.FormatUint(k, 10)
}

// parseText returns the key of a text made by text for this run.
func (t *tracker) parseText(text string) (uint64, bool) {
	f := strings.Fields(text)
	if len(f) != 4 || f[0] != "bench" || f[1] != t.id {
		return 0, false
	}
	k, err := strconv.ParseUint(f[2], 10, 64)
	return k, err == nil
}

// settled reports whether message k has had its reply (or failed).
func (t *tracker) settled(k uint64) bool {
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m[k]
	return m == nil || m.acked || m.failed
}

// recover records that a recipient found message k by sync. It counts
// only while deliveries are still owed (sync also returns what was
// pushed), and reports whether it counted.
func (t *tracker) recover(k uint64) bool {
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	m := s.m[k]
	ok := m != nil && m.delivered < m.expected
	if ok {
		m.delivered++
		m.recovered++
	}
	s.mu.Unlock()
	if ok {
		t.recovered.Add(1)
	}
	return ok
}

// reply records the reply to message k: code 0 acknowledges it, as
// message seq of conv.
func (t *tracker) reply(hint int, k uint64, code int, now time.Time, conv string, seq int64) {
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	m := s.m[k]
	var due time.Time
	first := false
	if m != nil && !m.acked && !m.failed {
		first = true
		if code == 0 {
			m.acked, m.conv, m.seq = true, conv, seq
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
func (t *tracker) sendFailed(k uint64) { t.reply(0, k, -1, time.Now(), "", 0) }

// deliver records a message push of message k to one recipient.
func (t *tracker) deliver(hint int, k uint64, now time.Time) {
	s := &t.shards[k%uint64(len(t.shards))]
	s.mu.Lock()
	m := s.m[k]
	var due time.Time
	dup := false
	from := 0
	if m != nil {
		dup = m.delivered >= m.expected
		if !dup {
			m.delivered++
		}
		due, from = m.due, int(m.from)
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
		if t.onDeliver != nil {
			t.onDeliver(hint, from, due, now)
		}
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

// missingMsg is an acknowledged message some recipient has not had yet.
type missingMsg struct {
	key  uint64
	from int // sending client
	conv string
	seq  int64
}

// missing lists the acknowledged messages still owed a delivery.
func (t *tracker) missing() []missingMsg {
	var out []missingMsg
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, m := range s.m {
			if m.acked && m.delivered < m.expected {
				out = append(out, missingMsg{key: k, from: int(m.from), conv: m.conv, seq: m.seq})
			}
		}
		s.mu.Unlock()
	}
	return out
}
