package leader

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/cluster"
	"chatcluster/directory"
	"chatcluster/metrics"
	"chatcluster/peerlink"
	"chatcluster/protocol"
)

// Term is this node's term as leader: its links to every other node and
// the load they report, the routing of what the nodes send up, the room
// service, and the loops that publish the node list, count the term and
// reset the hot words. Start begins one; Stop ends it.
//
// What it needs of its node goes through node (Node); everything else it
// was started with is in d.
type Term struct {
	node  Node
	d     Deps
	id    string         // d.ID
	log   zerolog.Logger // d.Log
	m     *metrics.Node  // d.Metrics
	epoch int64
	since time.Time
	ctx   context.Context
	stopF context.CancelFunc
	// wg counts the goroutines of this term (goTerm); Stop waits for
	// them, so two terms of this node never run at once.
	wg    sync.WaitGroup
	wake  chan struct{} // publish now
	rooms *roomService
	// parked holds pushes for recipients the leader cannot place yet
	// (the node's, d.Parked: it outlives the term).
	parked *Parking
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

// Start begins the term of epoch, as node, within parent: it loads the
// rooms, takes node's own sessions as its first roster, and starts the
// term's loops. SetMembers then links it to the members. It returns at
// once; the term runs until Stop, or until parent ends.
func Start(parent context.Context, epoch int64, node Node, d Deps) *Term {
	ctx, cancel := context.WithCancel(parent)
	l := &Term{
		node: node, d: d, id: d.ID, log: d.Log, m: d.Metrics,
		epoch: epoch, since: time.Now(), ctx: ctx, stopF: cancel,
		wake:    make(chan struct{}, 1),
		members: map[string]cluster.Member{}, dialers: map[string]context.CancelFunc{},
		links: map[string]memberLink{}, loads: map[string]protocol.PeerFrame{},
		held: map[string][][]byte{}, unlinked: map[string]time.Time{},
	}
	l.linked = make(chan struct{})
	l.linkTimer = time.AfterFunc(linkWait, l.markLinked)
	l.parked = d.Parked
	l.rooms = newRoomService(l)
	// This node's own sessions, as every other node sends when it links.
	for _, b := range node.RosterFrames(epoch) {
		if f, err := protocol.DecodePeer(b); err == nil {
			l.rooms.roster(d.ID, f)
		}
	}
	l.rooms.start()
	l.goTerm(l.overloadLoop)
	l.goTerm(l.publishLoop)
	l.goTerm(l.hotWordsLoop)
	l.goTerm(l.termLoop)
	return l
}

// Epoch is the epoch of the term.
func (l *Term) Epoch() int64 { return l.epoch }

// Busy reports whether the term is overloaded: it cannot hand messages
// on as fast as they come, and nodes refuse new ones while it lasts.
func (l *Term) Busy() bool { return l.busy.Load() }

// Linked is closed once the term has a link to every member, or linkWait
// has passed: what the node queued for the leader before the term may go
// to it then.
func (l *Term) Linked() <-chan struct{} { return l.linked }

// Rooms is how many rooms the term knows.
func (l *Term) Rooms() int { return l.rooms.reg.Len() }

// RestoreConvs puts every room back in its members' conversation lists,
// after Redis lost them; nothing while the rooms are still loading (the
// load does it).
func (l *Term) RestoreConvs(ctx context.Context) error { return l.rooms.restoreConvs(ctx) }

// AddQueues adds to out how many frames wait on the term's link to each
// node, by node id.
func (l *Term) AddQueues(out map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, link := range l.links {
		out[id] += link.Queued()
	}
}

// termLoop counts this leadership's term in ZooKeeper, retrying while
// ZooKeeper fails, and has the node list published with it. It ends when
// counted, when the term is over, or when the node is no longer the
// leader of this epoch.
func (l *Term) termLoop() {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
		term, err := l.d.Cluster.ClaimTerm(ctx, l.epoch)
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
			l.log.Info().Int64("epoch", l.epoch).Err(err).Msg("leader term not counted")
			return
		}
		l.log.Debug().Err(err).Int64("epoch", l.epoch).Dur("retry_in", backoff).Msg("cannot count the leader term yet")
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

func (l *Term) markLinked() { l.linkedOnce.Do(func() { close(l.linked) }) }

// checkLinked closes linked when every member has a link. l.mu held.
func (l *Term) checkLinkedLocked() {
	for id := range l.members {
		if id != l.id && l.links[id] == nil {
			return
		}
	}
	l.markLinked()
}

// goTerm runs f in a goroutine of this term: the node owns it (Node.Go),
// and Stop waits for it. f must return once l.ctx ends.
func (l *Term) goTerm(f func()) bool {
	l.wg.Add(1)
	if !l.node.Go(func() { defer l.wg.Done(); f() }) {
		l.wg.Done()
		return false
	}
	return true
}

// Stop ends the term and waits until every goroutine of it has returned
// (a link being dialled or closing takes a few seconds at most).
func (l *Term) Stop() {
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
			l.log.Warn().Int64("epoch", l.epoch).Dur("waited", waited).Msg("the ended leader term still has goroutines running; waiting for them")
		}
	}
}

