package leader

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"chatcluster/directory"
	"chatcluster/history"
	"chatcluster/protocol"
	"chatcluster/support"
)

const (
	supportWorkers = 4    // leader goroutines running support requests, by conversation or user
	supportQueue   = 1024 // requests queued per worker before the leader answers 503
	supportLocks   = 64   // locks by conversation

	supportTick       = 250 * time.Millisecond // how often the queue is looked at besides its changes
	agentsReloadEvery = 2 * time.Second        // how often the operator's agent changes are read

	// A visitor's messages: so many a second, in bursts of twice as many.
	visitorRate = 5
)

// supportService is the leader's part of customer service: it loads the
// open conversations and the agents from MongoDB when the term starts,
// assigns queued conversations to agents, stores and hands on the
// messages of support conversations, and returns to the queue what an
// agent holds when the agent goes away.
//
// Locks, always taken in this order: a conversation's lock (locks, by id)
// orders its messages and its changes, so an agent given a conversation
// gets its messages so far and every later one exactly once; change
// serialises the changes from their plan to their store write; mu guards
// st and the maps, held only briefly, never across a call out.
type supportService struct {
	l      *Term
	seed   maphash.Seed
	locks  [supportLocks]sync.Mutex
	change sync.Mutex

	mu      sync.Mutex
	st      *support.State
	pushed  map[string]int     // queued conversation -> the position last pushed to its visitor
	offline map[string]int64   // agent holding conversations -> since when it is offline, unix ms
	tokens  map[string]*bucket // visitor -> its message allowance

	waits       []int64 // the last maxWaits waits, ms, a ring; guarded by mu
	waitNext    int
	assignments int64 // guarded by mu

	work   [supportWorkers]chan roomJob
	loaded chan struct{}
	wake   chan struct{}
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newSupportService(l *Term) *supportService {
	ss := &supportService{l: l, seed: maphash.MakeSeed(), st: support.New(), pushed: map[string]int{},
		offline: map[string]int64{}, tokens: map[string]*bucket{},
		loaded: make(chan struct{}), wake: make(chan struct{}, 1)}
	for i := range ss.work {
		ss.work[i] = make(chan roomJob, supportQueue)
	}
	return ss
}

func (ss *supportService) start() {
	if ss.l.d.Support == nil {
		return
	}
	ss.l.goTerm(ss.run)
	for i := range ss.work {
		q := ss.work[i]
		ss.l.goTerm(func() { ss.worker(q) })
	}
}

func (ss *supportService) lock(conv string) *sync.Mutex {
	return &ss.locks[maphash.String(ss.seed, conv)%supportLocks]
}

// poke has the loop look at the queue now. A nil service (a term made
// without Start, in tests) ignores it.
func (ss *supportService) poke() {
	if ss == nil {
		return
	}
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

func now() int64 { return time.Now().UnixMilli() }

// online reports whether user has a session the leader knows of.
func (ss *supportService) online(user string) bool {
	_, ok := ss.l.rooms.reg.Where(user)
	return ok
}

// run loads the state, retrying until it succeeds or the term ends, then
// assigns, watches the agents and tells visitors their place until the
// term ends.
func (ss *supportService) run() {
	l := ss.l
	backoff := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		err := l.d.Support.ClaimSupport(ctx, l.epoch)
		var convs []support.Conv
		var agents []support.Agent
		if err == nil {
			convs, err = l.d.Support.OpenSupportConvs(ctx)
		}
		if err == nil {
			agents, err = l.d.Support.Agents(ctx)
		}
		cancel()
		if err == nil {
			convs, err = ss.oneOpenEach(convs)
		}
		if err == nil {
			ss.mu.Lock()
			for _, a := range agents {
				ss.st.PutAgent(a)
			}
			for _, c := range convs {
				ss.st.Put(c)
			}
			ss.mu.Unlock()
			close(ss.loaded)
			l.log.Info().Int("open", len(convs)).Int("agents", len(agents)).Int64("epoch", l.epoch).Msg("support conversations loaded")
			break
		}
		if l.ctx.Err() != nil {
			return
		}
		l.log.Warn().Err(err).Dur("retry", backoff).Msg("cannot load support conversations; support requests wait")
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	t := time.NewTicker(supportTick)
	defer t.Stop()
	lastReload := time.Now()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		case <-ss.wake:
		}
		if time.Since(lastReload) >= agentsReloadEvery {
			lastReload = time.Now()
			ss.reloadAgents()
		}
		ss.watchAgents()
		for i := 0; i < 1000 && l.ctx.Err() == nil && ss.assignOne(); i++ {
		}
		ss.pushPositions()
		ss.gauges()
	}
}

