package node

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/cluster"
	"chatcluster/directory"
	"chatcluster/peerlink"
	"chatcluster/protocol"
)

// leadership is this node's term as leader: its links to every other node
// and the load they report.
type leadership struct {
	s     *Server
	epoch int64
	since time.Time
	ctx   context.Context
	stopF context.CancelFunc
	// wg counts the goroutines of this term (goTerm); stop waits for
	// them, so two terms of this node never run at once.
	wg    sync.WaitGroup
	wake  chan struct{} // publish now
	rooms *roomService
	// parked holds pushes for recipients the leader cannot place yet
	// (the server's: it outlives the term).
	parked *parking
	// busy says the term cannot hand messages on as fast as they come
	// (overloadLoop): nodes refuse new messages while it lasts.
	busy atomic.Bool
	// term is this leadership's count among the cluster's leaderships
	// (cluster.ClaimTerm), for display; 0 until counted. Fencing uses
	// the epoch, never the term.
	term atomic.Int64

	// linked is closed once this term has a link to every member (or
	// linkWait has passed): frames queued before the term are then
	// handed over, rather than dropped for want of a link.
	linked     chan struct{}
	linkedOnce sync.Once
	linkTimer  *time.Timer

	mu      sync.Mutex
	members map[string]cluster.Member     // guarded by mu
	dialers map[string]context.CancelFunc // guarded by mu
	links   map[string]memberLink         // guarded by mu
	loads   map[string]protocol.PeerFrame // last load frame per node; guarded by mu

	// Frames for a member whose link is not up yet (a new term, or a link
	// being re-dialled) wait here, bounded, for up to linkWait since the
	// member had no link, and go out first when the link comes up.
	held     map[string][][]byte  // guarded by mu
	unlinked map[string]time.Time // since when a member has had no link; guarded by mu
}

// memberLink is what a term needs of its link to a member (a
// peerlink.Link, which dial runs): queueing without waiting, how full the
// queue is, and closing.
type memberLink interface {
	Enqueue(b []byte) bool
	Queued() int
	Cap() int
	Close()
	Closed() bool
}

// watchCluster applies cluster state changes in order: membership,
// epochs, and starting or stopping leader duties.
func (s *Server) watchCluster() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case st, ok := <-s.cluster.Updates():
			if !ok {
				return
			}
			s.applyState(st)
		}
	}
}

func (s *Server) applyState(st cluster.State) {
	m := make(map[string]cluster.Member, len(st.Members))
	for _, mb := range st.Members {
		m[mb.ID] = mb
	}
	s.members.Store(&m)
	s.raiseEpoch(st.Leader.Epoch)
	if st.Connected {
		s.m.ZKConnected.Set(1)
	} else {
		s.m.ZKConnected.Set(0)
	}
	if st.Leader != s.lastLeader {
		s.lastLeader = st.Leader
		if st.Leader.ID != "" {
			s.m.LeaderChanges.Inc()
		}
	}

	r := s.routes
	r.mu.Lock()
	lead := r.lead
	if lead != nil && (!st.IsLeader || lead.epoch != st.Leader.Epoch) {
		r.lead = nil
		r.changedLocked()
		r.mu.Unlock()
		s.log.Info().Int64("epoch", lead.epoch).Bool("connected", st.Connected).Msg("leader duties stopped")
		lead.stop()
		r.mu.Lock()
		lead = nil
	}
	if lead == nil && st.IsLeader {
		lead = s.newLeadership(st.Leader.Epoch)
		r.lead = lead
		r.changedLocked()
		s.m.ElectionsWon.Inc()
		s.log.Info().Int64("epoch", lead.epoch).Msg("leader duties started")
	}
	link := r.link
	r.mu.Unlock()
	if lead != nil {
		lead.setMembers(st.Members)
	}
	if link != nil && st.Leader.ID != "" && link.Remote() != st.Leader.ID {
		link.Log().Info().Str("leader", st.Leader.ID).Msg("leader changed; closing link to the old one")
		r.dropLink(link)
	}
}

