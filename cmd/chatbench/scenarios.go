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

// Result is the outcome of one scenario on one target.
type Result struct {
	Scenario string         `json:"scenario"` // dm, room, connect
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

	DeliveredPerSec float64        `json:"deliveredPerSec"`
	Latency         LatencySummary `json:"latency"`    // send due -> message push
	AckLatency      LatencySummary `json:"ackLatency"` // send due -> reply

	// Recovered counts the deliveries not pushed by the end of the drain
	// but found by the recipient's sync then (direct messages on the
	// cluster only); they are in neither Delivered nor Latency.
	Recovered int64 `json:"recovered"`

	History  *HistoryResult  `json:"history,omitempty"`
	Connect  *ConnectResult  `json:"connect,omitempty"`
	Failover *FailoverResult `json:"failover,omitempty"`
	Notes    []string        `json:"notes,omitempty"`
}

// HistoryResult is what the nodes' history writers did during a run, from
// their metrics: messages stored in MongoDB per second (all nodes) and the
// backlog (messages not yet stored) at the end.
type HistoryResult struct {
	PerSec     float64 `json:"perSec"`
	BacklogEnd float64 `json:"backlogEnd"`
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
		h.BacklogEnd = max(h.BacklogEnd, after[i].Backlog)
	}
	h.PerSec = math.Round(written / d.Seconds())
	return h
}

// ConnectResult is the connect scenario's own figures.
type ConnectResult struct {
	Conns        int64          `json:"conns"`  // logged in
	Failed       int64          `json:"failed"` // connect or login failed
	PerSec       float64        `json:"perSec"` // logins completed per second of the storm
	Latency      LatencySummary `json:"latency"`
	Nodes        []NodeMemory   `json:"nodes,omitempty"`
	BytesPerConn float64        `json:"bytesPerConn,omitempty"` // all nodes: RSS growth / connections added
}

// NodeMemory is one process's resident memory before and after the
// connections were opened.
type NodeMemory struct {
	Admin        string  `json:"admin"`
	RSSBefore    float64 `json:"rssBefore"`
	RSSAfter     float64 `json:"rssAfter"`
	ConnsBefore  float64 `json:"connsBefore"`
	ConnsAfter   float64 `json:"connsAfter"`
	BytesPerConn float64 `json:"bytesPerConn"`
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
}

