package main

import (
	"math"
	"strconv"
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
	P90Ms  float64 `json:"p90Ms,omitempty"`
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
		P90Ms:  ms(h.ValueAtQuantile(90)),
		P99Ms:  ms(h.ValueAtQuantile(99)),
		P999Ms: ms(h.ValueAtQuantile(99.9)),
		MaxMs:  ms(h.Max()),
	}
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// The tracker keeps its messages in a dense table indexed by key (keys are
// handed out 1, 2, 3, ...), in chunks allocated as the run grows, so
// recording a message allocates nothing. Message k is guarded by the lock
// of stripe k mod trackerStripes, which also holds the stripe's delivery
// counts: a delivery takes one lock and touches no shared counter.
const (
	chunkBits      = 14
	chunkSize      = 1 << chunkBits
	maxChunks      = 1 << 12 // 67 million messages in one run
	trackerStripes = 64
	// maxTimeline bounds the per-second delivery counts (an hour).
	maxTimeline = 3600
)

// msgState is what the tracker knows of one sent message. Guarded by its
// stripe's lock.
type msgState struct {
	due       int64  // unix ns: when the pacer scheduled the send; latencies start here
	seq       int64  // from the reply: the message's seq in conv
	conv      string // from the reply
	expected  int32  // deliveries expected (1 for a direct message, members for a room)
	delivered int32  // live deliveries and recoveries by sync, up to expected
	recovered int32  // of delivered, those found by sync rather than pushed
	from      int32  // index of the sending client
	used      bool   // added by add
	acked     bool
	failed    bool
}

// stripe is the lock of every trackerStripes-th message and the delivery
// counts of those messages.
type stripe struct {
	mu         sync.Mutex
	delivered  int64   // first deliveries by push; guarded by mu
	duplicates int64   // pushes beyond the expected count; guarded by mu
	late       int64   // pushes of a message already found by sync; guarded by mu
	owed       int64   // deliveries still owed to acknowledged messages; guarded by mu
	lastAt     int64   // unix ns of the latest first delivery; guarded by mu
	bySec      []int64 // first deliveries per second from the tracker's start; guarded by mu
	_          [64]byte
}

// tracker follows every message of one scenario run from send to reply to
// each delivery. Messages are keyed by a number unique in the run, carried
// in the request id and the text; the clientMsgId adds the tracker's id, so
// that it is unique across runs too (a node answers a clientMsgId it has
// seen with the first result and stores nothing). Safe for concurrent use.
type tracker struct {
	id     string       // unique per scenario run: "<invocation>.<start>"
	start  atomic.Int64 // unix ns of the first scheduled send (setStart); 0: not set
	chunks [maxChunks]atomic.Pointer[[chunkSize]msgState]
	growMu sync.Mutex // serialises allocating chunks
	strip  [trackerStripes]stripe
	next   atomic.Uint64

	sent, acked, failed, unknown, recovered atomic.Int64

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
	return &tracker{id: id, e2e: newLatency(), ack: newLatency()}
}

// setStart records when the first send is due: deliveries are counted per
// second from then. Call it before the first send.
func (t *tracker) setStart(at time.Time) { t.start.Store(at.UnixNano()) }

// slot returns message k's state, or nil if k was never handed out.
func (t *tracker) slot(k uint64) *msgState {
	ci := k >> chunkBits
	if k == 0 || ci >= maxChunks {
		return nil
	}
	c := t.chunks[ci].Load()
	if c == nil {
		return nil
	}
	return &c[k&(chunkSize-1)]
}

// grow returns the chunk of key k, allocating it if need be.
func (t *tracker) grow(k uint64) *[chunkSize]msgState {
	ci := k >> chunkBits
	if c := t.chunks[ci].Load(); c != nil {
		return c
	}
	t.growMu.Lock()
	defer t.growMu.Unlock()
	c := t.chunks[ci].Load()
	if c == nil {
		c = new([chunkSize]msgState)
		t.chunks[ci].Store(c)
	}
	return c
}

func (t *tracker) stripeOf(k uint64) *stripe { return &t.strip[k%trackerStripes] }