func (s *Server) newLeadership(epoch int64) *leadership {
	ctx, cancel := context.WithCancel(s.ctx)
	l := &leadership{
		s: s, epoch: epoch, since: time.Now(), ctx: ctx, stopF: cancel,
		wake:    make(chan struct{}, 1),
		members: map[string]cluster.Member{}, dialers: map[string]context.CancelFunc{},
		links: map[string]memberLink{}, loads: map[string]protocol.PeerFrame{},
		held: map[string][][]byte{}, unlinked: map[string]time.Time{},
	}
	l.linked = make(chan struct{})
	l.linkTimer = time.AfterFunc(linkWait, l.markLinked)
	l.parked = s.parked
	l.rooms = newRoomService(l)
	// This node's own sessions, as every other node sends when it links.
	for _, b := range s.rosterFrames(epoch) {
		if f, err := protocol.DecodePeer(b); err == nil {
			l.rooms.roster(s.cfg.ID, f)
		}
	}
	l.rooms.start()
	l.goTerm(l.overloadLoop)
	l.goTerm(l.publishLoop)
	l.goTerm(l.hotWordsLoop)
	l.goTerm(l.termLoop)
	return l
}

// termLoop counts this leadership's term in ZooKeeper, retrying while
// ZooKeeper fails, and has the node list published with it. It ends when
// counted, when the term is over, or when the node is no longer the
// leader of this epoch.
func (l *leadership) termLoop() {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
		term, err := l.s.cluster.ClaimTerm(ctx, l.epoch)
		cancel()
		switch {
		case err == nil:
			l.term.Store(term)
			select {
			case l.wake <- struct{}{}:
			default:
			}
			return
		case l.ctx.Err() != nil:
			return
		case errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrClosed):
			l.s.log.Info().Int64("epoch", l.epoch).Err(err).Msg("leader term not counted")
			return
		}
		l.s.log.Debug().Err(err).Int64("epoch", l.epoch).Dur("retry_in", backoff).Msg("cannot count the leader term yet")
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// linkWait bounds how long a new term holds back queued frames while it
// links to the members.
const linkWait = 2 * time.Second

func (l *leadership) markLinked() { l.linkedOnce.Do(func() { close(l.linked) }) }

// checkLinked closes linked when every member has a link. l.mu held.
func (l *leadership) checkLinkedLocked() {
	for id := range l.members {
		if id != l.s.cfg.ID && l.links[id] == nil {
			return
		}
	}
	l.markLinked()
}

// goTerm runs f in a goroutine of this term: the server owns it, and stop
// waits for it. f must return once l.ctx ends.
func (l *leadership) goTerm(f func()) bool {
	l.wg.Add(1)
	if !l.s.goAttach(func() { defer l.wg.Done(); f() }) {
		l.wg.Done()
		return false
	}
	return true
}

// stop ends the term and waits until every goroutine of it has returned
// (a link being dialled or closing takes a few seconds at most).
func (l *leadership) stop() {
	l.linkTimer.Stop()
	l.stopF()
	l.mu.Lock()
	for _, link := range l.links {
		link.Close()
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	for waited := 5 * time.Second; ; waited += 5 * time.Second {
		select {
		case <-done:
			return
		case <-time.After(5 * time.Second):
			l.s.log.Warn().Int64("epoch", l.epoch).Dur("waited", waited).Msg("the ended leader term still has goroutines running; waiting for them")
		}
	}
}

// setMembers starts a dialer for every new member and stops those of
// members that left.
func (l *leadership) setMembers(ms []cluster.Member) {
	// The users of nodes that left are offline; told outside mu, which
	// sending takes.
	for _, id := range l.applyMembers(ms) {
		l.rooms.nodeGone(id)
	}
}

// applyMembers does the work of setMembers under mu and returns the ids
// of the nodes that left.
func (l *leadership) applyMembers(ms []cluster.Member) (gone []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return nil
	}
	next := make(map[string]cluster.Member, len(ms))
	for _, m := range ms {
		next[m.ID] = m
	}
	for id, cancel := range l.dialers {
		if nm, ok := next[id]; !ok || nm != l.members[id] {
			cancel()
			delete(l.dialers, id)
		}
	}
	for id := range l.members {
		if _, ok := next[id]; !ok && id != l.s.cfg.ID {
			gone = append(gone, id)
		}
	}
	l.members = next
	for _, id := range gone {
		delete(l.held, id)
		delete(l.unlinked, id)
	}
	for id, m := range next {
		if id == l.s.cfg.ID {
			continue
		}
		if _, ok := l.links[id]; !ok {
			if _, ok := l.unlinked[id]; !ok {
				l.unlinked[id] = time.Now()
			}
		}
		if _, ok := l.dialers[id]; !ok {
			ctx, cancel := context.WithCancel(l.ctx)
			l.dialers[id] = cancel
			l.goTerm(func() { l.dial(ctx, m) })
		}
	}
	l.checkLinkedLocked()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return gone
}

