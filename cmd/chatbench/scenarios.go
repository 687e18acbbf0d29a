package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/protocol"
)

// Result is the outcome of one scenario on one target.
type Result struct {
	Scenario string         `json:"scenario"` // dm, room, connect, support, failover
	Label    string         `json:"label"`    // e.g. "dm 1000/s"; the same on both targets
	Target   string         `json:"target"`   // cluster or baseline
	Params   map[string]any `json:"params"`
	Seconds  float64        `json:"seconds"` // length of the send (or storm) phase

	Sent           int64 `json:"sent"`
	Acked          int64 `json:"acked"`
	Errors         int64 `json:"errors"`         // error replies, failed writes, failed connects
	Unacked        int64 `json:"unacked"`        // sent, never answered
	Expected       int64 `json:"expected"`       // deliveries owed for acknowledged messages
	Delivered      int64 `json:"delivered"`      // deliveries pushed (first per recipient)
	Duplicates     int64 `json:"duplicates"`     // deliveries beyond the expected count
	Lost           int64 `json:"lost"`           // acknowledged messages some recipient never got
	LostDeliveries int64 `json:"lostDeliveries"` // deliveries owed and never seen

	// DeliveredPerSec is Delivered over DeliverySeconds: the time the
	// deliveries took to arrive, from the first scheduled send to the last
	// delivery received (not the send phase, which a cluster that falls
	// behind outlasts).
	DeliveredPerSec float64        `json:"deliveredPerSec"`
	DeliverySeconds float64        `json:"deliverySeconds,omitempty"`
	Latency         LatencySummary `json:"latency"`    // send due -> message push
	AckLatency      LatencySummary `json:"ackLatency"` // send due -> reply
	// DeliveredBySecond counts the deliveries that arrived in each second
	// from the first scheduled send.
	DeliveredBySecond []int64 `json:"deliveredBySecond,omitempty"`

	// Recovered counts the deliveries not pushed by the end of the drain
	// but found by the recipient's sync then (direct messages on the
	// cluster only); they are in neither Delivered nor Latency.
	Recovered int64 `json:"recovered"`
	// LatePushes are pushes of a message the recipient's sync had already
	// found: late, not duplicates.
	LatePushes int64 `json:"latePushes,omitempty"`

	// CPU is the processes' CPU per delivery over the send phase.
	CPU *CPUResult `json:"cpu,omitempty"`
	// Load averages (1, 5, 15 min) when the scenario run began and ended.
	LoadAvgStart string `json:"loadAvgStart,omitempty"`
	LoadAvgEnd   string `json:"loadAvgEnd,omitempty"`

	History  *HistoryResult  `json:"history,omitempty"`
	Connect  *ConnectResult  `json:"connect,omitempty"`
	Failover *FailoverResult `json:"failover,omitempty"`
	Support  *SupportResult  `json:"support,omitempty"`
	Chatter  *ChatterResult  `json:"chatter,omitempty"`
	Notes    []string        `json:"notes,omitempty"`
}

// HistoryResult is what the nodes' history writers did during a run, from
// their metrics: messages stored in MongoDB per second (all nodes) over
// the send phase, and the backlog (messages not yet stored, cluster-wide)
// at the end of the send phase and at the end of the run.
type HistoryResult struct {
	PerSec           float64 `json:"perSec"`
	BacklogSteadyEnd float64 `json:"backlogSteadyEnd"`
	BacklogEnd       float64 `json:"backlogEnd"`
}

// historyDelta turns two scrapes of every node, d apart, into a
// HistoryResult.
func historyDelta(before, after []nodeMetrics, d time.Duration) *HistoryResult {
	if len(before) != len(after) || d <= 0 {
		return nil
	}
	h := &HistoryResult{}
	var written float64
	for i := range after {
		written += after[i].Written - before[i].Written
		h.BacklogSteadyEnd = max(h.BacklogSteadyEnd, after[i].Backlog)
	}
	h.BacklogEnd = h.BacklogSteadyEnd
	h.PerSec = math.Round(written / d.Seconds())
	return h
}