// SetMembers starts a dialer for every new member and stops those of
// members that left. The node calls it with every membership it sees,
// in order.
func (l *Term) SetMembers(ms []cluster.Member) {
	// The users of nodes that left are offline; told outside mu, which
	// sending takes.
	for _, id := range l.applyMembers(ms) {
		l.rooms.nodeGone(id)
	}
}

// applyMembers does the work of SetMembers under mu and returns the ids
// of the nodes that left.
func (l *Term) applyMembers(ms []cluster.Member) (gone []string) {
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
		if _, ok := next[id]; !ok && id != l.id {
			gone = append(gone, id)
		}
	}
	l.members = next
	for _, id := range gone {
		delete(l.held, id)
		delete(l.unlinked, id)
	}
	for id, m := range next {
		if id == l.id {
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
func (l *Term) dial(ctx context.Context, m cluster.Member) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		link, err := peerlink.Dial(l.d.Secret, l.id, m.ID, m.Peer, l.epoch, 3*time.Second,
			peerlink.Options{Queue: l.d.PeerQueue, Log: l.log, Busy: l.busy.Load})
		if err != nil {
			l.log.Warn().Err(err).Str("peer", m.ID).Msg("cannot link to node; retrying")
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
				l.m.LeaderFramesOut.Inc()
			} else {
				l.m.LeaderFramesDropped.Inc()
			}
		}
		delete(l.held, m.ID)
		delete(l.unlinked, m.ID)
		l.checkLinkedLocked()
		l.mu.Unlock()
		link.Log().Info().Msg("linked to node")
		stopOnCancel := context.AfterFunc(ctx, link.Close)
		if l.goTerm(func() { link.WriteLoop(l.d.WriteTimeout) }) {
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
func (l *Term) onNodeFrame(link *peerlink.Link, m cluster.Member, f protocol.PeerFrame) {
	if f.Up == 0 {
		l.Handle(m.ID, f)
		return
	}
	if l.ctx.Err() != nil {
		return
	}
	if !l.d.Ups.fresh(m, f.Up) {
		l.m.PeerResent.Inc()
		link.SetHandled(f.Up)
		return
	}
	l.Handle(m.ID, f)
	if l.ctx.Err() != nil {
		// The term ended while the frame was handled: what it sent may
		// have found its link closed. Unacknowledged, the frame goes to
		// the next term, and a push that did go out is not shown twice.
		return
	}
	l.d.Ups.done(m, f.Up)
	link.SetHandled(f.Up)
}

// UpMarks remembers, per run of every node, the highest numbered frame
// (PeerFrame.Up) this node handled as leader, across its terms, so that
// a frame sent again after a lost link is not handled twice.
//
// It belongs to the node (Deps.Ups), not to a term. The zero value is
// ready; safe for concurrent use.
type UpMarks struct {
	mu sync.Mutex
	m  map[string]upMark // by node id; guarded by mu
}

type upMark struct {
	run int64
	up  uint64
}

// fresh reports whether frame up of member m is not yet handled.
func (u *UpMarks) fresh(m cluster.Member, up uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	mk, ok := u.m[m.ID]
	return !ok || mk.run != m.Run || up > mk.up
}

// done records frame up of member m as handled.
func (u *UpMarks) done(m cluster.Member, up uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]upMark{}
	}
	if mk, ok := u.m[m.ID]; !ok || mk.run != m.Run || up > mk.up {
		u.m[m.ID] = upMark{run: m.Run, up: up}
	}
}

// Handle runs a frame from node from (this node included). It never
// blocks on the network. The node hands it what it sends up itself while
// it leads; frames from the other nodes come on their links.
func (l *Term) Handle(from string, f protocol.PeerFrame) {
	l.m.LeaderFrameIn(f.Type).Inc()
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
		l.log.Warn().Str("peer", from).Str("type", f.Type).Msg("unexpected peer frame from node")
	}
}