// oneOpenEach keeps, of a visitor's open conversations, the newest: one
// more can only come from a deposed leader that opened it in the moment
// before it learnt so. The older ones are closed, in MongoDB first.
func (ss *supportService) oneOpenEach(convs []support.Conv) ([]support.Conv, error) {
	newest := map[string]int{}
	for i, c := range convs {
		if j, ok := newest[c.Visitor]; !ok || c.N > convs[j].N {
			newest[c.Visitor] = i
		}
	}
	out := convs[:0:0]
	for i, c := range convs {
		if newest[c.Visitor] == i {
			out = append(out, c)
			continue
		}
		c.State, c.Closed, c.ClosedBy, c.Front = protocol.SupportClosed, now(), "", false
		if err := ss.save(c); err != nil {
			return nil, err
		}
		ss.l.log.Warn().Str("conv", c.ID).Msg("closed a visitor's older open support conversation: it had a newer one")
	}
	return out, nil
}

// reloadAgents applies the operator's changes to the agents (added,
// removed, capacity, disabled). The status stays the leader's: it wrote
// it before applying it.
func (ss *supportService) reloadAgents() {
	l := ss.l
	ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
	agents, err := l.d.Support.Agents(ctx)
	cancel()
	if err != nil {
		l.dropLog.Warn().Err(err).Msg("cannot read the agents; the last ones read apply")
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	seen := make(map[string]bool, len(agents))
	for _, a := range agents {
		seen[a.Name] = true
		if old, ok := ss.st.Agent(a.Name); ok {
			a.Status = old.Status
		}
		ss.st.PutAgent(a)
	}
	for _, a := range ss.st.Agents() {
		if !seen[a.Name] {
			ss.st.RemoveAgent(a.Name)
			l.log.Info().Str("agent", a.Name).Msg("agent removed by the operator")
		}
	}
}

// watchAgents puts back in the queue what agents hold who are disabled,
// removed, or offline for longer than the grace period.
func (ss *supportService) watchAgents() {
	l := ss.l
	t := now()
	type back struct{ agent, reason string }
	var out []back
	ss.mu.Lock()
	holders := ss.st.Holders()
	for _, a := range holders {
		ag, isAgent := ss.st.Agent(a)
		switch {
		case !isAgent || ag.Disabled:
			out = append(out, back{a, "disabled"})
			delete(ss.offline, a)
		case ss.online(a):
			delete(ss.offline, a)
		default:
			since, ok := ss.offline[a]
			if !ok {
				ss.offline[a] = t
				l.log.Info().Str("agent", a).Dur("grace", l.d.SupportGrace).Msg("agent holding conversations is offline; they go back to the queue unless it returns in time")
			} else if time.Duration(t-since)*time.Millisecond >= l.d.SupportGrace {
				out = append(out, back{a, "requeued"})
				delete(ss.offline, a)
			}
		}
	}
	for a := range ss.offline {
		if !slices.Contains(holders, a) {
			delete(ss.offline, a)
		}
	}
	ss.mu.Unlock()
	for _, b := range out {
		ss.requeueAll(b.agent, b.reason)
	}
}

// requeueAll puts every conversation agent holds back at the front of the
// queue.
func (ss *supportService) requeueAll(agent, reason string) int {
	ss.mu.Lock()
	held := ss.st.Held(agent)
	ss.mu.Unlock()
	n := 0
	for _, c := range held {
		if ss.requeue(c.ID, agent, reason) {
			n++
		}
	}
	if n > 0 {
		ss.l.log.Info().Str("agent", agent).Str("reason", reason).Int("conversations", n).Msg("conversations back in the queue")
		ss.poke()
	}
	return n
}

func (ss *supportService) requeue(id, agent, reason string) bool {
	l := ss.l
	lk := ss.lock(id)
	lk.Lock()
	defer lk.Unlock()
	ss.change.Lock()
	defer ss.change.Unlock()
	ss.mu.Lock()
	cur, ok := ss.st.Conv(id)
	c, planned := ss.st.Requeue(id, now())
	ss.mu.Unlock()
	if !ok || !planned || cur.Agent != agent {
		return false
	}
	if err := ss.save(c); err != nil {
		return false
	}
	ss.apply(c)
	l.m.SupportRequeued.Inc()
	ss.pushTo(agent, protocol.PushUnassigned, protocol.UnassignedPush{Conv: id, Reason: reason})
	return true
}

// save writes c to MongoDB as this term, before it takes effect.
func (ss *supportService) save(c support.Conv) error {
	l := ss.l
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	err := l.d.Support.SaveSupportConv(ctx, c, l.epoch)
	if errors.Is(err, history.ErrFenced) {
		l.log.Warn().Str("conv", c.ID).Int64("epoch", l.epoch).Msg("a newer leader owns customer service; this term changes it no more")
	} else if err != nil {
		l.dropLog.Warn().Err(err).Str("conv", c.ID).Msg("cannot store a support conversation; the change waits")
	}
	return err
}

func (ss *supportService) apply(c support.Conv) {
	ss.mu.Lock()
	ss.st.Put(c)
	if c.State != protocol.SupportQueued {
		delete(ss.pushed, c.ID)
	}
	ss.mu.Unlock()
}

// assignOne gives the first queued conversation to the best ready agent,
// if there are both; it reports whether it changed anything.
func (ss *supportService) assignOne() bool {
	l := ss.l
	ss.mu.Lock()
	planned, _, ok := ss.st.Next(ss.online, now())
	ss.mu.Unlock()
	if !ok {
		return false
	}
	lk := ss.lock(planned.ID)
	lk.Lock()
	defer lk.Unlock()
	ss.change.Lock()
	defer ss.change.Unlock()
	ss.mu.Lock()
	c, a, ok := ss.st.Next(ss.online, now())
	ss.mu.Unlock()
	if !ok {
		return false
	}
	if c.ID != planned.ID {
		return true // the queue changed meanwhile: plan again, under the right lock
	}
	if err := ss.save(c); err != nil {
		return false
	}
	ss.apply(c)
	ss.mu.Lock()
	ss.st.Assigned(a.Name, c.Assigned)
	ss.mu.Unlock()
	l.m.SupportAssigned.Inc()
	l.m.SupportWait.Observe(float64(c.Assigned-c.Queued) / 1000)
	ss.mu.Lock()
	ss.assignments++
	if len(ss.waits) < maxWaits {
		ss.waits = append(ss.waits, c.Assigned-c.Queued)
	} else {
		ss.waits[ss.waitNext] = c.Assigned - c.Queued
		ss.waitNext = (ss.waitNext + 1) % maxWaits
	}
	ss.mu.Unlock()
	l.log.Info().Str("conv", c.ID).Str("agent", a.Name).Int64("waited_ms", c.Assigned-c.Queued).Msg("support conversation assigned")
	ss.announce(c, "")
	return true
}

// announce tells the agent c is assigned to (with its messages so far) and
// its visitor; from is the agent who handed it on, if any. The
// conversation's lock is held.
func (ss *supportService) announce(c support.Conv, from string) {
	l := ss.l
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	if err := l.d.Convs.AddConv(ctx, c.Agent, c.ID); err != nil {
		// The agent's next message in it adds it again.
		l.dropLog.Warn().Err(err).Str("conv", c.ID).Msg("cannot add a support conversation to its agent's list")
	}
	info := c.Info()
	push := protocol.AssignedPush{SupportConv: info, From: from}
	if msgs, err := l.d.Messages.Range(ctx, c.ID, 0, 0, protocol.RecentLen, true); err == nil {
		push.Messages = msgs
	} else {
		l.dropLog.Warn().Err(err).Str("conv", c.ID).Msg("cannot read a support conversation's messages for its agent; it syncs them")
	}
	if top, err := l.d.Messages.Latest(ctx, []string{c.ID}); err == nil {
		push.Latest = top[c.ID]
	}
	ss.pushTo(c.Agent, protocol.PushAssigned, push)
	ss.pushTo(c.Visitor, protocol.PushAssigned, protocol.AssignedPush{SupportConv: protocol.SupportConv{
		Conv: c.ID, Visitor: c.Visitor, State: c.State, Agent: c.Agent, Opened: c.Opened, Assigned: c.Assigned, Latest: push.Latest}})
}

// pushTo hands a push to user wherever the leader knows them to be (on
// every node that holds one of their connections); a user it does not know
// of finds out with its next request.
func (ss *supportService) pushTo(user, kind string, data any) {
	push, err := protocol.EncodePush(kind, data)
	if err != nil {
		return
	}
	l := ss.l
	for _, node := range l.rooms.reg.Nodes(user) {
		if node == l.id {
			l.node.DeliverRaw(slices.Values([]string{user}), push)
			continue
		}
		l.send(node, &protocol.PeerFrame{Type: protocol.PeerPush, Recipients: user, Push: push})
	}
}

// pushPositions tells each queued visitor whose place changed its new one.
func (ss *supportService) pushPositions() {
	type pos struct {
		visitor string
		p       protocol.QueuePush
	}
	var out []pos
	ss.mu.Lock()
	q := ss.st.Queue()
	queued := make(map[string]bool, len(q))
	for i, c := range q {
		queued[c.ID] = true
		if ss.pushed[c.ID] != i+1 {
			ss.pushed[c.ID] = i + 1
			out = append(out, pos{c.Visitor, protocol.QueuePush{Conv: c.ID, Position: i + 1, Waiting: len(q)}})
		}
	}
	for id := range ss.pushed {
		if !queued[id] {
			delete(ss.pushed, id)
		}
	}
	ss.mu.Unlock()
	for _, p := range out {
		ss.pushTo(p.visitor, protocol.PushQueue, p.p)
	}
}

func (ss *supportService) gauges() {
	m := ss.l.m
	t := now()
	ss.mu.Lock()
	q := ss.st.QueueInfo(t)
	held, capacity, ready := ss.st.Utilisation(ss.online)
	open := 0
	for _, a := range ss.st.Holders() {
		open += ss.st.Load(a)
	}
	ss.mu.Unlock()
	m.SupportQueue.Set(float64(q.Length))
	m.SupportOldestWait.Set(float64(q.OldestWait) / 1000)
	m.SupportOpen.Set(float64(open))
	m.SupportAgentsReady.Set(float64(ready))
	if capacity > 0 {
		m.SupportUtilisation.Set(float64(held) / float64(capacity))
	} else {
		m.SupportUtilisation.Set(0)
	}
}

// stop zeroes the leader's support gauges at the end of the term.
func (ss *supportService) stop() {
	m := ss.l.m
	for _, g := range []interface{ Set(float64) }{m.SupportQueue, m.SupportOldestWait, m.SupportOpen, m.SupportAgentsReady, m.SupportUtilisation} {
		g.Set(0)
	}
}

// submit queues a support request. It never blocks: when its worker is
// full the asker gets 503 at once.
func (ss *supportService) submit(from string, f protocol.PeerFrame) {
	if ss.l.d.Support == nil {
		ss.l.reply(from, protocol.PeerFrame{Req: f.Req, Code: protocol.CodeUnavailable, Error: "customer service is not set up on this cluster"})
		return
	}
	key := f.Conv
	if key == "" {
		key = f.User
	}
	q := ss.work[maphash.String(ss.seed, key)%supportWorkers]
	select {
	case q <- roomJob{from: from, f: f}:
	default:
		ss.l.reply(from, protocol.PeerFrame{Req: f.Req, Code: protocol.CodeUnavailable, Error: "the leader is overloaded; retry shortly"})
	}
}

func (ss *supportService) worker(q chan roomJob) {
	l := ss.l
	for {
		select {
		case <-l.ctx.Done():
			return
		case j := <-q:
			if !ss.waitLoaded(j.f.Deadline) {
				if l.ctx.Err() != nil {
					return
				}
				l.reply(j.from, protocol.PeerFrame{Req: j.f.Req, Code: protocol.CodeUnavailable, Error: "customer service is not loaded yet; retry shortly"})
				continue
			}
			if j.f.Deadline > 0 && time.Now().UnixMilli() > j.f.Deadline {
				continue // the asker has given up (see the room worker)
			}
			out := ss.handle(j.f)
			out.Req = j.f.Req
			l.reply(j.from, out)
		}
	}
}

func (ss *supportService) waitLoaded(deadline int64) bool {
	return waitClosed(ss.l.ctx, ss.loaded, deadline)
}

// handle runs one request.
func (ss *supportService) handle(f protocol.PeerFrame) protocol.PeerFrame {
	req := f.Support
	if req == nil {
		req = &protocol.SupportPeer{}
	}
	switch f.Op {
	case protocol.SupportOpen:
		return ss.open(f.User, f.Conv, req)
	case protocol.SupportPost:
		return ss.post(f)
	case protocol.SupportCloseOp:
		return ss.close(f.User, f.Conv)
	case protocol.SupportTransfer:
		return ss.transfer(f.User, f.Conv, req.To)
	case protocol.SupportStatus:
		return ss.status(f.User, req.Status)
	case protocol.SupportList:
		return ss.list(f.User)
	case protocol.SupportVisitor:
		return ss.visitor(f.User, req.Visitor)
	}
	return fail(protocol.CodeBadRequest, "unknown support operation %q", f.Op)
}

func (ss *supportService) storeFail(err error) protocol.PeerFrame {
	if errors.Is(err, history.ErrFenced) {
		return fail(protocol.CodeUnavailable, "the cluster is changing leader; retry shortly")
	}
	return fail(protocol.CodeUnavailable, "customer service cannot store this now; retry shortly")
}

// isAgent reports whether user is an agent (enabled or not).
func (ss *supportService) agent(user string) (support.Agent, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.st.Agent(user)
}

// withPlace is c's info with its place in the queue and its latest seq.
func (ss *supportService) withPlace(ctx context.Context, c support.Conv) protocol.SupportConv {
	info := c.Info()
	ss.mu.Lock()
	info.Position = ss.st.Position(c.ID)
	if info.Position > 0 {
		info.Waiting = ss.st.QueueLen()
		ss.pushed[c.ID] = info.Position
	}
	ss.mu.Unlock()
	if top, err := ss.l.d.Messages.Latest(ctx, []string{c.ID}); err == nil {
		info.Latest = top[c.ID]
	}
	return info
}

// open opens visitor's next conversation, or returns the open one; with
// resume, it opens none and answers resume as closed when none is open.
func (ss *supportService) open(visitor, resume string, req *protocol.SupportPeer) protocol.PeerFrame {
	l := ss.l
	if !protocol.ValidVisitor(visitor) {
		return fail(protocol.CodeForbidden, "only visitors open support conversations")
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	ss.change.Lock()
	ss.mu.Lock()
	c, exists := ss.st.OpenOf(visitor)
	ss.mu.Unlock()
	if !exists {
		// The newest conversation MongoDB holds, not only what this term
		// knows: a deposed leader, in the moment before it learnt so, may
		// have opened one this term never loaded. An open one is adopted
		// (written as this term's), so the visitor keeps what it was told.
		newest, err := l.d.Support.VisitorConvs(ctx, visitor, 1)
		if err != nil {
			ss.change.Unlock()
			l.dropLog.Warn().Err(err).Str("visitor", visitor).Msg("cannot read a visitor's conversations")
			return ss.storeFail(err)
		}
		var last int64
		ss.mu.Lock()
		last, _ = ss.st.Last(visitor)
		ss.mu.Unlock()
		switch {
		case resume != "" && !(len(newest) > 0 && newest[0].Open() && newest[0].N >= last):
			ss.change.Unlock()
			closed := protocol.SupportConv{Conv: resume, Visitor: visitor, State: protocol.SupportClosed}
			for _, c := range newest {
				if c.ID == resume {
					closed = c.Info()
				}
			}
			return protocol.PeerFrame{Support: &protocol.SupportPeer{Conv: &closed}}
		case len(newest) > 0 && newest[0].Open() && newest[0].N >= last:
			c = newest[0]
			if c.State == protocol.SupportAssigned {
				c.State, c.Agent, c.Queued, c.Front = protocol.SupportQueued, "", now(), true
			}
			l.log.Warn().Str("conv", c.ID).Msg("adopting a support conversation this term did not load (opened by a deposed leader)")
		default:
			if len(newest) > 0 {
				last = max(last, newest[0].N)
			}
			c = support.OpenNew(visitor, req.Name, req.Channel, last, now())
		}
		if err := ss.save(c); err != nil {
			ss.change.Unlock()
			return ss.storeFail(err)
		}
		ss.apply(c)
		l.log.Info().Str("conv", c.ID).Str("channel", c.Channel).Msg("support conversation opened")
	}
	ss.change.Unlock()
	if err := l.d.Convs.AddConv(ctx, visitor, c.ID); err != nil {
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	ss.poke()
	info := ss.withPlace(ctx, c)
	return protocol.PeerFrame{Support: &protocol.SupportPeer{Conv: &info}}
}

// allow takes one of visitor's message allowance.
func (ss *supportService) allow(visitor string) bool {
	t := time.Now()
	b, ok := ss.tokens[visitor]
	if !ok {
		if len(ss.tokens) > 100_000 {
			clear(ss.tokens)
		}
		b = &bucket{tokens: 2 * visitorRate, last: t}
		ss.tokens[visitor] = b
	}
	b.tokens = min(2*visitorRate, b.tokens+t.Sub(b.last).Seconds()*visitorRate)
	b.last = t
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// post stores a message of a support conversation and hands it to the
// other side: the visitor's to the agent holding it (if any), the agent's
// to the visitor.
func (ss *supportService) post(f protocol.PeerFrame) protocol.PeerFrame {
	l := ss.l
	if f.Message == nil {
		return fail(protocol.CodeBadRequest, "post without a message")
	}
	lk := ss.lock(f.Conv)
	lk.Lock()
	defer lk.Unlock()
	ss.mu.Lock()
	c, ok := ss.st.Conv(f.Conv)
	allowed := !ok || f.User != c.Visitor || ss.allow(f.User)
	ss.mu.Unlock()
	switch {
	case !ok:
		return fail(protocol.CodeConflict, "conversation %s is not open: send support to open one", f.Conv)
	case f.User != c.Visitor && f.User != c.Agent:
		return fail(protocol.CodeForbidden, "conversation %s is not yours", f.Conv)
	case !allowed:
		return protocol.PeerFrame{Code: protocol.CodeRateLimited, Error: fmt.Sprintf("a visitor sends at most %d messages a second", visitorRate), RetryAfter: 1}
	}
	m := *f.Message
	m.From, m.Conv, m.Room = f.User, c.ID, ""
	members := []string{c.Visitor}
	var to string
	if f.User == c.Visitor {
		to = c.Agent
	} else {
		to = c.Visitor
	}
	m.To = to
	if c.Agent != "" {
		members = append(members, c.Agent)
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	st, err := l.d.Journal.Append(ctx, m, f.ClientMsgID, members)
	if err != nil {
		l.log.Warn().Err(err).Str("conv", c.ID).Msg("cannot store a support message")
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	stored := st.Message
	if !st.Dup && to != "" {
		p := parkedPush{push: st.Push, conv: stored.Conv, seq: stored.Seq}
		l.parked.route(to, p, l.rooms.reg.Nodes, l.pushParked)
	}
	return protocol.PeerFrame{Message: &stored, Dup: st.Dup}
}

// close closes conversation id for user, its visitor or its agent.
func (ss *supportService) close(user, id string) protocol.PeerFrame {
	l := ss.l
	lk := ss.lock(id)
	lk.Lock()
	defer lk.Unlock()
	ss.change.Lock()
	defer ss.change.Unlock()
	ss.mu.Lock()
	c, err := ss.st.Close(id, user, now())
	ss.mu.Unlock()
	switch {
	case errors.Is(err, support.ErrUnknown):
		v, _, _ := protocol.ParseSupportConv(id)
		if v == user {
			return protocol.PeerFrame{Support: &protocol.SupportPeer{Closed: true}}
		}
		if _, isAgent := ss.agent(user); isAgent {
			return protocol.PeerFrame{Support: &protocol.SupportPeer{Closed: true}}
		}
		return fail(protocol.CodeForbidden, "conversation %s is not yours", id)
	case err != nil:
		return fail(protocol.CodeForbidden, "conversation %s is not yours", id)
	}
	if err := ss.save(c); err != nil {
		return ss.storeFail(err)
	}
	agent := ""
	if old, ok := ss.conv(id); ok {
		agent = old.Agent
	}
	ss.apply(c)
	l.m.SupportClosed.Inc()
	l.log.Info().Str("conv", id).Str("by", user).Msg("support conversation closed")
	push := protocol.ClosedPush{Conv: id, By: user}
	ss.pushTo(c.Visitor, protocol.PushClosed, push)
	if agent != "" {
		ss.pushTo(agent, protocol.PushClosed, push)
	}
	ss.poke()
	info := c.Info()
	info.Agent = agent
	return protocol.PeerFrame{Support: &protocol.SupportPeer{Conv: &info}}
}

func (ss *supportService) conv(id string) (support.Conv, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.st.Conv(id)
}

// transfer hands conversation id from agent user to agent to.
func (ss *supportService) transfer(user, id, to string) protocol.PeerFrame {
	l := ss.l
	if _, ok := ss.agent(user); !ok {
		return fail(protocol.CodeForbidden, "%s is not an agent", user)
	}
	if to == user {
		return fail(protocol.CodeBadRequest, "the conversation is yours already")
	}
	lk := ss.lock(id)
	lk.Lock()
	defer lk.Unlock()
	ss.change.Lock()
	defer ss.change.Unlock()
	ss.mu.Lock()
	c, err := ss.st.Transfer(id, user, to, now())
	ss.mu.Unlock()
	switch {
	case errors.Is(err, support.ErrUnknown):
		return fail(protocol.CodeConflict, "conversation %s is not open", id)
	case errors.Is(err, support.ErrNotYours):
		return fail(protocol.CodeForbidden, "conversation %s is not assigned to you", id)
	case errors.Is(err, support.ErrNotAgent):
		return fail(protocol.CodeNotFound, "%s is not an agent", to)
	case errors.Is(err, support.ErrNotReady):
		return fail(protocol.CodeConflict, "agent %s is away or disabled", to)
	case errors.Is(err, support.ErrNoCapacity):
		return fail(protocol.CodeConflict, "agent %s has no free capacity", to)
	case err != nil:
		return fail(protocol.CodeBadRequest, "%v", err)
	}
	if err := ss.save(c); err != nil {
		return ss.storeFail(err)
	}
	ss.apply(c)
	ss.mu.Lock()
	ss.st.Assigned(to, c.Assigned)
	ss.mu.Unlock()
	l.m.SupportAssigned.Inc()
	l.log.Info().Str("conv", id).Str("from", user).Str("to", to).Msg("support conversation transferred")
	ss.pushTo(user, protocol.PushUnassigned, protocol.UnassignedPush{Conv: id, Reason: "transferred", To: to})
	ss.announce(c, user)
	info := c.Info()
	return protocol.PeerFrame{Support: &protocol.SupportPeer{Conv: &info}}
}

// status sets agent user available or away ("" changes nothing) and
// returns its state. Away puts what it holds back in the queue.
func (ss *supportService) status(user, status string) protocol.PeerFrame {
	l := ss.l
	if status != "" && status != protocol.AgentAvailable && status != protocol.AgentAway {
		return fail(protocol.CodeBadRequest, "status must be %q or %q", protocol.AgentAvailable, protocol.AgentAway)
	}
	ss.change.Lock()
	a, ok := ss.agent(user)
	if !ok {
		ss.change.Unlock()
		return fail(protocol.CodeForbidden, "%s is not an agent", user)
	}
	if status != "" && status != a.Status {
		ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
		err := l.d.Support.SaveAgentStatus(ctx, user, status)
		cancel()
		if err != nil {
			ss.change.Unlock()
			l.dropLog.Warn().Err(err).Str("agent", user).Msg("cannot store an agent's status")
			return ss.storeFail(err)
		}
		a.Status = status
		ss.mu.Lock()
		ss.st.PutAgent(a)
		ss.mu.Unlock()
		l.log.Info().Str("agent", user).Str("status", status).Msg("agent status")
	}
	ss.change.Unlock()
	if a.Status == protocol.AgentAway {
		ss.requeueAll(user, "requeued")
	}
	ss.poke()
	st := ss.agentState(user)
	return protocol.PeerFrame{Support: &protocol.SupportPeer{Agent: &st}}
}

func (ss *supportService) agentState(user string) protocol.AgentState {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	a, _ := ss.st.Agent(user)
	return protocol.AgentState{Agent: user, Status: a.Status, Capacity: a.Capacity, Open: ss.st.Load(user), Queue: ss.st.QueueInfo(now())}
}

// list returns the conversations agent user holds, with their latest seq.
func (ss *supportService) list(user string) protocol.PeerFrame {
	l := ss.l
	if _, ok := ss.agent(user); !ok {
		return fail(protocol.CodeForbidden, "%s is not an agent", user)
	}
	ss.mu.Lock()
	held := ss.st.Held(user)
	ss.mu.Unlock()
	ids := make([]string, len(held))
	out := make([]protocol.SupportConv, len(held))
	for i, c := range held {
		ids[i] = c.ID
		out[i] = c.Info()
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	if tops, err := l.d.Messages.Latest(ctx, ids); err == nil {
		for i := range out {
			out[i].Latest = tops[out[i].Conv]
		}
	}
	st := ss.agentState(user)
	return protocol.PeerFrame{Support: &protocol.SupportPeer{Convs: out, Agent: &st}}
}

// visitor returns visitor's conversations, newest first, for agent user.
func (ss *supportService) visitor(user, visitor string) protocol.PeerFrame {
	l := ss.l
	if _, ok := ss.agent(user); !ok {
		return fail(protocol.CodeForbidden, "%s is not an agent", user)
	}
	if !protocol.ValidVisitor(visitor) {
		return fail(protocol.CodeBadRequest, "invalid visitor id")
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	convs, err := l.d.Support.VisitorConvs(ctx, visitor, protocol.MaxSupportConvs)
	if err != nil {
		return ss.storeFail(err)
	}
	out := make([]protocol.SupportConv, len(convs))
	ids := make([]string, len(convs))
	for i, c := range convs {
		out[i] = c.Info()
		ids[i] = c.ID
	}
	if tops, err := l.d.Messages.Latest(ctx, ids); err == nil {
		for i := range out {
			out[i].Latest = tops[out[i].Conv]
		}
	}
	return protocol.PeerFrame{Support: &protocol.SupportPeer{Convs: out}}
}

// Snapshot is the whole state at one instant; ok is false until it is
// loaded.
func (ss *supportService) snapshot() (protocol.SupportSnapshot, bool) {
	select {
	case <-ss.loaded:
	default:
		return protocol.SupportSnapshot{}, false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := protocol.SupportSnapshot{Node: ss.l.id, Epoch: ss.l.epoch, Taken: now(),
		Queue: []protocol.SupportConv{}, Held: []protocol.SupportConv{}, Agents: []protocol.AgentSnapshot{}}
	for i, c := range ss.st.Queue() {
		info := c.Info()
		info.Position, info.Waiting = i+1, ss.st.QueueLen()
		out.Queue = append(out.Queue, info)
	}
	holders := ss.st.Holders()
	for _, a := range ss.st.Agents() {
		out.Agents = append(out.Agents, protocol.AgentSnapshot{Agent: a.Name, Capacity: a.Capacity, Disabled: a.Disabled,
			Status: a.Status, Online: ss.online(a.Name), Open: ss.st.Load(a.Name)})
		holders = slices.DeleteFunc(holders, func(h string) bool { return h == a.Name })
	}
	for _, h := range holders { // removed by the operator, still holding
		out.Agents = append(out.Agents, protocol.AgentSnapshot{Agent: h, Disabled: true, Online: ss.online(h), Open: ss.st.Load(h)})
	}
	for _, a := range out.Agents {
		for _, c := range ss.st.Held(a.Agent) {
			out.Held = append(out.Held, c.Info())
		}
	}
	return out, true
}

// restoreConvs puts every open conversation back in its visitor's and its
// agent's conversation lists, after Redis lost them.
func (ss *supportService) restoreConvs(ctx context.Context) error {
	if ss == nil || ss.l.d.Support == nil {
		return nil
	}
	select {
	case <-ss.loaded:
	default:
		return nil
	}
	ss.mu.Lock()
	var pairs [][2]string
	for _, c := range ss.st.Queue() {
		pairs = append(pairs, [2]string{c.Visitor, c.ID})
	}
	for _, a := range ss.st.Holders() {
		for _, c := range ss.st.Held(a) {
			pairs = append(pairs, [2]string{c.Visitor, c.ID}, [2]string{a, c.ID})
		}
	}
	ss.mu.Unlock()
	for _, p := range pairs {
		if err := ss.l.d.Convs.AddConv(ctx, p[0], p[1]); err != nil {
			return err
		}
	}
	return nil
}

// maxWaits bounds the waits the summary's quantiles are taken over.
const maxWaits = 1000

// summary is what the leader publishes of customer service with the node
// list; nil before it is loaded (or without a store).
func (ss *supportService) summary() *directory.Support {
	if ss == nil || ss.l.d.Support == nil {
		return nil
	}
	select {
	case <-ss.loaded:
	default:
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	q := ss.st.QueueInfo(now())
	held, capacity, ready := ss.st.Utilisation(ss.online)
	out := &directory.Support{Queue: q.Length, OldestWait: q.OldestWait, AgentsReady: ready,
		Agents: len(ss.st.Agents()), Assignments: ss.assignments}
	for _, a := range ss.st.Holders() {
		out.Assigned += ss.st.Load(a)
	}
	if capacity > 0 {
		out.Utilisation = float64(held) / float64(capacity)
	}
	if n := len(ss.waits); n > 0 {
		w := slices.Clone(ss.waits)
		slices.Sort(w)
		out.WaitP50, out.WaitP99 = w[(n-1)/2], w[min(n-1, n*99/100)]
	}
	return out
}