// dial keeps a link open to m while this term lasts and m is a member.
func (l *leadership) dial(ctx context.Context, m cluster.Member) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		link, err := peerlink.Dial(l.s.cfg.Secret, l.s.cfg.ID, m.ID, m.Peer, l.epoch, 3*time.Second,
			peerlink.Options{Queue: l.s.cfg.PeerQueue, Log: l.s.log, Busy: l.busy.Load})
		if err != nil {
			l.s.log.Warn().Err(err).Str("peer", m.ID).Msg("cannot link to node; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		l.mu.Lock()
		l.links[m.ID] = link
		for _, b := range l.held[m.ID] {
			if link.Enqueue(b) {
				l.s.m.LeaderFramesOut.Inc()
			} else {
				l.s.m.LeaderFramesDropped.Inc()
			}
		}
		delete(l.held, m.ID)
		delete(l.unlinked, m.ID)
		l.checkLinkedLocked()
		l.mu.Unlock()
		link.Log().Info().Msg("linked to node")
		stopOnCancel := context.AfterFunc(ctx, link.Close)
		if l.goTerm(func() { link.WriteLoop(l.s.cfg.WriteTimeout) }) {
			link.ReadLoop(func(f protocol.PeerFrame) { l.onNodeFrame(link, m, f) })
		} else {
			link.Drop()
		}
		stopOnCancel()
		link.Close()
		<-link.Done()
		l.mu.Lock()
		if l.links[m.ID] == link {
			delete(l.links, m.ID)
			l.unlinked[m.ID] = time.Now()
		}
		l.mu.Unlock()
	}
}

// onNodeFrame handles a frame node m sent up on link. Link read loop only.
//
// A numbered frame (Up) is acknowledged once handled. One this node
// handled before as leader (the node sends again what a lost link did not
// acknowledge) is only acknowledged again. A term that has stopped leaves
// what it still reads alone, unacknowledged: the node hands it to the
// next link, and this node's next term or the next leader handles it once.
func (l *leadership) onNodeFrame(link *peerlink.Link, m cluster.Member, f protocol.PeerFrame) {
	if f.Up == 0 {
		l.handle(m.ID, f)
		return
	}
	if l.ctx.Err() != nil {
		return
	}
	if !l.s.ups.fresh(m, f.Up) {
		l.s.m.PeerResent.Inc()
		link.SetHandled(f.Up)
		return
	}
	l.handle(m.ID, f)
	if l.ctx.Err() != nil {
		// The term ended while the frame was handled: what it sent may
		// have found its link closed. Unacknowledged, the frame goes to
		// the next term, and a push that did go out is not shown twice.
		return
	}
	l.s.ups.done(m, f.Up)
	link.SetHandled(f.Up)
}

// upMarks remembers, per run of every node, the highest numbered frame
// (PeerFrame.Up) this node handled as leader, across its terms, so that
// a frame sent again after a lost link is not handled twice.
type upMarks struct {
	mu sync.Mutex
	m  map[string]upMark // by node id; guarded by mu
}

type upMark struct {
	run int64
	up  uint64
}

// fresh reports whether frame up of member m is not yet handled.
func (u *upMarks) fresh(m cluster.Member, up uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	mk, ok := u.m[m.ID]
	return !ok || mk.run != m.Run || up > mk.up
}