// maxBacklog is the largest history backlog the scrapes report (the same
// stream, read by every node).
func maxBacklog(ms []nodeMetrics) float64 {
	b := 0.0
	for _, m := range ms {
		b = max(b, m.Backlog)
	}
	return b
}

// common are the settings every scenario shares.
type common struct {
	duration time.Duration // send phase
	drain    time.Duration // wait for outstanding deliveries after it
	runID    string
	progress func(string) // one progress line; nil: none
	logf     func(string, ...any)
}

// connectAll connects clients 0..n-1, client i on place(i), at most 64 at a
// time. On error it closes what it opened.
func connectAll(ctx context.Context, t *target, n int, place func(int) int, trk func() *tracker) ([]*client, error) {
	cs := make([]*client, n)
	sem := make(chan struct{}, 64)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			c, err := t.connect(cctx, i, place(i), trk)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			cs[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(cs)
		return nil, fmt.Errorf("%s: %w", t.name, firstErr)
	}
	return cs, nil
}

// isCross reports whether pair p of n is one whose two users sit on
// different nodes, for a share of cross-node pairs; the cross pairs are
// spread evenly over the pairs.
func isCross(p int, share float64) bool {
	return math.Floor(float64(p+1)*share) > math.Floor(float64(p)*share)
}

// dmPlace is the node place of user i in the dm scenario: pair p = i/2 has
// its first user on p mod k and its second on the next node when the pair
// is cross-node.
func dmPlace(i, k int, share float64) int {
	if k <= 1 {
		return 0
	}
	p := i / 2
	if i%2 == 1 && isCross(p, share) {
		return (p + 1) % k
	}
	return p % k
}

type dmParams struct {
	pairs int
	rate  float64 // messages per second, all senders together
	cross float64 // share of pairs on different nodes, 0..1
	// chatter is typing and read frames per user per second sent beside
	// the messages, alternately (a read reports the user's last own seq);
	// 0: none.
	chatter float64
	// phase is how long each quiet and each chatter phase of a run with
	// chatter lasts (chatterPhases).
	phase time.Duration
}

// conns are a scenario's connections, by user index; one that broke is
// replaced through the gateway when it is needed again (for the sync at
// the end). Safe for concurrent use.
type conns struct {
	t   *target
	trk func() *tracker

	mu sync.Mutex
	cs []*client // guarded by mu
}

// get returns an open connection of user i, logging the user in again on
// a live node if the one it had broke.
func (cn *conns) get(ctx context.Context, i int) (*client, error) {
	cn.mu.Lock()
	c := cn.cs[i]
	cn.mu.Unlock()
	if c != nil && !c.isClosed() {
		return c, nil
	}
	nc, err := reconnect(ctx, cn.t, i, "", cn.trk)
	if err != nil {
		return nil, err
	}
	cn.mu.Lock()
	cn.cs[i] = nc
	cn.mu.Unlock()
	return nc, nil
}

func (cn *conns) closeAll() {
	cn.mu.Lock()
	cs := cn.cs
	cn.mu.Unlock()
	closeAll(cs)
}

