package leader

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/cluster"
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
	node Node
	d    Deps
	id   string         // d.ID
	log  zerolog.Logger // d.Log
	// dropLog is log for the line of each frame dropped, at most a few a
	// second (LeaderFramesDropped counts them all).
	dropLog zerolog.Logger
	m       *metrics.Node // d.Metrics
	epoch   int64
	since   time.Time
	ctx     context.Context
	stopF   context.CancelFunc
	// wg counts the goroutines of this term (goTerm); Stop waits for
	// them, so two terms of this node never run at once.
	wg    sync.WaitGroup
	wake  chan struct{} // publish now
	rooms *roomService
	// support is customer service: its queue, agents and conversations.
	support *supportService
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
// peerlink.Link, which dial runs): queueing without waiting (a frame that
// may wait for the next write, too), how full the queue is, and closing.
type memberLink interface {
	Enqueue(b []byte) bool
	EnqueueLazy(b []byte) bool
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
		dropLog: d.Log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		epoch:   epoch, since: time.Now(), ctx: ctx, stopF: cancel,
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
	l.support = newSupportService(l)
	l.support.start()
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
// and every open support conversation in its visitor's and agent's, after
// Redis lost them; nothing while they are still loading. (Closed support
// conversations come back from MongoDB per user, with the direct ones.)
func (l *Term) RestoreConvs(ctx context.Context) error {
	if err := l.rooms.restoreConvs(ctx); err != nil {
		return err
	}
	return l.support.restoreConvs(ctx)
}

// AddQueues adds to out how many frames wait on the term's link to each
// node, by node id.
func (l *Term) AddQueues(out map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, link := range l.links {
		out[id] += link.Queued()
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
	go func() { l.wg.Wait(); l.support.stop(); close(done) }()
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
			peerlink.Options{Queue: l.d.PeerQueue, Log: l.log, Busy: l.busy.Load, TLS: l.d.PeerTLS})
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
		if ctx.Err() != nil {
			// Stopped while it dialled (m left, or registered anew after
			// its session expired): the dialer started since holds m's
			// link. Registered here, this one would push that one out of
			// links and then, closing, leave m with none while the other
			// stays up unused.
			l.mu.Unlock()
			link.Drop()
			return
		}
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
		// The node refuses new goroutines once it is stopping: the link
		// is then dropped unused, and dialling ends (Done would never be
		// closed without the write loop).
		started := l.goTerm(func() { link.WriteLoop(l.d.WriteTimeout) })
		if started {
			link.ReadLoop(func(f protocol.PeerFrame) { l.onNodeFrame(link, m, f) })
		} else {
			link.Drop()
		}
		stopOnCancel()
		link.Close()
		if started {
			<-link.Done()
		}
		l.mu.Lock()
		if l.links[m.ID] == link {
			delete(l.links, m.ID)
			l.unlinked[m.ID] = time.Now()
		}
		l.mu.Unlock()
		if !started {
			return
		}
	}
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
		l.dropLog.Warn().Str("dest", node).Str("type", f.Type).Msg("no usable link to node; frame dropped (logged at most 5 a second)")
		return
	}
	l.m.LeaderFramesOut.Inc()
}

// sendLazy is send for a frame no one waits for (a read receipt's push):
// on a link that is up it goes out in the link's next write, or
// lazyFlush later (peerlink EnqueueLazy), instead of a write of its own;
// without one, or with the link's lazy lane full, as send sends it.
func (l *Term) sendLazy(node string, f *protocol.PeerFrame) {
	l.mu.Lock()
	link := l.links[node]
	l.mu.Unlock()
	if link != nil && !link.Closed() && l.lazy(link, f) {
		return
	}
	l.send(node, f)
}

// SupportSnapshot is customer service's whole state at one instant; ok is
// false until the term has loaded it.
func (l *Term) SupportSnapshot() (protocol.SupportSnapshot, bool) { return l.support.snapshot() }
