package node

import (
	"context"
	"sync"

	"chatcluster/protocol"
)

// A read request is handled aside: its round trip to Redis runs beside the
// chat, typing and ping requests that follow it on the connection, so a
// message sent just after a read mark does not wait for it. Its reply
// still goes out in request order (docs/protocol.md 3.5). A request of any
// other action first waits for the read in flight, so that what it
// answers (a sync's read positions) already includes it, and a connection
// has at most one read in flight: the reads of one connection are marked
// in order.

// overlapsRead says which actions may be handled while a read of the same
// connection is in flight: what neither reads nor changes read positions.
func overlapsRead(action string) bool {
	switch action {
	case protocol.ActionChat, protocol.ActionTyping, protocol.ActionPing:
		return true
	}
	return false
}

// replyOrder sends a connection's replies in the order of the requests
// while a reply handled aside is not ready: the replies behind it wait.
// The zero value is ready; safe for concurrent use.
type replyOrder struct {
	mu      sync.Mutex
	waiting []*heldReply // oldest first; empty while nothing is handled aside
}

// heldReply is the place of one reply in a replyOrder.
type heldReply struct {
	frame []byte
	ready bool
}

// send hands frame, the reply to the newest request, to enqueue, at once
// if nothing before it waits, else after what does. A nil frame (a reply
// that could not be encoded) takes its turn and sends nothing.
func (o *replyOrder) send(frame []byte, enqueue func([]byte) bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.waiting) == 0 {
		if frame != nil {
			enqueue(frame) // under mu: a reply made ready meanwhile cannot pass it
		}
		return
	}
	o.waiting = append(o.waiting, &heldReply{frame: frame, ready: true})
}

// hold keeps a place for the reply to the newest request, which fill
// hands over.
func (o *replyOrder) hold() *heldReply {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := &heldReply{}
	o.waiting = append(o.waiting, r)
	return r
}

// fill makes r's reply frame, and every one behind it that is ready up to
// the next that is not, go to enqueue.
func (o *replyOrder) fill(r *heldReply, frame []byte, enqueue func([]byte) bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.frame, r.ready = frame, true
	n := 0
	for n < len(o.waiting) && o.waiting[n].ready {
		if f := o.waiting[n].frame; f != nil {
			enqueue(f)
		}
		o.waiting[n] = nil
		n++
	}
	o.waiting = o.waiting[n:]
	if len(o.waiting) == 0 {
		o.waiting = nil // let the array go
	}
}

// awaitRead waits until no read of the connection is in flight. Read loop
// only.
func (c *client) awaitRead() {
	c.reading <- struct{}{}
	<-c.reading
}

// handleAside handles req, a read, in a goroutine of its own once the
// connection's read before it is done, and reports false, handling
// nothing, if the node is stopping and starts none. Read loop only.
func (c *client) handleAside(ctx context.Context, req protocol.Request) bool {
	c.reading <- struct{}{}
	place := c.replies.hold()
	started := c.srv.goAttach(func() {
		defer func() { <-c.reading }()
		rctx, cancel := context.WithTimeout(ctx, c.srv.cfg.RequestTimeout)
		reply := c.srv.handler.Handle(rctx, c, req)
		cancel()
		c.replies.fill(place, c.encodeReply(req, reply), c.enqueue)
	})
	if !started {
		c.replies.fill(place, nil, func([]byte) bool { return false })
		<-c.reading
	}
	return started
}