// runDM runs the dm scenario: 2*pairs users, both users of a pair writing
// to each other, open loop.
func runDM(ctx context.Context, t *target, cm common, p dmParams) (Result, error) {
	load0 := loadAvg()
	trk := newTracker(cm.runID)
	var cur atomic.Pointer[tracker]
	get := func() *tracker { return cur.Load() }
	n := 2 * p.pairs
	k := t.numNodes()
	cs, err := connectAll(ctx, t, n, func(i int) int { return dmPlace(i, k, p.cross) }, get)
	if err != nil {
		return Result{}, err
	}
	cn := &conns{t: t, trk: get, cs: cs}
	defer cn.closeAll()
	cur.Store(trk)
	label := fmt.Sprintf("dm %g/s", p.rate)
	if p.chatter > 0 {
		label += fmt.Sprintf(" + chatter %g/s/user", p.chatter)
	}
	perSender := p.rate / float64(n)
	send := func(i int) func(time.Time) {
		c, peer := cs[i], cs[i^1].user
		return func(due time.Time) {
			key := trk.add(due, 1, i)
			if err := c.chat(trk, key, peer, "", due); err != nil {
				trk.sendFailed(key)
			}
		}
	}
	m := newMeter(t)
	m.begin(ctx)
	start := time.Now().Add(50 * time.Millisecond)
	ch := startChatter(ctx, cs, p.chatter, start, start.Add(cm.duration), p.phase)
	if p.chatter > 0 {
		trk.onDeliver = func(to, _ int, due, at time.Time) { ch.record(to, due, at) }
	}
	ph := runPhaseFrom(ctx, cm, label+" "+t.name, trk, n, perSender, send, start, m)
	chr := ch.wait(cs)
	var notes []string
	if t.wsURL == "" {
		// What was not pushed by now: do the recipients get it by sync?
		sr := recoverBySync(ctx, trk, func(from int) int { return from ^ 1 }, cn.get)
		notes = append(notes, sr.notes()...)
	}
	r := finish(trk, ph)
	r.finishMeter(ctx, ph.meter)
	r.Notes = append(r.Notes, notes...)
	r.Scenario, r.Label, r.Target = "dm", label, t.name
	r.Params = map[string]any{"pairs": p.pairs, "rate": p.rate, "crossShare": p.cross, "nodes": k}
	if chr != nil {
		ch.summarize(chr)
		r.Params["chatterPerUser"] = p.chatter
		r.Params["chatterPhase"] = p.phase.String()
		r.Chatter = chr
		r.Notes = append(r.Notes, chr.note())
	}
	r.LoadAvgStart, r.LoadAvgEnd = load0, loadAvg()
	return r, nil
}

type roomParams struct {
	members    int
	publishers int
	rates      []float64 // messages per second, all publishers together; one run each
}