// add registers a message client from is about to send and returns its
// key.
func (t *tracker) add(due time.Time, expected, from int) uint64 {
	k := t.next.Add(1)
	if k>>chunkBits >= maxChunks {
		panic("chatbench: more messages in one run than the tracker holds")
	}
	m := &t.grow(k)[k&(chunkSize-1)]
	st := t.stripeOf(k)
	st.mu.Lock()
	*m = msgState{due: due.UnixNano(), expected: int32(expected), from: int32(from), used: true}
	st.mu.Unlock()
	t.sent.Add(1)
	return k
}

// text is the chat text of message k: it names the run and the key, and
// the due time for readers of the raw frames.
func (t *tracker) text(k uint64, due time.Time) string {
	return string(t.appendText(nil, k, due.UnixNano()))
}

// appendText appends text(k, due) (due in unix ns).
func (t *tracker) appendText(dst []byte, k uint64, due int64) []byte {
	dst = append(dst, "bench "...)
	dst = append(dst, t.id...)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, k, 10)
	dst = append(dst, ' ')
	return strconv.AppendInt(dst, due, 10)
}

// clientMsgID is the idempotency key of message k.
func (t *tracker) clientMsgID(k uint64) string { return string(t.appendClientMsgID(nil, k)) }

func (t *tracker) appendClientMsgID(dst []byte, k uint64) []byte {
	dst = append(dst, t.id...)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, k, 10)
}

// parseText returns the key of a text made by text for this run.
func (t *tracker) parseText(text string) (uint64, bool) { return parseBenchText(t.id, text) }

// parseTextBytes is parseText of a text in a frame's buffer; it does not
// allocate.
func (t *tracker) parseTextBytes(text []byte) (uint64, bool) { return parseBenchText(t.id, text) }

// parseBenchText parses "bench <id> <key> <due>" for the run id.
func parseBenchText[T string | []byte](id string, s T) (uint64, bool) {
	const prefix = "bench "
	if len(s) < len(prefix)+len(id)+4 || string(s[:len(prefix)]) != prefix {
		return 0, false
	}
	s = s[len(prefix):]
	if string(s[:len(id)]) != id || s[len(id)] != ' ' {
		return 0, false
	}
	s = s[len(id)+1:]
	sp := -1
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			sp = i
			break
		}
	}
	if sp <= 0 || sp == len(s)-1 {
		return 0, false
	}
	k, ok := parseDigits(s[:sp])
	if !ok {
		return 0, false
	}
	if _, ok := parseDigits(s[sp+1:]); !ok {
		return 0, false
	}
	return k, true
}

