package chaos

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// The actions of a client beside messages: edits and recalls of its own
// messages, reads and typing; and what the checkpoints read of it.

// change edits (with a new text unique to key) or recalls the client's
// own message o, sending it again after errors that may have left it
// unstored, as a send is, and records it if it is acknowledged.
//
// An edit has no clientMsgId: one sent again after its reply was lost may
// be stored twice, as two events with the same text, which the checker
// counts (EditRepeats) but does not hold against the cluster, since the
// final view is the same. A recall sent again after its reply was lost is
// answered 409 "recalled already": the first landed, and every final view
// must show the message recalled (Record.AddRecallLanded).
func (c *Client) change(ctx context.Context, o *ownMsg, kind, key string) {
	text := ""
	if kind == protocol.KindEdit {
		text = EditText(key)
	}
	label := key + " " + kind
	deadline := time.Now().Add(sendGiveUp)
	delay := backoffMin
	refusals := 0
	var err error
	for attempt := 1; attempt <= maxSendAttempts && time.Now().Before(deadline); attempt++ {
		conn := c.waitConn(ctx, deadline)
		if conn == nil {
			if err == nil {
				err = errors.New("no connection")
			}
			break
		}
		rctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		var r protocol.ChatReply
		if kind == protocol.KindEdit {
			r, err = conn.Edit(rctx, o.conv, o.seq, text)
		} else {
			r, err = conn.Recall(rctx, o.conv, o.seq)
		}
		cancel()
		if err == nil {
			c.ackedChange(r, o, kind, text, label)
			return
		}
		code := chatclient.Code(err)
		switch {
		case code <= 0, code == 429, code >= 500:
			// Lost, not answered in time, or a service under change: it
			// may or may not be stored; send it again.
		case code == 401:
			_ = conn.Close()
		case code == 409 && kind == protocol.KindRecall:
			// Recalled already: only the client recalls the messages
			// it sent (not those of its user's other devices), so an
			// attempt of its own landed.
			o.recalled = true
			c.cfg.Record.AddRecallLanded(c.cfg.Name, o.conv, o.seq)
			return
		case (code == 403 || code == 404) && !strings.Contains(err.Error(), "window") && refusals < changeRefusal:
			// A room a service under change does not know for a moment,
			// or a message not back yet after Redis lost its data.
			refusals++
		default:
			// 409 of an edit: the message was recalled by a recall whose
			// reply was lost and which was given up. 400, 403 (a window
			// passed), 404 and 413: nothing was stored.
			c.Refused.Add(1)
			c.logf("%s of %s seq %d refused: %v", kind, o.conv, o.seq, err)
			if code == 409 {
				o.recalled = true
			}
			c.cfg.Record.AddGaveUp(label)
			return
		}
		if !sleep(ctx, delay) {
			break
		}
		delay = min(2*delay, backoffMax)
	}
	if kind == protocol.KindRecall {
		o.recalled = true // maybe: not a message to change again
	}
	c.cfg.Record.AddGaveUp(label)
	if ctx.Err() == nil {
		c.logf("gave up %s of %s seq %d: %v", kind, o.conv, o.seq, err)
	}
}

// ackedChange records an acknowledged edit or recall of o like a message: an
// event with its own id and seq, for the recipients of a message of its
// conversation. The sender of a direct conversation holds the event from
// its reply (it gets no push of it); in a room it comes back as a push.
func (c *Client) ackedChange(r protocol.ChatReply, o *ownMsg, kind, text, label string) {
	if kind == protocol.KindRecall {
		o.recalled = true
	}
	m := protocol.Message{ID: r.ID, Conv: r.Conv, Seq: r.Seq, From: c.cfg.Name, To: o.to, Room: o.room,
		Kind: kind, Ref: o.seq, Text: text, TS: r.TS}
	recipients := []string{o.to}
	if o.room != "" {
		recipients = c.cfg.Members
	}
	c.cfg.Record.AddAck(Ack{Msg: m, ClientMsgID: label, Recipients: recipients, Device: c.cfg.ID})
	if o.room == "" {
		c.procMu.Lock()
		c.offerLocked(m, FromAck)
		c.procMu.Unlock()
	}
}