// runRoom runs the room scenario: one fresh room of members users spread
// over the nodes, publishers of them posting open loop, at each rate in
// turn; every member, the sender included, should get every message.
func runRoom(ctx context.Context, t *target, cm common, p roomParams) ([]Result, error) {
	var cur atomic.Pointer[tracker]
	get := func() *tracker { return cur.Load() }
	k := t.numNodes()
	began := time.Now()
	cs, err := connectAll(ctx, t, p.members, func(i int) int { return i % max(k, 1) }, get)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	room := "bench-" + strings.ReplaceAll(newTracker(cm.runID).id, ".", "-")
	if err := forAll(ctx, cs, 16, func(ctx context.Context, c *client) error {
		return retryBusy(ctx, time.Minute, func() error { return c.do(ctx, protocol.ActionJoin, protocol.RoomData{Room: room}, nil) })
	}); err != nil {
		return nil, fmt.Errorf("%s: joining room %s: %w", t.name, room, err)
	}
	cm.logf("%s: %d members connected and joined room %s in %.1fs", t.name, p.members, room, time.Since(began).Seconds())
	// Members who were connected a moment ago (an earlier scenario) may
	// still be settling at the leader; give it a moment before posting.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	defer func() { // leave, so later logins of these users cause no presence storm
		lctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = forAll(lctx, cs, 16, func(ctx context.Context, c *client) error {
			return c.do(ctx, protocol.ActionLeave, protocol.RoomData{Room: room}, nil)
		})
	}()
	pubs := max(1, min(p.publishers, p.members))
	var out []Result
	for _, rate := range p.rates {
		load0 := loadAvg()
		trk := newTracker(cm.runID)
		cur.Store(trk)
		label := fmt.Sprintf("room %d members, %g msg/s", p.members, rate)
		send := func(i int) func(time.Time) {
			from := (i * p.members) / pubs // publishers spread over the members, so over the nodes
			c := cs[from]
			return func(due time.Time) {
				key := trk.add(due, p.members, from)
				if err := c.chat(trk, key, "", room, due); err != nil {
					trk.sendFailed(key)
				}
			}
		}
		ph := runPhase(ctx, cm, label+" "+t.name, trk, pubs, rate/float64(pubs), send, newMeter(t))
		r := finish(trk, ph)
		r.finishMeter(ctx, ph.meter)
		r.Scenario, r.Label, r.Target = "room", label, t.name
		r.Params = map[string]any{"members": p.members, "publishers": pubs, "rate": rate, "nodes": k}
		r.LoadAvgStart, r.LoadAvgEnd = load0, loadAvg()
		out = append(out, r)
		if err := ctx.Err(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// retryable reports whether a request that failed with err is worth
// sending again, as a client would: the service was busy (503), the
// client was told to slow down (429), or the connection failed or gave no
// answer in time. Any other reply is the service's answer.
func retryable(err error) bool {
	var re *replyError
	if errors.As(err, &re) {
		return re.Code == protocol.CodeUnavailable || re.Code == protocol.CodeRateLimited
	}
	return errors.Is(err, errConnClosed) || errors.Is(err, context.DeadlineExceeded)
}

// Backoff between retries of a refused request.
const (
	retryMin = 200 * time.Millisecond
	retryMax = 2 * time.Second
)

// retryBusy runs f again while it fails with a retryable error, backing off
// from retryMin to retryMax, for up to patience. It returns f's last
// error.
func retryBusy(ctx context.Context, patience time.Duration, f func() error) error {
	deadline := time.Now().Add(patience)
	wait := retryMin
	for {
		err := f()
		if err == nil || !retryable(err) || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// forAll runs f for every client, conc at a time, and returns the first
// error.
func forAll(ctx context.Context, cs []*client, conc int, f func(context.Context, *client) error) error {
	sem := make(chan struct{}, conc)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			if err := f(cctx, c); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", c.user, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// phaseOut is what a send phase measured.
type phaseOut struct {
	start     time.Time // the first send was due
	sendSecs  float64   // length of the send phase
	steadyDel int64     // deliveries by the end of the send phase
	meter     *meter    // nil: nothing measured beside the tracker
}

// runPhase runs a send phase starting now (see runPhaseFrom), with m (nil:
// none) measuring its steady part.
func runPhase(ctx context.Context, cm common, label string, trk *tracker, senders int, perSender float64, send func(int) func(time.Time), m *meter) phaseOut {
	if m != nil {
		m.begin(ctx)
	}
	return runPhaseFrom(ctx, cm, label, trk, senders, perSender, send, time.Now().Add(50*time.Millisecond), m)
}

// runPhaseFrom runs senders open-loop senders, sender i calling send(i)'s
// function at perSender per second, from start for cm.duration, then
// drains, printing progress every second. m, if not nil, has begun; its
// window ends with the send phase.
func runPhaseFrom(ctx context.Context, cm common, label string, trk *tracker, senders int, perSender float64, send func(int) func(time.Time), start time.Time, m *meter) phaseOut {
	trk.setStart(start)
	end := start.Add(cm.duration)
	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		progressLoop(pctx, label, start, trk, cm.progress)
	}()
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			newPacer(senderStart(start, perSender, i, senders), perSender).run(ctx, end, send(i))
		}()
	}
	wg.Wait()
	out := phaseOut{start: start, sendSecs: time.Since(start).Seconds(), meter: m}
	out.steadyDel = trk.delivered()
	if m != nil {
		m.end(ctx, out.steadyDel)
	}
	// Drain: wait until every acknowledged message reached every recipient
	// and every request was answered, or, once every request was answered,
	// nothing more arrived for drainQuiet, or the drain time ran out.
	deadline := time.Now().Add(cm.drain)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		answered := trk.acked.Load() + trk.failed.Load()
		if trk.sent.Load() == answered {
			c := trk.counts()
			if c.owed == 0 {
				break
			}
			if seen := answered + c.delivered; seen != last {
				last, lastChange = seen, time.Now()
			} else if time.Since(lastChange) >= drainQuiet {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopProgress()
	pwg.Wait()
	return out
}

// drainQuiet ends a drain early: once every request has its reply, a
// second without any new delivery means the rest is not coming (the
// recipients' sync finds it, or it is lost).
const drainQuiet = time.Second

// progressLoop prints one line a second until ctx ends.
func progressLoop(ctx context.Context, label string, start time.Time, trk *tracker, out func(string)) {
	if out == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastSent, lastDel int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s, c := trk.sent.Load(), trk.counts()
			out(fmt.Sprintf("[%s] %4.0fs sent %d (%d/s) acked %d delivered %d (%d/s) owed %d errors %d in flight %d",
				label, now.Sub(start).Seconds(), s, s-lastSent, trk.acked.Load(), c.delivered, c.delivered-lastDel, c.owed,
				trk.failed.Load(), s-trk.acked.Load()-trk.failed.Load()))
			lastSent, lastDel = s, c.delivered
		}
	}
}

// finish turns the tracker's counts and the phase into a Result.
func finish(trk *tracker, ph phaseOut) Result {
	expected, lost, lostDel, unacked := trk.tally()
	c := trk.counts()
	r := Result{
		Seconds:           round3(ph.sendSecs),
		Sent:              trk.sent.Load(),
		Acked:             trk.acked.Load(),
		Errors:            trk.failed.Load(),
		Unacked:           unacked,
		Expected:          expected,
		Delivered:         c.delivered,
		Recovered:         trk.recovered.Load(),
		Duplicates:        c.duplicates,
		LatePushes:        c.late,
		Lost:              lost,
		LostDeliveries:    lostDel,
		Latency:           summarize(trk.e2e.merged()),
		AckLatency:        summarize(trk.ack.merged()),
		DeliveredBySecond: trk.timeline(),
	}
	if c.lastAt > 0 {
		span := time.Duration(c.lastAt - ph.start.UnixNano())
		r.DeliverySeconds = round3(span.Seconds())
		if span > 0 {
			r.DeliveredPerSec = math.Round(float64(r.Delivered) / span.Seconds())
		}
	}
	return r
}

// finishMeter adds what m measured (nil: nothing) to r, with a last scrape
// of the nodes for the history backlog at the end of the run.
func (r *Result) finishMeter(ctx context.Context, m *meter) {
	if m == nil {
		return
	}
	r.CPU = m.cpu
	r.History = m.hist
	if r.History != nil {
		if after, err := m.t.scrape(ctx); err == nil {
			r.History.BacklogEnd = maxBacklog(after)
		}
	}
	r.Notes = append(r.Notes, m.notes...)
}

// meter measures the steady part of a run, the send phase: the CPU each
// process of the target used and chatbench's own, and the history the
// nodes stored. Not safe for concurrent use.
type meter struct {
	t     *target
	procs []serverProc
	a     cpuSnapshot
	began bool

	hBefore []nodeMetrics
	hAt     time.Time

	cpu   *CPUResult
	hist  *HistoryResult
	notes []string
}

func newMeter(t *target) *meter { return &meter{t: t} }

// begin starts the window: the nodes' metrics first (an HTTP request to
// each), then the CPU times, so the scrape is not inside the window.
func (m *meter) begin(ctx context.Context) {
	if m.t.wsURL == "" && len(m.t.admin) > 0 {
		if ms, err := m.t.scrape(ctx); err == nil {
			m.hBefore, m.hAt = ms, time.Now()
		} else {
			m.notes = append(m.notes, "history not measured: "+err.Error())
		}
	}
	procs, err := m.t.serverProcs()
	switch {
	case err != nil:
		m.notes = append(m.notes, "server CPU not measured: "+err.Error())
	case len(procs) == 0 && m.t.wsURL == "":
		m.notes = append(m.notes, "server CPU not measured: no --pid-dir")
	}
	m.procs = procs
	m.a = takeCPU(procs)
	m.began = true
}

// end closes the window, delivered deliveries having arrived by now.
func (m *meter) end(ctx context.Context, delivered int64) {
	if !m.began {
		return
	}
	b := takeCPU(m.procs)
	m.cpu = cpuBetween(m.a, b, delivered)
	if m.hBefore != nil {
		if ms, err := m.t.scrape(ctx); err == nil {
			m.hist = historyDelta(m.hBefore, ms, time.Since(m.hAt))
		}
	}
}
