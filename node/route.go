package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/handler"
	"chatcluster/peerlink"
	"chatcluster/protocol"
)

const uplinkQueue = 64 // frames in flight on the link to the leader

// router delivers stored messages. Local recipients get the push at once;
// for the others the push, encoded once, goes to the leader, which knows
// from the nodes' logins and rosters where every user is and forwards it
// to the recipient's node: no lookup per message on this node.
//
// Lock order: router.upMu, then router.mu, then the locks of a leader term
// (leader.Term): toLeader and uplink hand frames to this node's own term
// (Term.Handle) with upMu held, and the watch loop starts a term with mu
// held.
type router struct {
	s *Server
	// dropLog logs frames dropped, at most a few a second (UplinkDropped
	// counts them all).
	dropLog zerolog.Logger

	// up holds encoded frames for the leader, in order. While there is no
	// leader link it fills; once full, new chats are refused (503) instead
	// of being acknowledged without a way to route them.
	up chan upFrame

	mu      sync.Mutex
	link    *peerlink.Link // follower side: the link the current leader opened; guarded by mu
	linkSet chan struct{}  // closed and replaced whenever link or lead changes; guarded by mu
	lead    leaderTerm     // leader side: non-nil while this node leads; guarded by mu

	// upMu orders frames for the leader: queued counts those taken into up
	// and not yet handed over for good (held, in flight, or to resend).
	// Frames are numbered (upSeq) so that a leader that acknowledges them
	// (peerlink.Link.Acks) lets the node keep those it has not acknowledged
	// (inflight) and hand them to the next link (resend) when the link is
	// lost: a leader that pauses or dies drops nothing this node sent.
	upMu     sync.Mutex
	queued   int       // guarded by upMu
	upSeq    uint64    // the last number given; guarded by upMu
	inflight []upFrame // sent on the leader link, not acknowledged, oldest first; guarded by upMu
	resend   []upFrame // to hand over again, before anything in up; guarded by upMu

	// busyUntil (unix ns): the leader said it is overloaded; until then
	// new messages are refused.
	busyUntil atomic.Int64

	// Requests to the leader waiting for its reply, by request id.
	reqSeq  atomic.Uint64
	pendMu  sync.Mutex
	pending map[uint64]chan protocol.PeerFrame // guarded by pendMu
}

// upFrame is an encoded frame for the leader and its number. again says
// it went out on a link that was lost before the leader acknowledged it:
// the leader may have handled it. marked says b says so too (route
// frames only: PeerFrame.Again).
type upFrame struct {
	up     uint64
	b      []byte
	again  bool
	marked bool
}

// markAgain has a route frame going out again say so in its bytes.
func (u upFrame) markAgain() upFrame {
	if !u.again || u.marked {
		return u
	}
	u.marked = true
	f, err := protocol.DecodePeer(u.b)
	if err != nil || f.Type != protocol.PeerRoute {
		return u
	}
	f.Again = true
	if b, err := protocol.EncodePeer(&f); err == nil {
		u.b = b
	}
	return u
}

func newRouter(s *Server) *router {
	return &router{s: s, up: make(chan upFrame, s.cfg.PeerQueue), linkSet: make(chan struct{}),
		dropLog: s.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		pending: map[uint64]chan protocol.PeerFrame{}}
}

func (r *router) start() {
	r.s.goAttach(r.uplink)
	r.s.goAttach(r.reportLoad)
}

// Ready implements handler.Router. Besides a full queue to the leader
// while there is none, it refuses (handler.ErrOverloaded) while the
// leader says it is overloaded, and while the queue to a linked leader is
// half full (the link does not carry frames as fast as they come): the
// cluster then pushes back on senders instead of acknowledging what it
// cannot deliver. Without a leader the queue fills up to its bound, as
// the leaderless periods need.
func (r *router) Ready() error {
	lead, link, _ := r.current()
	if lead == nil && len(r.up) >= cap(r.up) {
		return handler.ErrBusy
	}
	if lead != nil && lead.Busy() || link != nil && len(r.up) > cap(r.up)/2 || time.Now().UnixNano() < r.busyUntil.Load() {
		r.s.m.Refused.Inc()
		return handler.ErrOverloaded
	}
	return nil
}