// done records frame up of member m as handled.
func (u *upMarks) done(m cluster.Member, up uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]upMark{}
	}
	if mk, ok := u.m[m.ID]; !ok || mk.run != m.Run || up > mk.up {
		u.m[m.ID] = upMark{run: m.Run, up: up}
	}
}

// handle runs a frame from node from (this node included). It never
// blocks on the network.
func (l *leadership) handle(from string, f protocol.PeerFrame) {
	l.s.m.LeaderFrameIn(f.Type).Inc()
	switch f.Type {
	case protocol.PeerRoute, protocol.PeerKick:
		l.forward(&f)
	case protocol.PeerRoom:
		l.rooms.submit(from, f)
	case protocol.PeerOnline:
		l.rooms.online(from, f)
	case protocol.PeerRoster:
		l.rooms.roster(from, f)
	case protocol.PeerLoad:
		l.mu.Lock()
		l.loads[from] = f
		l.mu.Unlock()
	default:
		l.s.log.Warn().Str("peer", from).Str("type", f.Type).Msg("unexpected peer frame from node")
	}
}

// forward sends a route or kick frame on to its destination node. A route
// without a destination goes to wherever the recipients are online.
func (l *leadership) forward(f *protocol.PeerFrame) {
	if f.Type == protocol.PeerRoute && f.Dest == "" {
		l.route(f)
		return
	}
	if f.Dest == l.s.cfg.ID {
		if f.Type == protocol.PeerKick {
			for _, u := range f.Users {
				l.s.kickLocal(u, f.Conn)
			}
			return
		}
		l.s.deliverLocal(slices.Values(f.Users), f.Message)
		return
	}
	out := protocol.PeerFrame{Type: protocol.PeerDeliver, Recipients: protocol.JoinNames(f.Users), Message: f.Message}
	if f.Type == protocol.PeerKick {
		out = protocol.PeerFrame{Type: protocol.PeerKick, Users: f.Users, Conn: f.Conn}
	}
	l.send(f.Dest, &out)
}

// route hands a message's push to its recipients' nodes, as the nodes'
// logins and rosters place them. A recipient not placed yet (a login the
// leader has not heard of, or a node whose roster is still on its way after
// a new term began) is parked for a moment (parking) and gets the push if
// it appears meanwhile; otherwise the message waits for their sync.
func (l *leadership) route(f *protocol.PeerFrame) {
	p := parkedPush{push: f.Push, conv: f.Conv, seq: f.Seq}
	if len(p.push) == 0 {
		if f.Message == nil {
			return
		}
		p = parkedPush{push: encodeMessage(*f.Message), conv: f.Message.Conv, seq: f.Message.Seq}
	}
	for _, u := range f.Users {
		l.parked.route(u, p, l.rooms.reg.Where, l.pushParked)
	}
}

func (l *leadership) pushParked(node, user string, p parkedPush) {
	l.pushMessage(node, []string{user}, p.conv, p.seq, p.push)
}

// pushMessage hands the encoded push of message seq of conv to users on
// node.
func (l *leadership) pushMessage(node string, users []string, conv string, seq int64, push []byte) {
	if node == l.s.cfg.ID {
		l.s.deliverPushed(slices.Values(users), conv, seq, push)
		return
	}
	l.send(node, &protocol.PeerFrame{Type: protocol.PeerPush, Recipients: protocol.JoinNames(users), Push: push, Conv: conv, Seq: seq})
}

// appeared delivers what was parked for user, now online.
func (l *leadership) appeared(user string) {
	l.parked.appeared(user, l.rooms.reg.Where, l.pushParked)
}

// overloadEvery is how often a leader checks whether it is overloaded;
// overloadFrames is how many frames queued on a link to a node make it so
// (unless three quarters of the queue is less), a fraction of a second of
// traffic: the node's pushes are then late already.
const (
	overloadEvery  = 50 * time.Millisecond
	overloadFrames = 4096
)

