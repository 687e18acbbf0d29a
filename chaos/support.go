package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// The customer-service workload runs beside the chat clients: visitors
// arrive through the gateway, wait in the leader's queue, write to their
// agent and close; agents answer, set themselves away and back, and drop
// their connections for shorter and longer than the grace period, while
// the faults go on. Its checker verifies:
//
//   - every message acknowledged in a support conversation is stored, and
//     shown once and in order by the other side as it was when the message
//     was stored (the agent the leader had assigned, or the visitor);
//   - every visitor who asked was assigned, and had one open conversation
//     at a time;
//   - in every snapshot of the leader's state (GET /support on its admin
//     listener, taken every quarter second), no agent holds more than its
//     capacity, a conversation is queued or held by one agent, never both
//     nor twice, and the queue's places are 1..n;
//   - at the end, with the workload stopped, the agents' own lists agree
//     with the leader and are disjoint.

// SupportConfig configures the customer-service workload.
type SupportConfig struct {
	Gateway  *chatclient.Gateway
	Agents   []string // registered users the operator made agents
	Password string   // of the agents
	Capacity int      // of each agent
	Arrival  time.Duration
	Messages int // each visitor sends, once its conversation is open
	Seed     uint64
	// LeaderAdmin returns the admin address (host:port) of the node that
	// leads now, "" when none does.
	LeaderAdmin func() string
	Logf        func(format string, args ...any)
}

// SupportLoad is the running workload. Create it with NewSupportLoad.
type SupportLoad struct {
	cfg    SupportConfig
	rec    *Record
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wgV    sync.WaitGroup // the visitors
	stop   chan struct{}  // closed: no more arrivals or churn
	stopOn sync.Once

	mu         sync.Mutex
	acks       []supportAck
	visitors   []*supVisitor
	waits      []time.Duration
	problems   []string
	violations int // problems, counted (problems holds the first maxProblems)
	snaps      int
	agents     map[string]*supAgent

	Reconnects atomic.Int64
}

type supportAck struct {
	msg  protocol.Message
	cmid string
}

// NewSupportLoad returns the workload, recording into rec.
func NewSupportLoad(cfg SupportConfig, rec *Record) *SupportLoad {
	ctx, cancel := context.WithCancel(context.Background())
	return &SupportLoad{cfg: cfg, rec: rec, ctx: ctx, cancel: cancel, stop: make(chan struct{}), agents: map[string]*supAgent{}}
}

func (s *SupportLoad) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf("support: "+format, args...)
	}
}

func (s *SupportLoad) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations++
	if len(s.problems) < maxProblems {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
}

func (s *SupportLoad) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// Start starts the agents, the arrivals and the snapshot checks.
func (s *SupportLoad) Start() {
	for i, name := range s.cfg.Agents {
		a := &supAgent{s: s, name: name, h: newHold(name, s.rec), held: map[string]bool{}, known: map[string]bool{}, owed: map[string]bool{},
			rng: rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)+100))}
		s.agents[name] = a
		s.rec.AddClient(name)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); a.run() }()
	}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.arrive() }()
	go func() { defer s.wg.Done(); s.watch() }()
}

// Stop ends the arrivals and the agents' churn, waits for every visitor
// to finish (bounded by ctx), has every agent available, and stops.
func (s *SupportLoad) Stop(ctx context.Context) error {
	s.stopOn.Do(func() { close(s.stop) })
	done := make(chan struct{})
	go func() { s.wgV.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		var left []string
		for _, v := range s.visitors {
			if !v.done.Load() {
				left = append(left, fmt.Sprintf("%s (%s, assigned %v, sent %d)", v.id, v.conv, v.assigned.Load(), v.sent))
			}
		}
		s.mu.Unlock()
		err = fmt.Errorf("support: %d visitors did not finish: %v", len(left), left)
		s.problem("%v", err)
	}
	s.settleAgents(ctx)
	s.checkQuiet(ctx)
	s.cancel()
	s.wg.Wait()
	return err
}

// ReconnectAll has every visitor and agent drop its connection and
// reconnect, catching up with sync (and rebuild) as after a lost
// connection: what the chat clients do after each fault.
func (s *SupportLoad) ReconnectAll() {
	s.mu.Lock()
	visitors := slices.Clone(s.visitors)
	s.mu.Unlock()
	for _, v := range visitors {
		v.mu.Lock()
		if v.cur != nil {
			_ = v.cur.Close()
		}
		v.mu.Unlock()
	}
	for _, a := range s.agents {
		a.mu.Lock()
		if a.conn != nil {
			_ = a.conn.Close()
		}
		a.mu.Unlock()
	}
}