// parseDigits reads a decimal number of 1 to 19 digits.
func parseDigits[T string | []byte](v T) (uint64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// settled reports whether message k has had its reply (or failed).
func (t *tracker) settled(k uint64) bool {
	m := t.slot(k)
	if m == nil {
		return true
	}
	st := t.stripeOf(k)
	st.mu.Lock()
	defer st.mu.Unlock()
	return !m.used || m.acked || m.failed
}

// recover records that recipient by found message k by sync. It counts
// only while deliveries are still owed (sync also returns what was
// pushed), and not for a message by sent itself (a direct conversation
// holds both ways), and reports whether it counted.
func (t *tracker) recover(k uint64, by int) bool {
	m := t.slot(k)
	if m == nil {
		return false
	}
	st := t.stripeOf(k)
	st.mu.Lock()
	ok := m.used && m.delivered < m.expected && int(m.from) != by
	if ok {
		m.delivered++
		m.recovered++
		if m.acked {
			st.owed--
		}
	}
	st.mu.Unlock()
	if ok {
		t.recovered.Add(1)
	}
	return ok
}

// reply records the reply to message k: code 0 acknowledges it, as
// message seq of conv.
func (t *tracker) reply(hint int, k uint64, code int, now time.Time, conv string, seq int64) {
	m := t.slot(k)
	if m == nil {
		return
	}
	st := t.stripeOf(k)
	st.mu.Lock()
	if !m.used || m.acked || m.failed {
		st.mu.Unlock()
		return
	}
	if code == 0 {
		m.acked, m.conv, m.seq = true, conv, seq
		st.owed += int64(m.expected - m.delivered)
	} else {
		m.failed = true
	}
	due := m.due
	st.mu.Unlock()
	if code == 0 {
		t.acked.Add(1)
		t.ack.record(hint, time.Duration(now.UnixNano()-due))
	} else {
		t.failed.Add(1)
	}
}

// sendFailed records that message k could not be written.
func (t *tracker) sendFailed(k uint64) { t.reply(0, k, -1, time.Now(), "", 0) }

// deliver records a message push of message k to one recipient.
func (t *tracker) deliver(hint int, k uint64, now time.Time) {
	m := t.slot(k)
	if m == nil {
		t.unknown.Add(1)
		return
	}
	st := t.stripeOf(k)
	st.mu.Lock()
	switch {
	case !m.used:
		st.mu.Unlock()
		t.unknown.Add(1)
		return
	case m.delivered < m.expected:
		m.delivered++
		st.delivered++
		if m.acked {
			st.owed--
		}
		ns := now.UnixNano()
		st.lastAt = max(st.lastAt, ns)
		if start := t.start.Load(); start > 0 && ns >= start {
			sec := min(int((ns-start)/int64(time.Second)), maxTimeline-1)
			for len(st.bySec) <= sec {
				st.bySec = append(st.bySec, 0)
			}
			st.bySec[sec]++
		}
		due, from := m.due, int(m.from)
		st.mu.Unlock()
		t.e2e.record(hint, time.Duration(ns-due))
		if t.onDeliver != nil {
			t.onDeliver(hint, from, time.Unix(0, due), now)
		}
		return
	case m.recovered > 0:
		// Pushed after the recipient's sync had found it: late, not twice.
		st.late++
	default:
		st.duplicates++
	}
	st.mu.Unlock()
}

// deliveryCounts sums the stripes.
type deliveryCounts struct {
	delivered, duplicates, late, owed int64
	lastAt                            int64 // unix ns of the latest first delivery; 0: none
}

// counts returns the delivery counts so far.
func (t *tracker) counts() deliveryCounts {
	var c deliveryCounts
	for i := range t.strip {
		st := &t.strip[i]
		st.mu.Lock()
		c.delivered += st.delivered
		c.duplicates += st.duplicates
		c.late += st.late
		c.owed += st.owed
		c.lastAt = max(c.lastAt, st.lastAt)
		st.mu.Unlock()
	}
	return c
}

// delivered is the number of first deliveries by push so far.
func (t *tracker) delivered() int64 { return t.counts().delivered }

// outstanding is the number of deliveries still expected for acknowledged
// messages.
func (t *tracker) outstanding() int64 { return t.counts().owed }

// timeline returns the first deliveries in each second from the start.
func (t *tracker) timeline() []int64 {
	var out []int64
	for i := range t.strip {
		st := &t.strip[i]
		st.mu.Lock()
		for len(out) < len(st.bySec) {
			out = append(out, 0)
		}
		for s, n := range st.bySec {
			out[s] += n
		}
		st.mu.Unlock()
	}
	return out
}

// each calls f with every message added, under its stripe's lock, stripe
// by stripe.
func (t *tracker) each(f func(k uint64, m *msgState)) {
	n := t.next.Load()
	for si := range t.strip {
		st := &t.strip[si]
		st.mu.Lock()
		for k := uint64(si); k <= n; k += trackerStripes {
			if m := t.slot(k); m != nil && m.used {
				f(k, m)
			}
		}
		st.mu.Unlock()
	}
}

// tally counts, at the end: deliveries expected of acknowledged messages,
// messages acknowledged but not delivered to every recipient (lost), and
// messages without any reply (unacked).
func (t *tracker) tally() (expected, lostMsgs, lostDeliveries, unacked int64) {
	t.each(func(_ uint64, m *msgState) {
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
	})
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
	t.each(func(k uint64, m *msgState) {
		if m.acked && m.delivered < m.expected {
			out = append(out, missingMsg{key: k, from: int(m.from), conv: m.conv, seq: m.seq})
		}
	})
	return out
}