// leaderBusyFor is how long a node refuses new messages after the leader
// said it is overloaded; the leader says it again every 50 ms while it
// lasts.
const leaderBusyFor = 250 * time.Millisecond

// Deliver implements handler.Router. It never blocks. The push, encoded
// once where the message was stored, travels as bytes.
//
// Under the single login policy a recipient connected here has no other
// connection; the others go to the leader. Under the multi policy every
// recipient may have connections on other nodes too: those connected here
// get the push at once, and all go to the leader, which hands the push to
// their other nodes (Away).
func (r *router) Deliver(m protocol.Message, push []byte, to []string) {
	if len(push) == 0 {
		push = encodeMessage(m)
	}
	multi := r.s.multi()
	var remote []string
	for _, u := range to {
		cs := r.s.local.Conns(u)
		for _, c := range cs {
			if c.enqueueMessage(&m, push) {
				r.s.m.PushMessage.Inc()
			}
		}
		if len(cs) == 0 || multi {
			remote = append(remote, u)
		}
	}
	if len(remote) == 0 {
		return
	}
	if !r.toLeader(&protocol.PeerFrame{Type: protocol.PeerRoute, Users: remote, Push: push, Conv: m.Conv, Seq: m.Seq, Away: multi}) {
		r.s.m.RouteDropped.Add(float64(len(remote)))
	}
}

// DeliverExcept implements handler.Router: it hands push to every
// connection of user, here and on the other nodes, but the connection
// except ("" none). m is the message push is of, which a connection gets
// once (and push may then be nil: it is encoded here); nil for a push
// that is no message. It never blocks.
func (r *router) DeliverExcept(user, except string, push []byte, m *protocol.Message) {
	if len(push) == 0 {
		if m == nil {
			return
		}
		push = encodeMessage(*m)
	}
	cs := r.s.local.Conns(user)
	for _, c := range cs {
		if c.id == except {
			continue
		}
		if m != nil {
			if c.enqueueMessage(m, push) {
				r.s.m.PushMessage.Inc()
			}
		} else if c.enqueue(push) {
			r.s.rawCounter(push).Inc() // as deliverRaw counts the pushes that are no message
		}
	}
	multi := r.s.multi()
	if len(cs) > 0 && !multi {
		return // the user's one connection is here
	}
	f := &protocol.PeerFrame{Type: protocol.PeerRoute, Users: []string{user}, Push: push, Except: except, Away: multi}
	if m != nil {
		f.Conv, f.Seq = m.Conv, m.Seq
	} else if protocol.IsReceiptFrame(push) && r.toLeaderLazy(f) {
		return
	}
	if !r.toLeader(f) {
		r.s.m.RouteDropped.Inc()
	}
}

func encodeMessage(m protocol.Message) []byte { return protocol.EncodeMessagePush(&m) }

// kickRemote asks node to close user's connection conn, for reason.
func (r *router) kickRemote(node, user, conn, reason string) {
	f := &protocol.PeerFrame{Type: protocol.PeerKick, Dest: node, Users: []string{user}, Conn: conn}
	if reason != protocol.KickElsewhere {
		f.Reason = reason
	}
	r.toLeader(f)
}

// toLeader hands a frame to the leader: directly when this node leads,
// else through the uplink queue. It reports false when the frame could not
// be queued.
func (r *router) toLeader(f *protocol.PeerFrame) bool {
	f.From = r.s.cfg.ID
	r.upMu.Lock()
	defer r.upMu.Unlock()
	// Straight to this node's own leadership only when nothing older is
	// still on its way there, so frames keep their order.
	if l := r.leading(); l != nil && r.queued == 0 {
		l.Handle(r.s.cfg.ID, *f)
		return true
	}
	f.Epoch = r.s.maxEpoch.Load()
	f.Up = r.upSeq + 1
	b, err := protocol.EncodePeer(f)
	if err != nil {
		return false
	}
	select {
	case r.up <- upFrame{up: f.Up, b: b}:
		r.upSeq++
		r.queued++
		return true
	default:
		r.s.m.UplinkDropped.Inc()
		r.dropLog.Warn().Str("type", f.Type).Str("dest", f.Dest).Msg("no leader and the uplink queue is full; frame dropped (logged at most 5 a second)")
		return false
	}
}