// runDM runs the dm scenario: 2*pairs users, both users of a pair writing
// to each other, open loop.
func runDM(ctx context.Context, t *target, cm common, p dmParams) (Result, error) {
	trk := newTracker(cm.runID)
	var cur atomic.Pointer[tracker]
	get := func() *tracker { return cur.Load() }
	n := 2 * p.pairs
	k := t.numNodes()
	cs, err := connectAll(ctx, t, n, func(i int) int { return dmPlace(i, k, p.cross) }, get)
	if err != nil {
		return Result{}, err
	}
	defer closeAll(cs)
	var before []nodeMetrics
	var scraped time.Time
	if t.wsURL == "" && len(t.admin) > 0 {
		if before, err = t.scrape(ctx); err != nil {
			return Result{}, err
		}
		scraped = time.Now()
	}
	cur.Store(trk)
	label := fmt.Sprintf("dm %g/s", p.rate)
	perSender := p.rate / float64(n)
	send := func(i int) func(time.Time) {
		c, peer := cs[i], cs[i^1]
		return func(due time.Time) {
			key := trk.add(due, 1, i)
			if err := c.chat(key, trk.clientMsgID(key), peer.user, "", trk.text(key, due)); err != nil {
				trk.sendFailed(key)
			}
		}
	}
	secs := runPhase(ctx, cm, label+" "+t.name, trk, n, perSender, send)
	var note string
	if t.wsURL == "" {
		// What was not pushed by now: do the recipients get it by sync?
		if _, err := recoverBySync(ctx, trk, func(from int) int { return from ^ 1 }, func(i int) *client { return cs[i] }); err != nil {
			note = "sync: " + err.Error()
		}
	}
	r := finish(ctx, cm, trk, secs)
	if before != nil {
		if after, err := t.scrape(ctx); err == nil {
			r.History = historyDelta(before, after, time.Since(scraped))
		}
	}
	if note != "" {
		r.Notes = append(r.Notes, note)
	}
	r.Scenario, r.Label, r.Target = "dm", label, t.name
	r.Params = map[string]any{"pairs": p.pairs, "rate": p.rate, "crossShare": p.cross, "nodes": k}
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
		return retry503(ctx, func() error { return c.do(ctx, protocol.ActionJoin, protocol.RoomData{Room: room}, nil) })
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
		trk := newTracker(cm.runID)
		cur.Store(trk)
		label := fmt.Sprintf("room %d members, %g msg/s", p.members, rate)
		send := func(i int) func(time.Time) {
			from := (i * p.members) / pubs // publishers spread over the members, so over the nodes
			c := cs[from]
			return func(due time.Time) {
				key := trk.add(due, p.members, from)
				if err := c.chat(key, trk.clientMsgID(key), "", room, trk.text(key, due)); err != nil {
					trk.sendFailed(key)
				}
			}
		}
		secs := runPhase(ctx, cm, label+" "+t.name, trk, pubs, rate/float64(pubs), send)
		r := finish(ctx, cm, trk, secs)
		r.Scenario, r.Label, r.Target = "room", label, t.name
		r.Params = map[string]any{"members": p.members, "publishers": pubs, "rate": rate, "nodes": k}
		out = append(out, r)
		if err := ctx.Err(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// retry503 runs f again while it fails with 503 (the leader busy, or the
// store slow), up to 10 times, waiting 200 ms and then longer, up to 2 s.
func retry503(ctx context.Context, f func() error) error {
	var err error
	wait := 200 * time.Millisecond
	for range 10 {
		err = f()
		re, ok := err.(*replyError)
		if !ok || re.Code != 503 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
	return err
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
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
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

// runPhase runs senders open-loop senders, sender i calling send(i)'s
// function at perSender per second, for cm.duration, printing progress
// every second. It returns the phase's length in seconds.
func runPhase(ctx context.Context, cm common, label string, trk *tracker, senders int, perSender float64, send func(int) func(time.Time)) float64 {
	return runPhaseFrom(ctx, cm, label, trk, senders, perSender, send, time.Now().Add(50*time.Millisecond))
}

// runPhaseFrom is runPhase with the first sends due at start.
func runPhaseFrom(ctx context.Context, cm common, label string, trk *tracker, senders int, perSender float64, send func(int) func(time.Time), start time.Time) float64 {
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
	secs := time.Since(start).Seconds()
	// Drain: wait until every acknowledged message reached every recipient
	// and every request was answered, or, once every request was answered,
	// nothing more arrived for drainQuiet, or the drain time ran out.
	deadline := time.Now().Add(cm.drain)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		answered := trk.acked.Load() + trk.failed.Load()
		if trk.sent.Load() == answered {
			if trk.outstanding() == 0 {
				break
			}
			if seen := answered + trk.delivered.Load(); seen != last {
				last, lastChange = seen, time.Now()
			} else if time.Since(lastChange) >= drainQuiet {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopProgress()
	pwg.Wait()
	return secs
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
			s, d := trk.sent.Load(), trk.delivered.Load()
			out(fmt.Sprintf("[%s] %4.0fs sent %d (%d/s) acked %d delivered %d (%d/s) errors %d in flight %d",
				label, now.Sub(start).Seconds(), s, s-lastSent, trk.acked.Load(), d, d-lastDel,
				trk.failed.Load(), s-trk.acked.Load()-trk.failed.Load()))
			lastSent, lastDel = s, d
		}
	}
}

// finish turns the tracker's counts into a Result.
func finish(_ context.Context, _ common, trk *tracker, secs float64) Result {
	expected, lost, lostDel, unacked := trk.tally()
	r := Result{
		Seconds:        round3(secs),
		Sent:           trk.sent.Load(),
		Acked:          trk.acked.Load(),
		Errors:         trk.failed.Load(),
		Unacked:        unacked,
		Expected:       expected,
		Delivered:      trk.delivered.Load(),
		Recovered:      trk.recovered.Load(),
		Duplicates:     trk.duplicates.Load(),
		Lost:           lost,
		LostDeliveries: lostDel,
		Latency:        summarize(trk.e2e.merged()),
		AckLatency:     summarize(trk.ack.merged()),
	}
	if secs > 0 {
		r.DeliveredPerSec = math.Round(float64(r.Delivered) / secs)
	}
	return r
}

type connectParams struct {
	conns int
	rate  float64       // connection attempts per second
	hold  time.Duration // idle time before the memory is read
}

// runConnect opens conns connections at rate per second, each logging in,
// holds them idle, and reads each process's resident memory before and
// after.
func runConnect(ctx context.Context, t *target, cm common, p connectParams) (Result, error) {
	label := fmt.Sprintf("connect %d at %g/s", p.conns, p.rate)
	r := Result{Scenario: "connect", Label: label, Target: t.name,
		Params: map[string]any{"conns": p.conns, "rate": p.rate, "holdSeconds": p.hold.Seconds(), "nodes": t.numNodes()}}
	var before []nodeMetrics
	if len(t.admin) > 0 {
		var err error
		if before, err = t.scrape(ctx); err != nil {
			return r, err
		}
	} else {
		r.Notes = append(r.Notes, "no metrics address given: memory not measured")
	}
	lat := newLatency()
	cs := make([]*client, p.conns)
	var okN, failN atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	start := time.Now()
	var lastDone atomic.Int64
	k := max(t.numNodes(), 1)
	i := 0
	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		if cm.progress == nil {
			return
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case now := <-tick.C:
				cm.progress(fmt.Sprintf("[%s %s] %4.0fs logged in %d failed %d", label, t.name, now.Sub(start).Seconds(), okN.Load(), failN.Load()))
			}
		}
	}()
	newPacer(start, p.rate).run(ctx, start.Add(time.Duration(float64(p.conns)/p.rate*float64(time.Second))+time.Millisecond), func(due time.Time) {
		if i >= p.conns {
			return
		}
		idx := i
		i++
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			c, err := t.connect(cctx, idx, idx%k, func() *tracker { return nil })
			if err != nil {
				failN.Add(1)
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
				return
			}
			cs[idx] = c
			okN.Add(1)
			now := time.Now()
			lat.record(idx, now.Sub(due))
			lastDone.Store(now.UnixNano())
		}()
	})
	wg.Wait()
	defer closeAll(cs)
	storm := time.Duration(lastDone.Load() - start.UnixNano())
	r.Seconds = round3(storm.Seconds())
	cr := &ConnectResult{Conns: okN.Load(), Failed: failN.Load(), Latency: summarize(lat.merged())}
	if storm > 0 {
		cr.PerSec = math.Round(float64(cr.Conns) / storm.Seconds())
	}
	r.Errors = cr.Failed
	if firstErr != nil {
		r.Notes = append(r.Notes, "first connect error: "+firstErr.Error())
	}
	select {
	case <-ctx.Done():
	case <-time.After(p.hold):
	}
	stopProgress()
	pwg.Wait()
	if before != nil {
		after, err := t.scrape(ctx)
		if err != nil {
			return r, err
		}
		var dRSS, dConns float64
		for j, a := range t.admin {
			nm := NodeMemory{Admin: a, RSSBefore: before[j].RSS, RSSAfter: after[j].RSS, ConnsBefore: before[j].LoggedIn, ConnsAfter: after[j].LoggedIn}
			if d := nm.ConnsAfter - nm.ConnsBefore; d > 0 {
				nm.BytesPerConn = math.Round((nm.RSSAfter - nm.RSSBefore) / d)
			}
			dRSS += nm.RSSAfter - nm.RSSBefore
			dConns += nm.ConnsAfter - nm.ConnsBefore
			cr.Nodes = append(cr.Nodes, nm)
		}
		if dConns > 0 {
			cr.BytesPerConn = math.Round(dRSS / dConns)
		}
	}
	r.Connect = cr
	return r, ctx.Err()
}
