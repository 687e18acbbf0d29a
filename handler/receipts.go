package handler

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"chatcluster/protocol"
)

// Typing indicators and read receipts (docs/protocol.md, 4.13 and 4.14).

// Reads keeps how far users have read conversations (receipt.Store). A
// position only rises.
type Reads interface {
	// Mark raises user's position in conv to seq if seq is higher, and
	// returns the position now stored and whether seq raised it. With
	// check it first compares seq with the conversation's latest, in the
	// same round trip: a seq above it is an *AboveLatest and changes
	// nothing; ErrNoLatest says the latest is not at hand there (the
	// caller finds it and marks unchecked).
	Mark(ctx context.Context, conv, user string, seq int64, check bool) (int64, bool, error)
	// Positions returns the positions of the named users in each
	// conversation: out[conv][user], 0 for none.
	Positions(ctx context.Context, want map[string][]string) (map[string]map[string]int64, error)
}

// ErrNoLatest is Reads.Mark's error when it cannot check a seq: the
// conversation's latest seq is not where the positions are.
var ErrNoLatest = errors.New("handler: the conversation's latest seq is not at hand")

// AboveLatest is Reads.Mark's error for a seq above the conversation's
// latest.
type AboveLatest struct{ Latest int64 }

func (e *AboveLatest) Error() string { return fmt.Sprintf("seq above the latest (%d)", e.Latest) }

// Pusher hands pushes that are no message to users wherever they are (the
// node's router). Neither method blocks; a connection a push cannot reach
// misses it (what a read push tells is in sync too).
type Pusher interface {
	// ToUser hands push to every connection of user but the connection
	// except ("": none), on whatever node.
	ToUser(user, except string, push []byte)
	// Typing hands push, from's typing push in conv, to the other
	// members of conv who are online, best-effort on the lowest priority:
	// it is dropped wherever a send queue or a link between nodes has no
	// room to spare.
	Typing(conv, from string, push []byte)
}

// TypingLimited is a Conn whose typing requests are limited (the node's
// connections): only those its TypingLimit allows are passed on. A Conn
// that is not one is not limited.
type TypingLimited interface {
	TypingLimit() *TypingLimit
}

// TypingLimit says which typing requests of one connection are passed on:
// at most one per conversation per protocol.TypingInterval, and
// protocol.TypingPerSecond over all of them (bursts of as many), for at
// most protocol.MaxTypingConvs conversations at once. The zero value is
// ready; safe for concurrent use.
type TypingLimit struct {
	mu     sync.Mutex
	last   map[string]int64 // conversation -> when its last typing was passed on, unix ms; guarded by mu
	tokens float64          // guarded by mu
	at     int64            // unix ms of the last refill, 0 before the first; guarded by mu
}

// Allow reports whether a typing in conv at now (unix ms) is passed on,
// and counts it if it is.
func (l *TypingLimit) Allow(conv string, now int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	const burst = float64(protocol.TypingPerSecond)
	if l.at == 0 {
		l.tokens = burst
	} else if now > l.at {
		l.tokens = min(burst, l.tokens+float64(now-l.at)*burst/1000)
	}
	l.at = max(l.at, now)
	if last, ok := l.last[conv]; ok && now-last < protocol.TypingInterval {
		return false
	}
	if l.tokens < 1 {
		return false
	}
	if l.last == nil {
		l.last = map[string]int64{}
	}
	if _, ok := l.last[conv]; !ok && len(l.last) >= protocol.MaxTypingConvs {
		for cv, t := range l.last {
			if now-t >= protocol.TypingInterval {
				delete(l.last, cv)
			}
		}
		if len(l.last) >= protocol.MaxTypingConvs {
			return false
		}
	}
	l.tokens--
	l.last[conv] = now
	return true
}

// receiptConv checks the conversation of a typing or read request: a
// direct conversation or a room.
func receiptConv(action, conv string) (kind, a, b string, err error) {
	if conv == "" {
		return "", "", "", protocol.Errorf(protocol.CodeBadRequest, "%s needs conv (dm:<a>:<b> or room:<name>)", action)
	}
	kind, a, b, ok := protocol.ParseConv(conv)
	if !ok {
		return "", "", "", protocol.Errorf(protocol.CodeBadRequest, "invalid conversation %q", conv)
	}
	if kind != "dm" && kind != "room" {
		return "", "", "", protocol.Errorf(protocol.CodeBadRequest, "%s is for direct conversations and rooms, not %s", action, conv)
	}
	return kind, a, b, nil
}