// toLeaderLazy hands the leader a frame no one waits for (a read
// receipt's push) on the leader link's lazy lane: it goes out in the
// link's next write, or lazyFlush later (peerlink EnqueueLazy), instead
// of a write of its own. It carries no uplink number, so the leader does
// not acknowledge it and a link that fails may lose it, as a read push
// the leader cannot place is lost (the position is in sync too). False,
// with nothing sent, while this node leads, the link is down or the
// uplink queue holds frames: toLeader is then the way.
func (r *router) toLeaderLazy(f *protocol.PeerFrame) bool {
	lead, link, _ := r.current()
	if lead != nil || link == nil || link.Closed() || len(r.up) > 0 {
		return false
	}
	return r.upLazy(link, f)
}

// upLazy queues f, stamped from this node, on the lazy lane of link, the
// leader link, without an uplink number; false if it was not queued.
func (r *router) upLazy(link *peerlink.Link, f *protocol.PeerFrame) bool {
	f.From, f.Epoch = r.s.cfg.ID, r.s.maxEpoch.Load()
	b, err := protocol.EncodePeer(f)
	if err != nil || !link.EnqueueLazy(b) {
		return false
	}
	r.s.m.UplinkFrames.Inc()
	return true
}

// sent records that a frame taken from up has reached the leader (or
// this node's leadership): frames may go straight there again once none
// is left.
func (r *router) sent() {
	r.upMu.Lock()
	r.queued--
	r.upMu.Unlock()
}

// handed records that u went out on link. A link whose leader
// acknowledges keeps it until then; at most PeerQueue frames are kept, the
// oldest given up first.
func (r *router) handed(link *peerlink.Link, u upFrame) {
	r.upMu.Lock()
	defer r.upMu.Unlock()
	if !link.Acks() {
		r.queued--
		return
	}
	if len(r.inflight) >= r.s.cfg.PeerQueue {
		r.inflight[0] = upFrame{}
		r.inflight = r.inflight[1:]
		r.queued--
	}
	r.inflight = append(r.inflight, u)
}

// acked drops the frames in flight that the leader has handled, up to up.
// Link read loop.
func (r *router) acked(up uint64) {
	r.upMu.Lock()
	defer r.upMu.Unlock()
	i := 0
	for i < len(r.inflight) && r.inflight[i].up <= up {
		r.inflight[i] = upFrame{}
		i++
	}
	r.inflight = r.inflight[i:]
	r.queued -= i
}

// requeue puts the frames in flight on a lost link, then held (a frame
// taken but not handed over), back in front of resend, and reports
// whether it did (held is then resend's).
func (r *router) requeue(held upFrame) bool {
	r.upMu.Lock()
	defer r.upMu.Unlock()
	if len(r.inflight) == 0 {
		return false
	}
	r.s.m.UplinkResent.Add(float64(len(r.inflight)))
	out := make([]upFrame, 0, len(r.inflight)+1+len(r.resend))
	for _, u := range r.inflight {
		u.again = true
		out = append(out, u)
	}
	if held.b != nil {
		out = append(out, held)
	}
	r.resend = append(out, r.resend...)
	r.inflight = nil
	return true
}

// nextResend takes the oldest frame to hand over again, if any.
func (r *router) nextResend() (upFrame, bool) {
	r.upMu.Lock()
	defer r.upMu.Unlock()
	if len(r.resend) == 0 {
		return upFrame{}, false
	}
	u := r.resend[0]
	r.resend[0] = upFrame{}
	r.resend = r.resend[1:]
	if len(r.resend) == 0 {
		r.resend = nil
	}
	return u, true
}

// unsent counts the frames for the leader that have not reached it for
// good: queued, in flight without an acknowledgement, or to resend.
func (r *router) unsent() int {
	r.upMu.Lock()
	defer r.upMu.Unlock()
	return len(r.up) + len(r.inflight) + len(r.resend)
}