// settleAgents has every agent reconnect and catch up once more, and waits
// until each has.
func (s *SupportLoad) settleAgents(ctx context.Context) {
	before := map[string]int64{}
	for name, a := range s.agents {
		before[name] = a.caughtUp.Load()
	}
	s.ReconnectAll()
	for name, a := range s.agents {
		for a.caughtUp.Load() == before[name] {
			if !sleep(ctx, 50*time.Millisecond) {
				s.problem("agent %s did not catch up at the end", name)
				return
			}
		}
	}
}

// Close stops everything at once.
func (s *SupportLoad) Close() { s.cancel(); s.wg.Wait() }

// dial logs in at a node the gateway lists (loopback only).
func dialSupport(ctx context.Context, gw *chatclient.Gateway, rng *rand.Rand, token string) (*chatclient.Conn, error) {
	nodes, err := gw.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, n := range nodes.Nodes {
		if loopback(n.WS) {
			urls = append(urls, n.WS)
		}
	}
	if len(urls) == 0 {
		return nil, errors.New("no node listed")
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := chatclient.Dial(dctx, urls[rng.IntN(len(urls))], 4096)
	if err != nil {
		return nil, err
	}
	if _, err := conn.LoginToken(dctx, token); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

// arrive starts a visitor every Arrival until Stop.
func (s *SupportLoad) arrive() {
	t := time.NewTicker(s.cfg.Arrival)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-s.ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		v := &supVisitor{s: s, rng: rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)+10_000)), n: i}
		s.mu.Lock()
		s.visitors = append(s.visitors, v)
		s.mu.Unlock()
		s.wgV.Add(1)
		go func() { defer s.wgV.Done(); v.run() }()
	}
}

// supHold is what a support client holds, as the chat clients do: a
// message above the next seq of its conversation waits for those before
// it (which a push or a sync brings), so the client never shows a later
// one first. One goroutine only.
type supHold struct {
	user    string
	rec     *Record
	view    *View
	pending map[string][]waiting
	// settling: conversations the last sync answered "settling" (nothing
	// above the floor yet): synced again like a gap.
	settling map[string]bool
	// gaveBack: per conversation, the floor (plus one) of the settling gap
	// the client gave back what it held above.
	gaveBack map[string]int64
}

func newHold(user string, rec *Record) *supHold {
	return &supHold{user: user, rec: rec, view: NewView(), pending: map[string][]waiting{}, settling: map[string]bool{}, gaveBack: map[string]int64{}}
}

func (h *supHold) offer(m protocol.Message, src Source) {
	if m.Seq > h.view.Offset(m.Conv)+1 {
		h.pending[m.Conv] = append(h.pending[m.Conv], waiting{m: m, src: src, since: time.Now()})
		return
	}
	h.accept(m, src)
	h.release(m.Conv, false)
}

func (h *supHold) accept(m protocol.Message, src Source) {
	h.rec.AddArrival(h.user, m, src)
	h.view.Accept(m)
}

func (h *supHold) release(conv string, all bool) {
	w := h.pending[conv]
	sort.SliceStable(w, func(i, j int) bool { return w[i].m.Seq < w[j].m.Seq })
	i := 0
	for ; i < len(w); i++ {
		if !all && w[i].m.Seq > h.view.Offset(conv)+1 {
			break
		}
		h.accept(w[i].m, w[i].src)
	}
	if i == len(w) {
		delete(h.pending, conv)
	} else {
		h.pending[conv] = w[i:]
	}
}

// synced takes a sync's messages of conv, everything above the offset
// the sync was asked from, and then what waited; while the server says
// the conversation is settling, only what waited for them.
func (h *supHold) synced(conv string, msgs []protocol.Message, settling bool) {
	for _, m := range msgs {
		h.accept(m, FromSync)
	}
	if settling {
		h.settling[conv] = true
		h.release(conv, false)
		return
	}
	delete(h.settling, conv)
	h.release(conv, true)
}