// typing tells the other members of a conversation who are online that the
// user is typing. Nothing is stored. A typing over the connection's limit
// is answered alike and passed on to no one, before any check of
// membership.
func (h *Handler) typing(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.TypingData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	kind, a, b, err := receiptConv(protocol.ActionTyping, d.Conv)
	if err != nil {
		return nil, err
	}
	if tl, ok := c.(TypingLimited); ok && !tl.TypingLimit().Allow(d.Conv, h.d.Now()) {
		return protocol.Empty{}, nil
	}
	user := c.User()
	rd := readable{h: h, user: user}
	if err := rd.check(ctx, d.Conv); err != nil {
		return nil, err
	}
	if h.d.Pushes == nil || kind == "dm" && a == b {
		return protocol.Empty{}, nil // no one else to tell
	}
	h.d.Pushes.Typing(d.Conv, user, protocol.EncodeTypingPush(protocol.TypingPush{Conv: d.Conv, From: user}))
	return protocol.Empty{}, nil
}

// read records how far the user has read a conversation. A position that
// rose is pushed to the other side of a direct conversation and to the
// user's own other connections; in a room, only to the latter.
func (h *Handler) read(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.ReadData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	kind, a, b, err := receiptConv(protocol.ActionRead, d.Conv)
	if err != nil {
		return nil, err
	}
	if d.Seq < 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "seq must not be negative")
	}
	user := c.User()
	rd := readable{h: h, user: user}
	if err := rd.check(ctx, d.Conv); err != nil {
		return nil, err
	}
	if h.d.Reads == nil {
		return nil, protocol.Errorf(protocol.CodeUnavailable, "read receipts are not set up on this node")
	}
	// One round trip: the position's script checks seq against the
	// conversation's counter. Only where Redis holds no counter (no
	// message yet, or Redis lost its data) is the latest read first, as
	// sync reads it, seeding the counter from MongoDB.
	pos, raised, err := h.d.Reads.Mark(ctx, d.Conv, user, d.Seq, true)
	var above *AboveLatest
	switch {
	case errors.As(err, &above):
		return nil, protocol.Errorf(protocol.CodeBadRequest, "seq %d is above the latest of %s (%d)", d.Seq, d.Conv, above.Latest)
	case errors.Is(err, ErrNoLatest):
		latest, err := h.d.Journal.Latest(ctx, []string{d.Conv})
		if err != nil {
			return nil, err
		}
		top := latest[d.Conv]
		if d.Seq > top {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "seq %d is above the latest of %s (%d)", d.Seq, d.Conv, top)
		}
		if top == 0 {
			// Nothing to read (the conversation may not even exist):
			// nothing is stored for a name a client sends.
			return protocol.ReadReply{Conv: d.Conv, Seq: 0}, nil
		}
		if pos, raised, err = h.d.Reads.Mark(ctx, d.Conv, user, d.Seq, false); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	if raised && h.d.Pushes != nil {
		push := protocol.EncodeReadPush(protocol.ReadPush{Conv: d.Conv, User: user, Seq: pos})
		if other := peerOf(kind, a, b, user); other != "" {
			h.d.Pushes.ToUser(other, "", push)
		}
		h.d.Pushes.ToUser(user, c.ConnID(), push)
	}
	return protocol.ReadReply{Conv: d.Conv, Seq: pos}, nil
}

// peerOf is the other user of a direct conversation, "" for a room or a
// conversation with oneself.
func peerOf(kind, a, b, user string) string {
	switch {
	case kind != "dm":
		return ""
	case user == a && user != b:
		return b
	case user == b && user != a:
		return a
	}
	return ""
}

// addReadPositions sets, in the sync reply out, the user's read position
// of every direct conversation and room that has messages and, of a direct
// conversation, the other user's.
func (h *Handler) addReadPositions(ctx context.Context, user string, out protocol.SyncReply) error {
	if h.d.Reads == nil {
		return nil
	}
	want := make(map[string][]string, len(out.Convs))
	for cv, sc := range out.Convs {
		if sc.Latest == 0 {
			continue // nothing to have read, and nothing to look up for a name a client sends
		}
		kind, a, b, _ := protocol.ParseConv(cv)
		switch {
		case kind == "room":
			want[cv] = []string{user}
		case kind == "dm" && peerOf(kind, a, b, user) != "":
			want[cv] = []string{user, peerOf(kind, a, b, user)}
		case kind == "dm":
			want[cv] = []string{user}
		}
	}
	if len(want) == 0 {
		return nil
	}
	pos, err := h.d.Reads.Positions(ctx, want)
	if err != nil {
		return err
	}
	for cv, users := range want {
		sc := out.Convs[cv]
		sc.Read = pos[cv][user]
		if len(users) == 2 {
			sc.PeerRead = pos[cv][users[1]]
		}
		out.Convs[cv] = sc
	}
	return nil
}