// markRead marks one of the client's conversations read at its offset
// there (none if it holds nothing yet), once, and records what the server
// answered.
func (c *Client) markRead(rng *rand.Rand) {
	c.procMu.Lock()
	var convs []string
	offsets := map[string]int64{}
	for _, conv := range c.view.Convs() {
		if off := c.view.Offset(conv); off > 0 {
			convs = append(convs, conv)
			offsets[conv] = off
		}
	}
	c.procMu.Unlock()
	if len(convs) == 0 {
		return
	}
	conn := c.waitConn(c.ctx, time.Now().Add(requestTimeout))
	if conn == nil {
		return
	}
	conv := convs[rng.IntN(len(convs))]
	seq := offsets[conv]
	// The position is the user's: the user's other devices raise it too,
	// on connections of their own.
	before := c.cfg.Record.ReadAcked(c.cfg.Name, conv)
	c.cfg.Record.AddReadSent()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	r, err := conn.Read(ctx, conv, seq)
	cancel()
	switch code := chatclient.Code(err); {
	case err == nil:
		c.cfg.Record.AddReadAckSince(c.cfg.Name, conv, seq, r.Seq, before)
		c.procMu.Lock()
		c.reads[conv] = max(c.reads[conv], r.Seq)
		c.procMu.Unlock()
	case code >= 400 && code < 500 && code != 401 && code != 429:
		// Above the latest (after Redis lost data, before the rebuild),
		// or a room a service under change does not know: not stored.
		c.cfg.Record.AddReadRefused()
	}
}

// typing signals typing in one of the client's conversations; nothing is
// stored, so an error is only logged.
func (c *Client) typing(rng *rand.Rand) {
	c.procMu.Lock()
	convs := c.view.Convs()
	c.procMu.Unlock()
	conn := c.waitConn(c.ctx, time.Now().Add(requestTimeout))
	if conn == nil || len(convs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	err := conn.Typing(ctx, convs[rng.IntN(len(convs))])
	cancel()
	c.cfg.Record.AddTyping(err == nil)
	if err != nil {
		c.logf("typing: %v", err)
	}
}

// FinalViews returns the final state of every message the client shows,
// per conversation (View.Final).
func (c *Client) FinalViews() map[string]map[int64]State {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	out := map[string]map[int64]State{}
	for _, conv := range c.view.Convs() {
		out[conv] = c.view.Final(conv)
	}
	return out
}

// ServerViews reads every conversation of the client from the server, by
// sync on its connection from the conversation's floor (0 if floors has
// none), and returns per conversation the state of each message above
// the floor as the server answered (ServerState) and the read positions.
// A conversation the server left out is missing from both.
func (c *Client) ServerViews(ctx context.Context, floors map[string]int64) (map[string]map[int64]State, map[string]ReadPos, error) {
	c.procMu.Lock()
	convs := c.view.Convs()
	c.procMu.Unlock()
	conn := c.waitConn(ctx, time.Now().Add(requestTimeout))
	if conn == nil {
		return nil, nil, errors.New(c.cfg.ID + " has no connection")
	}
	offsets := make(map[string]int64, len(convs))
	for _, conv := range convs {
		offsets[conv] = floors[conv]
	}
	got, err := conn.SyncAll(ctx, offsets)
	if err != nil {
		return nil, nil, err
	}
	states := map[string]map[int64]State{}
	reads := map[string]ReadPos{}
	for conv, sc := range got {
		states[conv] = ServerState(sc.Messages)
		reads[conv] = ReadPos{Read: sc.Read, PeerRead: sc.PeerRead}
	}
	return states, reads, nil
}