// forward sends a route or kick frame on to its destination node. A route
// without a destination goes to wherever the recipients are online.
func (l *Term) forward(f *protocol.PeerFrame) {
	if f.Type == protocol.PeerRoute && f.Dest == "" {
		l.route(f)
		return
	}
	if f.Dest == l.id {
		if f.Type == protocol.PeerKick {
			for _, u := range f.Users {
				l.node.KickLocal(u, f.Conn)
			}
			return
		}
		l.node.DeliverLocal(slices.Values(f.Users), f.Message)
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
func (l *Term) route(f *protocol.PeerFrame) {
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

func (l *Term) pushParked(node, user string, p parkedPush) {
	l.pushMessage(node, []string{user}, p.conv, p.seq, p.push)
}

// pushMessage hands the encoded push of message seq of conv to users on
// node.
func (l *Term) pushMessage(node string, users []string, conv string, seq int64, push []byte) {
	if node == l.id {
		l.node.DeliverPushed(slices.Values(users), conv, seq, push)
		return
	}
	l.send(node, &protocol.PeerFrame{Type: protocol.PeerPush, Recipients: protocol.JoinNames(users), Push: push, Conv: conv, Seq: seq})
}

// appeared delivers what was parked for user, now online.
func (l *Term) appeared(user string) {
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
func (l *Term) overloadLoop() {
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
			l.m.Overloaded.Set(b2f(busy))
			if busy {
				l.log.Warn().Msg("leader overloaded: the nodes refuse new messages for a moment")
			} else {
				l.log.Info().Msg("leader keeps up again")
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
func (l *Term) send(node string, f *protocol.PeerFrame) {
	f.Epoch, f.From = l.epoch, l.id
	b, err := protocol.EncodePeer(f)
	if err != nil {
		l.log.Error().Err(err).Str("type", f.Type).Msg("cannot encode peer frame")
		return
	}
	l.mu.Lock()
	link := l.links[node]
	if link == nil {
		if since, ok := l.unlinked[node]; ok && time.Since(since) < linkWait && len(l.held[node]) < l.d.PeerQueue {
			l.held[node] = append(l.held[node], b)
			l.mu.Unlock()
			return
		}
	}
	l.mu.Unlock()
	if link == nil || !link.Enqueue(b) {
		l.m.LeaderFramesDropped.Inc()
		l.log.Warn().Str("dest", node).Str("type", f.Type).Msg("no usable link to node; frame dropped")
		return
	}
	l.m.LeaderFramesOut.Inc()
}

// reply answers request f.Req of node to.
func (l *Term) reply(to string, f protocol.PeerFrame) {
	f.Type = protocol.PeerReply
	if to == l.id {
		f.Epoch, f.From = l.epoch, l.id
		l.node.OnReply(f)
		return
	}
	l.send(to, &f)
}

// publishLoop writes the live-node list to Redis for the gateway, at once
// on every membership change and every directory.PublishEvery.
func (l *Term) publishLoop() {
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

func (l *Term) publish() {
	l.mu.Lock()
	v := directory.View{Leader: l.id, Epoch: l.epoch, Term: l.term.Load(), LeaderSince: l.since.UnixMilli(), Updated: time.Now().UnixMilli()}
	for id, m := range l.members {
		n := directory.Node{ID: id, WS: m.WS}
		if link := l.links[id]; link != nil && !link.Closed() || id == l.id {
			n.Linked = true
		}
		if id == l.id {
			n.Connections, n.Started, n.Messages = l.node.LocalCount(), l.d.Started.UnixMilli(), l.node.MessagesIn()
		} else if ld, ok := l.loads[id]; ok {
			n.Connections, n.Started, n.Messages = ld.Connections, ld.Started, ld.Messages
		}
		v.Nodes = append(v.Nodes, n)
	}
	l.mu.Unlock()
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	ctx, cancel := context.WithTimeout(l.ctx, time.Second)
	defer cancel()
	if n, err := l.d.Writer.Backlog(ctx); err == nil {
		v.Backlog = n
	}
	switch err := l.d.Directory.Publish(ctx, v); {
	case errors.Is(err, directory.ErrFenced):
		l.log.Warn().Int64("epoch", l.epoch).Msg("a newer leader published the node list; this term is over")
	case err != nil && l.ctx.Err() == nil:
		l.log.Warn().Err(err).Msg("cannot publish the node list")
	}
}

// encodeMessage is the push of m, as the node that stored it encodes it.
func encodeMessage(m protocol.Message) []byte { return protocol.EncodeMessagePush(&m) }