// request sends a request frame to the leader and waits for its reply
// until ctx ends. The leader skips a request whose asker has stopped
// waiting, so a request reported as failed is, as a rule, not carried out.
func (r *router) request(ctx context.Context, f *protocol.PeerFrame) (protocol.PeerFrame, error) {
	id := r.reqSeq.Add(1)
	ch := make(chan protocol.PeerFrame, 1)
	r.pendMu.Lock()
	r.pending[id] = ch
	r.pendMu.Unlock()
	defer func() {
		r.pendMu.Lock()
		delete(r.pending, id)
		r.pendMu.Unlock()
	}()
	f.Req = id
	if dl, ok := ctx.Deadline(); ok {
		f.Deadline = dl.Add(-250 * time.Millisecond).UnixMilli()
	}
	if !r.toLeader(f) {
		return protocol.PeerFrame{}, handler.ErrBusy
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		return protocol.PeerFrame{}, fmt.Errorf("%w: no answer from the leader", handler.ErrUnavailable)
	}
}

// onReply hands a reply from the leader to the request waiting for it.
func (r *router) onReply(f protocol.PeerFrame) {
	r.pendMu.Lock()
	ch := r.pending[f.Req]
	r.pendMu.Unlock()
	if ch == nil {
		return // the asker gave up
	}
	select {
	case ch <- f:
	default:
	}
}

func (r *router) leading() leaderTerm {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lead
}

// current returns the leadership (if this node leads), the leader link,
// and a channel closed when either changes.
func (r *router) current() (leaderTerm, *peerlink.Link, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lead, r.link, r.linkSet
}

// currentLink returns the leader link and a channel closed when it changes.
func (r *router) currentLink() (*peerlink.Link, <-chan struct{}) {
	_, link, changed := r.current()
	return link, changed
}

// changedLocked wakes whoever waits on linkSet. r.mu held.
func (r *router) changedLocked() {
	close(r.linkSet)
	r.linkSet = make(chan struct{})
}

func (r *router) setLink(l *peerlink.Link) {
	r.mu.Lock()
	old := r.link
	r.link = l
	r.changedLocked()
	r.mu.Unlock()
	if old != nil && old != l {
		old.Close()
	}
}

// dropLink forgets l if it is still the leader link.
func (r *router) dropLink(l *peerlink.Link) {
	r.mu.Lock()
	if r.link == l {
		r.link = nil
		r.changedLocked()
	}
	r.mu.Unlock()
	l.Close()
}

// uplink moves frames from the up queue to the leader, in order: over the
// leader link, or straight to this node's own leadership when it leads. It
// holds a frame while there is neither. Frames a lost link did not
// acknowledge go first to whichever comes next.
func (r *router) uplink() {
	var held upFrame      // taken from resend or up, not yet handed over
	var on *peerlink.Link // the link the frames in flight went out on
	local := func(l leaderTerm, u upFrame) {
		// Under upMu, so that toLeader cannot overtake this frame.
		r.upMu.Lock()
		defer r.upMu.Unlock()
		if f, err := protocol.DecodePeer(u.b); err == nil {
			f.Again = f.Again || u.again
			l.Handle(r.s.cfg.ID, f)
		}
		r.queued--
	}
	for {
		lead, link, changed := r.current()
		if lead != nil || link == nil || link != on || link.Closed() {
			if r.requeue(held) {
				held = upFrame{}
			}
			on = link
		}
		if held.b == nil {
			held, _ = r.nextResend()
			held = held.markAgain()
		}
		if lead != nil {
			select {
			case <-lead.Linked():
			default:
				select {
				case <-lead.Linked():
				case <-changed:
				case <-r.s.ctx.Done():
					return
				}
				continue
			}
			if held.b != nil {
				local(lead, held)
				held = upFrame{}
				continue
			}
			select {
			case u := <-r.up:
				local(lead, u)
			case <-changed:
			case <-r.s.ctx.Done():
				return
			}
			continue
		}
		if link == nil || link.Closed() {
			select {
			case <-changed:
				continue
			case <-r.s.ctx.Done():
				return
			}
		}
		if held.b == nil {
			select {
			case held = <-r.up:
			case <-changed:
				continue
			case <-link.Closing():
				continue
			case <-r.s.ctx.Done():
				return
			}
		}
		select {
		case link.Queue() <- held.b:
			r.handed(link, held)
			held = upFrame{}
			r.s.m.UplinkFrames.Inc()
		case <-link.Closing():
		case <-changed:
		case <-r.s.ctx.Done():
			return
		}
	}
}

