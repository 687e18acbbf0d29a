package node

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"chatcluster/handler"
	"chatcluster/history"
	"chatcluster/protocol"
	"chatcluster/receipt"
)

// Typing indicators and read receipts: the node's side. Read pushes go
// where message pushes go (to the user's connection here, or through the
// leader to the node the user is on); typing pushes go the same ways, as
// signal frames, only where queues and links have room to spare.

// ToUser implements handler.Pusher: every connection of user but except
// gets push, here and, through the leader, on the other nodes
// (DeliverExcept). A push the leader cannot place (the user is offline)
// is dropped, not parked.
func (r *router) ToUser(user, except string, push []byte) {
	r.DeliverExcept(user, except, push, nil)
}

// Typing implements handler.Pusher: the other user of a direct
// conversation gets push where they are; the other online members of a
// room get it as the leader, which knows the members and where they are,
// hands it out. Nothing is queued for later: a push that finds no room is
// dropped.
func (r *router) Typing(conv, from string, push []byte) {
	kind, a, b, ok := protocol.ParseConv(conv)
	switch {
	case !ok:
		return
	case kind == "room":
		r.signal(&protocol.PeerFrame{Type: protocol.PeerSignal, Room: a, User: from, Push: push})
	case kind == "dm":
		to := a
		if to == from {
			to = b
		}
		if to == from {
			return
		}
		if _, ok := r.s.local.Get(to); ok {
			r.s.deliverSignal(func(yield func(string) bool) { yield(to) }, push)
			if !r.s.multi() {
				return // the user's one connection is here
			}
		}
		r.signal(&protocol.PeerFrame{Type: protocol.PeerSignal, Users: []string{to}, User: from, Push: push})
	}
}

// signalRoom is the part of the link queue to the leader a signal frame
// may find taken: past it the link is busy with what matters more.
const signalRoom = 4

// signal hands a signal frame to the leader, best-effort: straight to
// this node's own term when it leads; else on the leader link, only
// while nothing waits for the leader in the uplink queue and the link's
// own queue is nearly empty. It never waits and never queues a frame for
// later; a frame it cannot hand over is dropped (counted).
func (r *router) signal(f *protocol.PeerFrame) {
	f.From = r.s.cfg.ID
	lead, link, _ := r.current()
	if lead != nil {
		if lead.Busy() {
			r.s.m.SignalDropped.Inc()
			return
		}
		lead.Handle(r.s.cfg.ID, *f)
		return
	}
	if link == nil || link.Closed() || len(r.up) > 0 || link.Queued() >= min(signalRoom, link.Cap()/4) || time.Now().UnixNano() < r.busyUntil.Load() ||
		!r.upLazy(link, f) {
		r.s.m.SignalDropped.Inc()
	}
}

// deliverSignal hands a push that may be lost (typing) to the named users
// connected here whose send queue has room to spare (frameQueue.pushLossy).
func (s *Server) deliverSignal(users iter.Seq[string], push []byte) {
	for u := range users {
		for _, c := range s.local.Conns(u) {
			if c.enqueueLossy(push) {
				s.m.PushTyping.Inc()
			} else {
				s.m.SignalDropped.Inc()
			}
		}
	}
}

// enqueueLossy is enqueue for a push that may be lost: it is queued only
// while the client has caught up (frameQueue.pushLossy), and never makes
// the client too slow; it waits for the lazy flush like every typing
// frame. Safe from any goroutine.
func (c *client) enqueueLossy(frame []byte) bool {
	if c.isClosing() {
		return false
	}
	ok, due := c.send.pushLossy(frame)
	if due {
		c.srv.lazy.add(c)
	}
	return ok
}

// TypingLimit implements handler.TypingLimited: the connection's limit
// of typing requests passed on.
func (c *client) TypingLimit() *handler.TypingLimit { return &c.typing }

// readsSvc implements handler.Reads over the receipt store.
type readsSvc struct{ st *receipt.Store }

func (r readsSvc) Mark(ctx context.Context, conv, user string, seq int64, check bool) (int64, bool, error) {
	pos, raised, err := r.st.Mark(ctx, conv, user, seq, check)
	var above *receipt.AboveLatestError
	switch {
	case errors.Is(err, receipt.ErrNoCounter):
		return 0, false, handler.ErrNoLatest
	case errors.As(err, &above):
		return 0, false, &handler.AboveLatest{Latest: above.Latest}
	}
	return pos, raised, unavailable(err)
}

func (r readsSvc) Positions(ctx context.Context, want map[string][]string) (map[string]map[string]int64, error) {
	out, err := r.st.Positions(ctx, want)
	return out, unavailable(err)
}

// durableReads is the history store as the receipt store's durable copy.
type durableReads struct{ s *history.Store }

func (d durableReads) ReadPositions(ctx context.Context, ps []receipt.Position) ([]receipt.Position, error) {
	in := make([]history.ReadPosition, len(ps))
	for i, p := range ps {
		in[i] = history.ReadPosition(p)
	}
	got, err := d.s.ReadPositions(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("history store: %w", err)
	}
	out := make([]receipt.Position, len(got))
	for i, p := range got {
		out[i] = receipt.Position(p)
	}
	return out, nil
}

func (d durableReads) SaveReadPositions(ctx context.Context, ps []receipt.Position) error {
	in := make([]history.ReadPosition, len(ps))
	for i, p := range ps {
		in[i] = history.ReadPosition(p)
	}
	return d.s.SaveReadPositions(ctx, in)
}

// DeliverSignal implements leader.Node.
func (n termNode) DeliverSignal(users iter.Seq[string], push []byte) {
	n.s.deliverSignal(users, push)
}