// overloadLoop keeps busy up to date while the term lasts: the leader is
// overloaded while a link's queue holds overloadFrames (its node does not
// take frames as fast as they come: beyond that they would be dropped, and
// their recipients would depend on sync), or half the parking is taken.
// Nodes then answer new messages 503 with a retryAfter instead of
// acknowledging what the cluster cannot deliver.
func (l *leadership) overloadLoop() {
	t := time.NewTicker(overloadEvery)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			l.busy.Store(false)
			return
		case <-t.C:
		}
		busy := l.parked.n.Load() > parkMax/2
		l.mu.Lock()
		for _, link := range l.links {
			if link.Queued() > min(link.Cap()*3/4, overloadFrames) {
				busy = true
			}
		}
		l.mu.Unlock()
		if busy != l.busy.Load() {
			l.busy.Store(busy)
			l.s.m.Overloaded.Set(b2f(busy))
			if busy {
				l.s.log.Warn().Msg("leader overloaded: the nodes refuse new messages for a moment")
			} else {
				l.s.log.Info().Msg("leader keeps up again")
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// send queues f for node, stamped with this term. Recipients it cannot
// reach catch up by sync.
func (l *leadership) send(node string, f *protocol.PeerFrame) {
	f.Epoch, f.From = l.epoch, l.s.cfg.ID
	b, err := protocol.EncodePeer(f)
	if err != nil {
		l.s.log.Error().Err(err).Str("type", f.Type).Msg("cannot encode peer frame")
		return
	}
	l.mu.Lock()
	link := l.links[node]
	if link == nil {
		if since, ok := l.unlinked[node]; ok && time.Since(since) < linkWait && len(l.held[node]) < l.s.cfg.PeerQueue {
			l.held[node] = append(l.held[node], b)
			l.mu.Unlock()
			return
		}
	}
	l.mu.Unlock()
	if link == nil || !link.Enqueue(b) {
		l.s.m.LeaderFramesDropped.Inc()
		l.s.log.Warn().Str("dest", node).Str("type", f.Type).Msg("no usable link to node; frame dropped")
		return
	}
	l.s.m.LeaderFramesOut.Inc()
}

// reply answers request f.Req of node to.
func (l *leadership) reply(to string, f protocol.PeerFrame) {
	f.Type = protocol.PeerReply
	if to == l.s.cfg.ID {
		f.Epoch, f.From = l.epoch, l.s.cfg.ID
		l.s.routes.onReply(f)
		return
	}
	l.send(to, &f)
}

// publishLoop writes the live-node list to Redis for the gateway, at once
// on every membership change and every directory.PublishEvery.
func (l *leadership) publishLoop() {
	t := time.NewTicker(directory.PublishEvery)
	defer t.Stop()
	for {
		l.publish()
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		case <-l.wake:
		}
	}
}

func (l *leadership) publish() {
	l.mu.Lock()
	v := directory.View{Leader: l.s.cfg.ID, Epoch: l.epoch, Term: l.term.Load(), LeaderSince: l.since.UnixMilli(), Updated: time.Now().UnixMilli()}
	for id, m := range l.members {
		n := directory.Node{ID: id, WS: m.WS}
		if link := l.links[id]; link != nil && !link.Closed() || id == l.s.cfg.ID {
			n.Linked = true
		}
		if id == l.s.cfg.ID {
			n.Connections, n.Started, n.Messages = l.s.local.Len(), l.s.started.UnixMilli(), l.s.messagesIn.Load()
		} else if ld, ok := l.loads[id]; ok {
			n.Connections, n.Started, n.Messages = ld.Connections, ld.Started, ld.Messages
		}
		v.Nodes = append(v.Nodes, n)
	}
	l.mu.Unlock()
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	ctx, cancel := context.WithTimeout(l.ctx, time.Second)
	defer cancel()
	if n, err := l.s.writer.Backlog(ctx); err == nil {
		v.Backlog = n
	}
	switch err := l.s.dir.Publish(ctx, v); {
	case errors.Is(err, directory.ErrFenced):
		l.s.log.Warn().Int64("epoch", l.epoch).Msg("a newer leader published the node list; this term is over")
	case err != nil && l.ctx.Err() == nil:
		l.s.log.Warn().Err(err).Msg("cannot publish the node list")
	}
}