// reportLoad tells the leader this node's connection count every second.
func (r *router) reportLoad() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.s.ctx.Done():
			return
		case <-t.C:
			if link, _ := r.currentLink(); link != nil {
				r.sendLoad(link)
			}
		}
	}
}

func (r *router) sendLoad(link *peerlink.Link) {
	b, _ := protocol.EncodePeer(&protocol.PeerFrame{
		Type: protocol.PeerLoad, Epoch: link.Epoch(), From: r.s.cfg.ID,
		Connections: r.s.local.Len(), Started: r.s.started.UnixMilli(), Messages: r.s.messagesIn.Load(),
	})
	if link.Enqueue(b) {
		r.s.m.UplinkFrames.Inc()
	}
}

// drain waits, within ctx and a short bound, for queued cross-node frames
// to reach the leader before the node goes. The node has left the cluster
// by then, so once it has no leader link (the leader lets it go, after a
// last acknowledgement) no leader will take them: it stops waiting.
func (r *router) drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		lead, link, _ := r.current()
		if r.unsent() == 0 && (link == nil || link.Queued() == 0) {
			return
		}
		if lead == nil && link == nil {
			cancel()
		}
		select {
		case <-ctx.Done():
			r.s.log.Warn().Int("queued", r.unsent()).Msg("stopping with frames for the leader it has not acknowledged; recipients of the messages among them get them by sync")
			return
		case <-t.C:
		}
	}
}

func (r *router) closeLinks() {
	r.mu.Lock()
	link, lead := r.link, r.lead
	r.lead = nil
	r.mu.Unlock()
	if link != nil {
		link.Close()
	}
	if lead != nil {
		lead.Stop()
	}
}

// deliverLocal pushes m to the named users connected here, on each of
// their connections, encoding the frame once for all of them.
func (s *Server) deliverLocal(users iter.Seq[string], m *protocol.Message) {
	if m == nil {
		return
	}
	var push []byte
	for u := range users {
		for _, c := range s.local.Conns(u) {
			if push == nil {
				push = encodeMessage(*m)
			}
			if c.enqueueMessage(m, push) {
				s.m.PushMessage.Inc()
			}
		}
	}
}

// deliverPushed hands the encoded push of message seq of conv to the
// named users connected here, once per connection, but to the connection
// except ("" none).
//
// A push handed over again (again: its first frame went to a leader whose
// link was lost unacknowledged) may have reached the user already, on a
// connection since lost: it is not given to a connection that logged in
// after the message was written, whose client syncs after its login
// (docs/protocol.md, 7) and gets the message there, once.
func (s *Server) deliverPushed(users iter.Seq[string], conv string, seq int64, push []byte, again bool, except string) {
	if len(push) == 0 {
		return
	}
	var written int64 = math.MaxInt64
	if again {
		if ts, ok := protocol.MessagePushTS(push); ok {
			written = ts
		}
	}
	m := &protocol.Message{Conv: conv, Seq: seq}
	counter := s.m.PushMessage
	if bytes.HasPrefix(push, memberPushPrefix) {
		counter = s.m.PushMember
	}
	for u := range users {
		for _, c := range s.local.Conns(u) {
			if c.id == except {
				continue
			}
			if c.loggedIn.Load() > written {
				s.m.PushAgainSkipped.Inc()
				continue
			}
			if c.enqueueMessage(m, push) {
				counter.Inc()
			}
		}
	}
}

// memberPushPrefix starts a member push: the push of a room's join or
// leave event, which the leader hands on like a message's.
var memberPushPrefix = []byte(`{"action":"` + protocol.PushMember + `"`)