// gaps are the conversations with a message that has waited longer than
// d, and those settling.
func (h *supHold) gaps(d time.Duration) []string {
	var out []string
	for conv := range h.settling {
		if _, ok := h.pending[conv]; !ok {
			out = append(out, conv)
		}
	}
	for conv, w := range h.pending {
		for _, x := range w {
			if time.Since(x.since) >= d {
				out = append(out, conv)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// supSync syncs the given conversations (nil: all of the user's) from the
// client's offsets, uploading what it holds where the server lost
// messages (rebuild), and takes what comes back.
func supSync(ctx context.Context, conn *chatclient.Conn, h *supHold, offsets map[string]int64) error {
	got, err := conn.SyncAll(ctx, offsets)
	if err != nil {
		return err
	}
	for conv := range offsets {
		if _, ok := got[conv]; !ok {
			delete(h.settling, conv) // left out: no longer the client's to read
		}
	}
	convs := make([]string, 0, len(got))
	for conv := range got {
		convs = append(convs, conv)
	}
	sort.Strings(convs)
	for _, conv := range convs {
		sc := got[conv]
		for round := 0; sc.Rebuild && round < rebuildRounds; round++ {
			held := h.view.Held(conv, protocol.MaxSyncMessages)
			if len(held) == 0 {
				break
			}
			if _, err := conn.Rebuild(ctx, conv, held); err != nil {
				return fmt.Errorf("rebuild %s: %w", conv, err)
			}
			again, err := conn.SyncAll(ctx, map[string]int64{conv: h.view.Offset(conv)})
			if err != nil {
				return err
			}
			sc = again[conv]
		}
		if sc.Rebuild {
			continue // the next catch-up tries again
		}
		if sc.Settling && h.gaveBack[conv] != sc.Floor+1 {
			// What it holds above the floor, shown or still waiting,
			// goes back once: the server may lack it.
			if held := aboveFloor(h.view.Held(conv, 0), h.pending[conv], sc.Floor); len(held) > 0 {
				if _, err := conn.Rebuild(ctx, conv, held); err != nil {
					return fmt.Errorf("rebuild %s: %w", conv, err)
				}
			}
			h.gaveBack[conv] = sc.Floor + 1
		}
		h.synced(conv, sc.Messages, sc.Settling)
	}
	return nil
}

// supVisitor is one visitor: it opens one conversation, sends Messages,
// waits for its agent, and closes it.
type supVisitor struct {
	s    *SupportLoad
	n    int
	id   string
	tok  string
	conv string
	h    *supHold
	rng  *rand.Rand
	sent int
	// assigned: an agent was assigned (a push, or support said so);
	// answered: an agent's message reached it.
	assigned, answered, done atomic.Bool
	asked, assignedAt        time.Time
	closed                   bool // its supportClose succeeded: only the last sync is left

	mu  sync.Mutex
	cur *chatclient.Conn
}

func (v *supVisitor) run() {
	s := v.s
	defer v.done.Store(true)
	ctx := s.ctx
	for v.id == "" {
		r, err := s.cfg.Gateway.Visitor(ctx, fmt.Sprintf("chaos visitor %d", v.n), "web")
		if err == nil {
			v.id, v.tok = r.Visitor, r.Token
			v.h = newHold(v.id, s.rec)
			s.rec.AddClient(v.id)
			break
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return
		}
	}
	for ctx.Err() == nil {
		conn, err := dialSupport(ctx, s.cfg.Gateway, v.rng, v.tok)
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		s.Reconnects.Add(1)
		v.mu.Lock()
		v.cur = conn
		v.mu.Unlock()
		finished := v.serve(conn)
		v.mu.Lock()
		v.cur = nil
		v.mu.Unlock()
		closeConn(conn)
		if finished {
			return
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

func (v *supVisitor) call(conn *chatclient.Conn, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(v.s.ctx, 10*time.Second)
	defer cancel()
	return f(ctx)
}

// serve runs the visitor on one connection; it reports whether the
// visitor is done.
func (v *supVisitor) serve(conn *chatclient.Conn) bool {
	s := v.s
	if v.closed {
		return v.catchUp(conn)
	}
	var sc protocol.SupportConv
	for {
		// The first time it opens one; after that it resumes its own,
		// which opens none.
		err := v.call(conn, func(ctx context.Context) (err error) {
			if v.conv == "" {
				sc, err = conn.Support(ctx)
			} else {
				sc, err = conn.SupportResume(ctx, v.conv)
			}
			return err
		})
		if err == nil {
			break
		}
		if chatclient.Code(err) <= 0 {
			return false // the connection is gone
		}
		if !sleep(s.ctx, 200*time.Millisecond) {
			return true
		}
	}
	switch {
	case v.conv == "":
		v.conv, v.asked = sc.Conv, time.Now()
	case sc.Conv != v.conv:
		s.problem("visitor %s resumed %s and got %s: a conversation was lost", v.id, v.conv, sc.Conv)
		v.conv = sc.Conv
	case sc.State == protocol.SupportClosed:
		if sc.ClosedBy != v.id {
			s.problem("visitor %s: %s was closed by %q while it was still open for it", v.id, v.conv, sc.ClosedBy)
		}
		// Else its own close went through and the reply was lost.
		v.closed = true
		return v.catchUp(conn)
	}
	if sc.State == protocol.SupportAssigned {
		v.markAssigned()
	}
	if !v.catchUp(conn) {
		return false
	}
	tick := time.NewTicker(time.Duration(200+v.rng.IntN(300)) * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return true
		case p, ok := <-conn.Pushes():
			if !ok {
				return false
			}
			if !v.push(conn, p) {
				return false
			}
		case <-tick.C:
			if len(v.h.gaps(gapWait)) > 0 && !v.catchUp(conn) {
				return false
			}
			switch {
			case v.sent < s.cfg.Messages:
				if !v.send(conn) {
					return false
				}
			case v.assigned.Load() && (v.answered.Load() || time.Since(v.assignedAt) > 10*time.Second):
				return v.finish(conn)
			}
		}
	}
}

func (v *supVisitor) markAssigned() {
	if !v.assigned.Swap(true) {
		v.assignedAt = time.Now()
		v.s.mu.Lock()
		v.s.waits = append(v.s.waits, v.assignedAt.Sub(v.asked))
		v.s.mu.Unlock()
	}
}

// catchUp syncs the conversation from the visitor's offset.
func (v *supVisitor) catchUp(conn *chatclient.Conn) bool {
	err := v.call(conn, func(ctx context.Context) error {
		return supSync(ctx, conn, v.h, map[string]int64{v.conv: v.h.view.Offset(v.conv)})
	})
	if err != nil {
		return false
	}
	for _, m := range v.h.view.Held(v.conv, protocol.MaxSyncMessages) {
		if m.From != v.id {
			v.answered.Store(true)
		}
	}
	return true
}

func (v *supVisitor) push(conn *chatclient.Conn, p chatclient.Push) bool {
	switch p.Action {
	case protocol.PushMessage:
		var m protocol.Message
		if json.Unmarshal(p.Data, &m) != nil || m.Conv != v.conv {
			return true
		}
		v.h.offer(m, FromPush)
		v.answered.Store(true)
	case protocol.PushAssigned:
		v.markAssigned()
	case protocol.PushClosed:
		var c protocol.ClosedPush
		if json.Unmarshal(p.Data, &c) == nil && c.Conv == v.conv {
			v.s.problem("visitor %s: %s was closed by %q while it was still open for it", v.id, c.Conv, c.By)
		}
	}
	return true
}

// send sends the next message until it is acknowledged; false when the
// connection is gone.
func (v *supVisitor) send(conn *chatclient.Conn) bool {
	s := v.s
	cmid := fmt.Sprintf("%s-%d", v.id[1:], v.sent+1)
	for {
		var r protocol.ChatReply
		err := v.call(conn, func(ctx context.Context) (err error) {
			r, err = conn.ChatConv(ctx, v.conv, Text(cmid), cmid)
			return err
		})
		code := chatclient.Code(err)
		switch {
		case err == nil:
			m := protocol.Message{ID: r.ID, Conv: r.Conv, Seq: r.Seq, From: v.id, Text: Text(cmid), TS: r.TS}
			s.mu.Lock()
			s.acks = append(s.acks, supportAck{msg: m, cmid: cmid})
			s.mu.Unlock()
			v.h.offer(m, FromAck)
			v.sent++
			return true
		case code <= 0:
			return false // resent with the same clientMsgId on the next connection
		case code == protocol.CodeRateLimited || code == protocol.CodeUnavailable:
			if !sleep(s.ctx, 300*time.Millisecond) {
				return true
			}
		default:
			s.problem("visitor %s: message %s to %s refused: %v", v.id, cmid, v.conv, err)
			s.rec.AddGaveUp(cmid)
			v.sent++
			return true
		}
	}
}

// finish closes the conversation and syncs it to its end.
func (v *supVisitor) finish(conn *chatclient.Conn) bool {
	s := v.s
	for {
		err := v.call(conn, func(ctx context.Context) error { _, err := conn.SupportClose(ctx, v.conv); return err })
		if err == nil {
			break
		}
		if chatclient.Code(err) <= 0 {
			return false
		}
		if !sleep(s.ctx, 200*time.Millisecond) {
			return true
		}
	}
	v.closed = true
	// Its last sync: again while the server says the conversation is
	// settling, until it returns everything.
	for {
		if !v.catchUp(conn) {
			return false
		}
		if !v.h.settling[v.conv] {
			return true
		}
		if !sleep(s.ctx, gapWait) {
			return true
		}
	}
}

// supAgent is one agent.
type supAgent struct {
	s    *SupportLoad
	name string
	h    *supHold
	rng  *rand.Rand

	mu   sync.Mutex
	held map[string]bool // the conversations it holds, as it knows them
	// known: every conversation it was ever told it holds (assigned
	// pushes, its lists), kept across connections (see owedTo).
	known map[string]bool
	// owed: the conversations it held when a connection ended and has
	// not caught up on since: one taken back while it was away still
	// owes it what was stored to it up to then, though it may hold
	// nothing of it yet.
	owed map[string]bool
	away bool
	conn *chatclient.Conn

	caughtUp atomic.Int64 // catch-ups done since it started
}

func (a *supAgent) run() {
	s := a.s
	for s.ctx.Err() == nil {
		tok, _, err := s.cfg.Gateway.Login(s.ctx, a.name, s.cfg.Password)
		if err != nil {
			sleep(s.ctx, 200*time.Millisecond)
			continue
		}
		conn, err := dialSupport(s.ctx, s.cfg.Gateway, a.rng, tok)
		if err != nil {
			sleep(s.ctx, 200*time.Millisecond)
			continue
		}
		s.Reconnects.Add(1)
		drop := a.serve(conn)
		closeConn(conn)
		if drop > 0 && !sleep(s.ctx, drop) {
			return
		}
		sleep(s.ctx, 100*time.Millisecond)
	}
}

func (a *supAgent) call(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(a.s.ctx, 10*time.Second)
	defer cancel()
	return f(ctx)
}

// serve runs the agent on one connection until it is lost or the agent
// drops it on purpose; then it returns how long to stay away.
func (a *supAgent) serve(conn *chatclient.Conn) time.Duration {
	s := a.s
	status := protocol.AgentAvailable
	if a.away && !s.stopped() {
		status = protocol.AgentAway
	}
	if err := a.call(func(ctx context.Context) error { _, err := conn.AgentStatus(ctx, status); return err }); err != nil {
		return 0
	}
	var list protocol.SupportConvsReply
	if err := a.call(func(ctx context.Context) (err error) { list, err = conn.SupportConvs(ctx); return err }); err != nil {
		return 0
	}
	a.mu.Lock()
	a.conn = conn
	for conv := range a.held {
		a.owed[conv] = true
	}
	a.held = map[string]bool{}
	for _, c := range list.Convs {
		a.held[c.Conv] = true
		a.known[c.Conv] = true
	}
	owed := slices.Collect(maps.Keys(a.owed))
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.conn = nil; a.mu.Unlock() }()
	// Everything it may have missed, from its offsets: every
	// conversation it holds messages of (the server finds those its list
	// lacks, after Redis lost it, in the support store), those it holds
	// now, whose assigned push it may have missed, those it held when
	// its last connection ended (what was stored to it until they were
	// taken back is still its to read), and those whose pushes wait for
	// a gap below.
	offsets := a.h.view.Offsets()
	for _, c := range list.Convs {
		if _, ok := offsets[c.Conv]; !ok {
			offsets[c.Conv] = 0
		}
	}
	for _, conv := range owed {
		if _, ok := offsets[conv]; !ok {
			offsets[conv] = 0
		}
	}
	for conv := range a.h.pending {
		if _, ok := offsets[conv]; !ok {
			offsets[conv] = 0
		}
	}
	if len(offsets) > 0 {
		start := time.Now()
		if err := a.call(func(ctx context.Context) error { return supSync(ctx, conn, a.h, offsets) }); err != nil {
			s.logf("%s: catch-up of %d conversations failed after %v: %v", a.name, len(offsets), time.Since(start).Round(time.Millisecond), err)
			return 0
		}
	}
	a.mu.Lock()
	for _, conv := range owed {
		delete(a.owed, conv)
	}
	a.mu.Unlock()
	a.caughtUp.Add(1)
	// An agent that went away comes back within 2 to 6 s, whatever
	// happened to its connection meanwhile.
	churn := time.NewTimer(time.Duration(8+a.rng.IntN(12)) * time.Second)
	if a.away {
		churn.Reset(time.Duration(2+a.rng.IntN(4)) * time.Second)
	}
	defer churn.Stop()
	gapTick := time.NewTicker(gapWait)
	defer gapTick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return 0
		case <-gapTick.C:
			if g := a.h.gaps(gapWait); len(g) > 0 && !a.syncAll(conn, g) {
				s.logf("%s: sync of %d conversations with a gap failed", a.name, len(g))
				return 0
			}
		case p, ok := <-conn.Pushes():
			if !ok {
				s.logf("%s: connection lost", a.name)
				return 0
			}
			if !a.push(conn, p) {
				s.logf("%s: handling a %s push failed", a.name, p.Action)
				return 0
			}
		case <-churn.C:
			if s.stopped() {
				if a.away {
					a.away = false
					if err := a.call(func(ctx context.Context) error { _, err := conn.AgentStatus(ctx, protocol.AgentAvailable); return err }); err != nil {
						return 0
					}
				}
				churn.Reset(time.Second)
				continue
			}
			switch {
			case a.away:
				a.away = false
				if err := a.call(func(ctx context.Context) error { _, err := conn.AgentStatus(ctx, protocol.AgentAvailable); return err }); err != nil {
					return 0
				}
				churn.Reset(time.Duration(8+a.rng.IntN(12)) * time.Second)
			case a.rng.IntN(2) == 0:
				a.away = true
				if err := a.call(func(ctx context.Context) error { _, err := conn.AgentStatus(ctx, protocol.AgentAway); return err }); err != nil {
					return 0
				}
				churn.Reset(time.Duration(2+a.rng.IntN(4)) * time.Second)
			default:
				// Drop the connection for 1 to 7 s: sometimes back within
				// the grace period, sometimes not.
				return time.Duration(1000+a.rng.IntN(6000)) * time.Millisecond
			}
		}
	}
}

// syncAll syncs the given conversations from the agent's offsets (nil:
// every conversation it has).
func (a *supAgent) syncAll(conn *chatclient.Conn, convs []string) bool {
	var offsets map[string]int64
	if convs != nil {
		offsets = map[string]int64{}
		for _, c := range convs {
			offsets[c] = a.h.view.Offset(c)
		}
	}
	return a.call(func(ctx context.Context) error { return supSync(ctx, conn, a.h, offsets) }) == nil
}

func (a *supAgent) push(conn *chatclient.Conn, p chatclient.Push) bool {
	switch p.Action {
	case protocol.PushAssigned:
		var ap protocol.AssignedPush
		if json.Unmarshal(p.Data, &ap) != nil {
			return true
		}
		a.mu.Lock()
		a.held[ap.Conv] = true
		a.known[ap.Conv] = true
		a.mu.Unlock()
		// The messages so far come with it, oldest first; the newest
		// may be past them by the time the agent reads this, and those
		// before them too: both are synced when they have waited.
		for _, m := range ap.Messages {
			a.h.offer(m, FromSync)
		}
	case protocol.PushUnassigned:
		var u protocol.UnassignedPush
		if json.Unmarshal(p.Data, &u) == nil {
			a.mu.Lock()
			delete(a.held, u.Conv)
			a.mu.Unlock()
		}
	case protocol.PushClosed:
		var c protocol.ClosedPush
		if json.Unmarshal(p.Data, &c) == nil {
			a.mu.Lock()
			delete(a.held, c.Conv)
			a.mu.Unlock()
		}
	case protocol.PushMessage:
		var m protocol.Message
		if json.Unmarshal(p.Data, &m) != nil || !protocol.IsVisitor(m.From) {
			return true
		}
		a.h.offer(m, FromPush)
		return a.reply(conn, m)
	}
	return true
}

// reply answers a visitor's message, unless the conversation is no
// longer the agent's.
func (a *supAgent) reply(conn *chatclient.Conn, to protocol.Message) bool {
	s := a.s
	cmid := fmt.Sprintf("%s-re-%s", a.name, to.ID)
	for {
		var r protocol.ChatReply
		err := a.call(func(ctx context.Context) (err error) {
			r, err = conn.ChatConv(ctx, to.Conv, Text(cmid), cmid)
			return err
		})
		code := chatclient.Code(err)
		switch {
		case err == nil:
			m := protocol.Message{ID: r.ID, Conv: r.Conv, Seq: r.Seq, From: a.name, Text: Text(cmid), TS: r.TS}
			s.mu.Lock()
			s.acks = append(s.acks, supportAck{msg: m, cmid: cmid})
			s.mu.Unlock()
			a.h.offer(m, FromAck)
			return true
		case code <= 0:
			return false
		case code == protocol.CodeUnavailable:
			if !sleep(s.ctx, 300*time.Millisecond) {
				return true
			}
		default:
			// 403 or 409: the conversation went to another agent, back to
			// the queue, or was closed meanwhile.
			s.rec.AddGaveUp(cmid)
			return true
		}
	}
}

// watch takes a snapshot of the leader's state every quarter second and
// checks it.
func (s *SupportLoad) watch() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if snap, ok := s.snapshot(client); ok {
			s.checkSnapshot(snap)
		}
	}
}

func (s *SupportLoad) snapshot(client *http.Client) (protocol.SupportSnapshot, bool) {
	var snap protocol.SupportSnapshot
	addr := s.cfg.LeaderAdmin()
	if addr == "" {
		return snap, false
	}
	resp, err := client.Get("http://" + addr + "/support")
	if err != nil {
		return snap, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&snap) != nil {
		return snap, false
	}
	return snap, true
}

func (s *SupportLoad) checkSnapshot(snap protocol.SupportSnapshot) {
	s.mu.Lock()
	s.snaps++
	s.mu.Unlock()
	where := map[string]string{}
	visitors := map[string]string{}
	for i, c := range snap.Queue {
		if c.Position != i+1 {
			s.problem("snapshot of %s (epoch %d): %s at place %d in position %d", snap.Node, snap.Epoch, c.Conv, c.Position, i+1)
		}
		where[c.Conv] = "queue"
		if other, ok := visitors[c.Visitor]; ok {
			s.problem("snapshot of %s: visitor %s has two open conversations, %s and %s", snap.Node, c.Visitor, other, c.Conv)
		}
		visitors[c.Visitor] = c.Conv
	}
	load := map[string]int{}
	for _, c := range snap.Held {
		if w, ok := where[c.Conv]; ok {
			s.problem("snapshot of %s (epoch %d): %s is held by %s and also in %s", snap.Node, snap.Epoch, c.Conv, c.Agent, w)
		}
		where[c.Conv] = c.Agent
		load[c.Agent]++
		if other, ok := visitors[c.Visitor]; ok {
			s.problem("snapshot of %s: visitor %s has two open conversations, %s and %s", snap.Node, c.Visitor, other, c.Conv)
		}
		visitors[c.Visitor] = c.Conv
	}
	for _, a := range snap.Agents {
		if load[a.Agent] != a.Open {
			s.problem("snapshot of %s: agent %s holds %d conversations but counts %d", snap.Node, a.Agent, load[a.Agent], a.Open)
		}
		if a.Open > a.Capacity && !a.Disabled {
			s.problem("snapshot of %s (epoch %d): agent %s holds %d conversations, over its capacity %d", snap.Node, snap.Epoch, a.Agent, a.Open, a.Capacity)
		}
	}
}

// checkQuiet runs once the workload is stopped: the agents' own lists
// agree with the leader and are disjoint, and nothing is left queued.
func (s *SupportLoad) checkQuiet(ctx context.Context) {
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for ctx.Err() == nil {
		last = s.quietOnce(ctx, client)
		if last == "" {
			return
		}
		sleep(ctx, 500*time.Millisecond)
	}
	s.problem("at the end: %s", last)
}

func (s *SupportLoad) quietOnce(ctx context.Context, client *http.Client) string {
	snap, ok := s.snapshot(client)
	if !ok {
		return "no snapshot of the leader's state"
	}
	if len(snap.Queue) > 0 {
		return fmt.Sprintf("%d conversations still queued with every visitor done", len(snap.Queue))
	}
	holder := map[string]string{}
	for _, c := range snap.Held {
		holder[c.Conv] = c.Agent
	}
	seen := map[string]string{}
	for _, name := range s.cfg.Agents {
		a := s.agents[name]
		a.mu.Lock()
		conn := a.conn
		a.mu.Unlock()
		if conn == nil {
			return "agent " + name + " is not connected"
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := conn.SupportConvs(cctx)
		cancel()
		if err != nil {
			return fmt.Sprintf("agent %s: %v", name, err)
		}
		for _, c := range r.Convs {
			if other, ok := seen[c.Conv]; ok {
				return fmt.Sprintf("%s is listed by %s and %s", c.Conv, other, name)
			}
			seen[c.Conv] = name
			if holder[c.Conv] != name {
				return fmt.Sprintf("%s lists %s, which the leader gives to %q", name, c.Conv, holder[c.Conv])
			}
		}
	}
	if len(seen) != len(holder) {
		return fmt.Sprintf("the leader holds %d conversations, the agents list %d", len(holder), len(seen))
	}
	return ""
}

// SupportResult is what the customer-service checker found.
type SupportResult struct {
	Visitors   int
	Assigned   int // visitors that were assigned
	Snapshots  int
	Waits      []time.Duration
	Reconnects int64
	Result     Result // message delivery, as for the chat clients
	Unstored   int    // acknowledged messages missing from their conversation's history, their seq free
	Reused     int    // acknowledged messages missing from the history whose seq holds another message
	// StateViolations counts the assignment and state violations (a
	// visitor never assigned, a snapshot or the end state wrong).
	StateViolations int
	Problems        []string // every violation of the above, described
}

// OK reports whether there was no violation.
func (r SupportResult) OK() bool {
	return r.Result.OK() && r.Unstored == 0 && r.StateViolations == 0 && r.Assigned == r.Visitors
}

// Check reads every conversation's history as stored (through an agent),
// makes the recipients of each acknowledged message the other side as the
// server stored it (its To), and checks the record.
func (s *SupportLoad) Check(ctx context.Context, gw *chatclient.Gateway) SupportResult {
	s.mu.Lock()
	res := SupportResult{Visitors: len(s.visitors), Snapshots: s.snaps, Waits: slices.Clone(s.waits), Reconnects: s.Reconnects.Load()}
	visitors := slices.Clone(s.visitors)
	acks := slices.Clone(s.acks)
	s.mu.Unlock()
	stored := map[string]protocol.Message{}
	seqs := map[string][]int64{} // conv -> the seqs its history holds
	if err := s.readStored(ctx, gw, visitors, stored, seqs); err != nil {
		res.Problems = append(res.Problems, "cannot read the stored history: "+err.Error())
	}
	for _, v := range visitors {
		if v.assigned.Load() {
			res.Assigned++
		} else {
			res.StateViolations++
			res.Problems = append(res.Problems, fmt.Sprintf("visitor %s (%s) asked and was never assigned", v.id, v.conv))
		}
	}
	bySeq := map[string]map[int64]bool{}
	for _, m := range stored {
		if bySeq[m.Conv] == nil {
			bySeq[m.Conv] = map[int64]bool{}
		}
		bySeq[m.Conv][m.Seq] = true
	}
	for _, a := range acks {
		st, ok := stored[a.msg.ID]
		if !ok && bySeq[a.msg.Conv][a.msg.Seq] {
			// Its seq holds another message: the counter gave it out
			// again after Redis lost its data twice before the history
			// writer reached MongoDB. Counted as the chat table counts it.
			res.Reused++
			ack := Ack{Msg: a.msg, ClientMsgID: a.cmid}
			s.rec.AddAck(ack) // no recipients: it shows as a seq conflict
			continue
		}
		if !ok {
			res.Unstored++
			if len(res.Problems) < maxProblems {
				held := seqs[a.msg.Conv]
				slices.Sort(held)
				res.Problems = append(res.Problems, fmt.Sprintf("lost: %s (%s seq %d, from %s, send %s) was acknowledged and is not in the history, which holds seqs %v",
					a.msg.ID, a.msg.Conv, a.msg.Seq, a.msg.From, a.cmid, held))
			}
			continue
		}
		ack := Ack{Msg: a.msg, ClientMsgID: a.cmid}
		ack.Msg.To = st.To
		if st.To != "" {
			ack.Recipients = s.owedTo(st.To, st.Conv)
		}
		s.rec.AddAck(ack)
	}
	res.Result = Check(s.rec)
	s.mu.Lock()
	res.StateViolations += s.violations
	res.Problems = append(res.Problems, s.problems...)
	s.mu.Unlock()
	return res
}

// owedTo is who is to show a message of conv stored to to: to itself,
// unless to is an agent that was never told it held conv (the assigned
// push went down with its connection, and the conversation went back to
// the queue before it returned). Such a message is owed to the agents
// that were told they held conv afterwards: the conversation's, not an
// agent's it never reached. With none, to itself still, so that a
// message no one was given shows as lost.
func (s *SupportLoad) owedTo(to, conv string) []string {
	a := s.agents[to]
	if a == nil || a.knows(conv) {
		return []string{to}
	}
	var out []string
	for name, b := range s.agents {
		if b.knows(conv) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return []string{to}
	}
	sort.Strings(out)
	return out
}

// knows reports whether the agent was ever told it held conv.
func (a *supAgent) knows(conv string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.known[conv]
}

func (s *SupportLoad) readStored(ctx context.Context, gw *chatclient.Gateway, visitors []*supVisitor, out map[string]protocol.Message, seqs map[string][]int64) error {
	tok, _, err := gw.Login(ctx, s.cfg.Agents[0], s.cfg.Password)
	if err != nil {
		return err
	}
	conn, err := dialSupport(ctx, gw, rand.New(rand.NewPCG(1, 2)), tok)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	for _, v := range visitors {
		if v.id == "" {
			continue
		}
		q := protocol.SupportHistoryData{Visitor: v.id, Limit: protocol.MaxSupportHistory}
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := conn.SupportHistory(cctx, q)
			cancel()
			if err != nil {
				return fmt.Errorf("history of %s: %w", v.id, err)
			}
			for _, m := range r.Messages {
				out[m.ID] = m
				seqs[m.Conv] = append(seqs[m.Conv], m.Seq)
			}
			if r.Next == nil {
				break
			}
			q.Conv, q.Before = r.Next.Conv, r.Next.Before
		}
	}
	return nil
}