// servePeer accepts the leader's link. The leader must prove the cluster
// secret (peerlink.Acceptor) and be the leader ZooKeeper names now, with an
// epoch no older than any this node has seen.
func (s *Server) servePeer(w http.ResponseWriter, req *http.Request) {
	h, err := s.peers.Verify(req)
	refuse := func(code int, why string) {
		s.log.Warn().Str("from", h.From).Str("remote", req.RemoteAddr).Int64("epoch", h.Epoch).Msg("peer link refused: " + why)
		http.Error(w, why, code)
	}
	var rf *peerlink.Refusal
	switch {
	case errors.As(err, &rf):
		refuse(rf.Status, rf.Reason)
		return
	case h.Epoch < s.maxEpoch.Load():
		refuse(http.StatusConflict, "leader epoch is older than one already seen")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 3*time.Second)
	leader, err := s.cluster.CurrentLeader(ctx)
	cancel()
	if err != nil || leader.ID != h.From || leader.Epoch != h.Epoch {
		refuse(http.StatusConflict, "not the current leader in ZooKeeper")
		return
	}
	s.raiseEpoch(h.Epoch)
	// A small queue on the link itself: frames wait in the router's up
	// queue instead, so when this leader dies they go to the next one
	// rather than dying with the link.
	link, err := s.peers.Accept(w, req, h, peerlink.Options{Queue: uplinkQueue, Log: s.log})
	if err != nil {
		return
	}
	if !s.goAttach(func() { link.WriteLoop(s.cfg.WriteTimeout) }) {
		link.Drop()
		return
	}
	// The roster goes first, before anything queued for the leader, so the
	// presence changes queued meanwhile apply on top of it.
	for _, b := range s.rosterFrames(h.Epoch) {
		if link.Enqueue(b) {
			s.m.UplinkFrames.Inc()
		}
	}
	s.routes.setLink(link)
	link.Log().Info().Msg("linked to leader")
	s.routes.sendLoad(link)
	s.goAttach(func() {
		defer s.routes.dropLink(link)
		link.ReadLoop(func(f protocol.PeerFrame) { s.onLeaderFrame(link, f) })
	})
}

// raiseEpoch records a leader epoch seen, keeping the maximum.
func (s *Server) raiseEpoch(e int64) {
	for {
		cur := s.maxEpoch.Load()
		if e <= cur || s.maxEpoch.CompareAndSwap(cur, e) {
			return
		}
	}
}

// onLeaderFrame handles a frame from the leader. Link read loop only.
func (s *Server) onLeaderFrame(link *peerlink.Link, f protocol.PeerFrame) {
	if f.Epoch < s.maxEpoch.Load() {
		link.Log().Warn().Int64("frameEpoch", f.Epoch).Int64("known", s.maxEpoch.Load()).Msg("frame from a deposed leader refused")
		link.Close()
		return
	}
	switch f.Type {
	case protocol.PeerDeliver:
		s.deliverLocal(protocol.Names(f.Recipients), f.Message)
	case protocol.PeerKick:
		reason := f.Reason
		if f.Server != nil && f.Server.Reason != "" {
			reason = f.Server.Reason
		}
		for _, u := range f.Users {
			s.kickLocal(u, f.Conn, reason)
		}
	case protocol.PeerPush:
		if f.Conv != "" {
			s.deliverPushed(protocol.Names(f.Recipients), f.Conv, f.Seq, f.Push, f.Again, f.Except)
		} else {
			s.deliverRaw(protocol.Names(f.Recipients), f.Push, f.Except)
		}
	case protocol.PeerSignal:
		s.deliverSignal(protocol.Names(f.Recipients), f.Push)
	case protocol.PeerReply:
		s.routes.onReply(f)
	case protocol.PeerAck:
		s.routes.acked(f.Up)
		if f.Busy {
			s.routes.busyUntil.Store(time.Now().Add(leaderBusyFor).UnixNano())
		}
	default:
		link.Log().Warn().Str("type", f.Type).Msg("unexpected peer frame from leader")
	}
}
