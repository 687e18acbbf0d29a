package handler

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"chatcluster/protocol"
)

// Edits and recalls are events of their conversation (protocol.KindEdit,
// protocol.KindRecall): each is stored like a message, with a seq of its
// own, and pushed to the conversation's members as a message push, so
// offsets, sync and rebuild cover them. Reading applies them (see
// Journal.Range). Direct conversations are handled here; a room's go to
// the leader (Rooms.Change), which applies the same EventPolicy in the
// room's order.

// Defaults of EventPolicy.
const (
	DefaultEditWindow   = 24 * time.Hour
	DefaultRecallWindow = 2 * time.Minute
)

// EventPolicy says who may edit and recall which message. Only its author
// may edit a message, within EditWindow of sending it; its author may
// recall it within RecallWindow. Operators, and in a room its owner, may
// recall any message of a conversation they can read, at any time. Nobody
// changes an event, or a recalled message.
type EventPolicy struct {
	EditWindow   time.Duration // 0: DefaultEditWindow
	RecallWindow time.Duration // 0: DefaultRecallWindow
	// Operators are the users, by their own names, who may recall any
	// message; nil: none.
	Operators map[string]bool
}

func (p EventPolicy) editWindow() time.Duration {
	if p.EditWindow > 0 {
		return p.EditWindow
	}
	return DefaultEditWindow
}

func (p EventPolicy) recallWindow() time.Duration {
	if p.RecallWindow > 0 {
		return p.RecallWindow
	}
	return DefaultRecallWindow
}

// Allow checks that user may change target with an event of kind (edit or
// recall) at now (unix ms). target is what is stored at the seq asked for,
// in its final state (Target); owner is the owner of the target's room, ""
// for none. The error is a *protocol.Error with the client's code.
func (p EventPolicy) Allow(kind, user string, target protocol.Message, owner string, now int64) error {
	what := "message " + strconv.FormatInt(target.Seq, 10) + " of " + target.Conv
	switch {
	case target.Kind != "":
		return protocol.Errorf(protocol.CodeBadRequest, "seq %d of %s is an event (%s), not a message", target.Seq, target.Conv, target.Kind)
	case target.Recalled && kind == protocol.KindEdit:
		return protocol.Errorf(protocol.CodeConflict, "%s was recalled: it can no longer be edited", what)
	case target.Recalled:
		return protocol.Errorf(protocol.CodeConflict, "%s is recalled already", what)
	}
	age := time.Duration(now-target.TS) * time.Millisecond
	if kind == protocol.KindEdit {
		switch {
		case target.From != user:
			return protocol.Errorf(protocol.CodeForbidden, "%s is not yours: only its author may edit it", what)
		case age > p.editWindow():
			return protocol.Errorf(protocol.CodeForbidden, "the edit window (%s) of %s has passed", span(p.editWindow()), what)
		}
		return nil
	}
	if p.Operators[user] || owner != "" && owner == user {
		return nil
	}
	others := "an operator"
	if target.Room != "" {
		others = "an operator or the room's owner"
	}
	switch {
	case target.From != user:
		return protocol.Errorf(protocol.CodeForbidden, "%s is not yours: only its author or %s may recall it", what, others)
	case age > p.recallWindow():
		return protocol.Errorf(protocol.CodeForbidden, "the recall window (%s) of %s has passed; only %s may recall it now", span(p.recallWindow()), what, others)
	}
	return nil
}

// span writes a window the way people say it: 24h, 2m, 1m30s.
func span(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func (h *Handler) edit(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.EditData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if err := checkText(d.Text); err != nil {
		return nil, err
	}
	return h.change(ctx, c, protocol.KindEdit, d.Conv, d.Seq, d.Text)
}

func (h *Handler) recall(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.RecallData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	return h.change(ctx, c, protocol.KindRecall, d.Conv, d.Seq, "")
}

// change stores the edit or recall by c's user of message seq of conv and
// hands it to the conversation's members, and to the user's other
// connections (devices); the reply names the event.
func (h *Handler) change(ctx context.Context, c Conn, kind, conv string, seq int64, text string) (any, error) {
	user := c.User()
	ck, a, b, ok := protocol.ParseConv(conv)
	switch {
	case conv == "":
		return nil, protocol.Errorf(protocol.CodeBadRequest, "%s needs conv and seq: the message's conversation and seq", kind)
	case !ok:
		return nil, protocol.Errorf(protocol.CodeBadRequest, "invalid conversation %q", conv)
	case seq <= 0:
		return nil, protocol.Errorf(protocol.CodeBadRequest, "seq must be a positive number: the seq of the message to %s", kind)
	case ck == "cs":
		return nil, protocol.Errorf(protocol.CodeBadRequest, "messages of support conversations cannot be edited or recalled; only those of direct conversations and rooms")
	}
	if kind == protocol.KindEdit && h.d.Filter != nil {
		text = h.d.Filter(text)
	}
	m := protocol.Message{ID: h.d.NewID(), Conv: conv, From: user, Kind: kind, Ref: seq, Text: text, TS: h.d.Now()}
	if ck == "room" {
		m.Room = a
		if err := h.d.Router.Ready(); err != nil {
			return nil, err
		}
		stored, err := h.d.Rooms.Change(ctx, m)
		if err != nil {
			return nil, err
		}
		return protocol.ChatReply{ID: stored.ID, Conv: stored.Conv, Seq: stored.Seq, TS: stored.TS}, nil
	}
	rd := readable{h: h, user: user}
	if err := rd.check(ctx, conv); err != nil {
		return nil, err
	}
	target, err := Target(ctx, h.d.Journal, conv, seq)
	if err != nil {
		return nil, err
	}
	if err := h.d.Events.Allow(kind, user, target, "", m.TS); err != nil {
		return nil, err
	}
	m.To = a
	if a == user {
		m.To = b
	}
	if err := h.d.Router.Ready(); err != nil {
		return nil, err
	}
	st, err := h.d.Journal.Append(ctx, m, EventIdem(m.ID), []string{a, b})
	if err != nil {
		return nil, err
	}
	if st.Dup {
		return protocol.ChatReply{ID: st.Message.ID, Conv: st.Message.Conv, Seq: st.Message.Seq, TS: st.Message.TS}, nil
	}
	h.d.Router.Deliver(st.Message, st.Push, []string{m.To})
	if m.To != user {
		// This connection has the reply.
		h.d.Router.DeliverExcept(user, c.ConnID(), st.Push, &st.Message)
	}
	return protocol.ChatReply{ID: st.Message.ID, Conv: st.Message.Conv, Seq: st.Message.Seq, TS: st.Message.TS}, nil
}

// EventIdem is the idempotency key an edit or recall is stored under: its
// id, so that the same change handed over twice is stored once.
func EventIdem(id string) string { return "ev:" + id }

// Ranger reads stored messages (Journal.Range).
type Ranger interface {
	Range(ctx context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error)
}

// Target returns what is stored at seq of conv, in its final state; a
// *protocol.Error 404 when nothing is.
func Target(ctx context.Context, r Ranger, conv string, seq int64) (protocol.Message, error) {
	msgs, err := r.Range(ctx, conv, seq-1, seq+1, 1, false)
	if err != nil {
		return protocol.Message{}, err
	}
	if i := slices.IndexFunc(msgs, func(m protocol.Message) bool { return m.Seq == seq }); i >= 0 {
		return msgs[i], nil
	}
	return protocol.Message{}, protocol.Errorf(protocol.CodeNotFound, "there is no message %d in %s", seq, conv)
}

// eventShape says what is wrong with m, a message or event uploaded for a
// rebuild of a conversation of kind convKind ("dm", "room", "cs"); "" for
// nothing.
func eventShape(convKind string, m protocol.Message) string {
	textOK := checkText(m.Text) == nil
	switch {
	case !protocol.ValidKind(m.Kind):
		return `kind must be "", "edit", "recall", "join" or "leave"`
	case convKind == "cs" && (m.Kind != "" || m.Edited != 0 || m.Recalled):
		return "support conversations hold no events: kind, edited and recalled must be absent"
	case m.Edited < 0:
		return "edited must not be negative"
	case m.Kind == "" && m.Ref != 0:
		return "a message has no ref"
	case m.Kind == "" && m.Recalled && (m.Text != "" || m.Edited != 0):
		return "a recalled message has no text and no edited time"
	case m.Kind == "" && !m.Recalled && !textOK:
		return "text must be 1 to 8192 bytes"
	case (m.Kind == protocol.KindEdit || m.Kind == protocol.KindRecall) && (m.Ref <= 0 || m.Ref >= m.Seq):
		return "ref must be the seq of an earlier message"
	case m.Kind != "" && m.Edited != 0:
		return "an event has no edited time"
	case m.Kind == protocol.KindEdit && m.Recalled && m.Text != "":
		return "an edit of a recalled message has no text"
	case m.Kind == protocol.KindEdit && !m.Recalled && !textOK:
		return "text must be 1 to 8192 bytes"
	case m.Kind == protocol.KindRecall && (m.Text != "" || m.Recalled):
		return "a recall has no text and is not itself recalled"
	case (m.Kind == protocol.KindJoin || m.Kind == protocol.KindLeave) && convKind != "room":
		return "join and leave events belong to rooms"
	case (m.Kind == protocol.KindJoin || m.Kind == protocol.KindLeave) && (m.Ref != 0 || m.Text != "" || m.Recalled):
		return "a join or leave has no ref, text or recalled"
	}
	return ""
}

// checkAuthors checks that every edit and recall among msgs, uploaded by
// user for a rebuild of conv, was made by someone allowed to: an edit by
// its message's author, a recall by the author, an operator or the owner
// of room (conv's room, "" for another conversation). The messages they
// change are looked up among msgs, then in what the server holds.
func (h *Handler) checkAuthors(ctx context.Context, user, conv, room string, msgs []protocol.Message) error {
	bySeq := make(map[int64]protocol.Message, len(msgs))
	for _, m := range msgs {
		bySeq[m.Seq] = m
	}
	var unknown []int64
	for _, m := range msgs {
		if _, ok := bySeq[m.Ref]; m.Changes() && !ok {
			unknown = append(unknown, m.Ref)
		}
	}
	slices.Sort(unknown)
	unknown = slices.Compact(unknown)
	// What the server holds of them, a span of at most a sync's worth
	// at a time.
	for len(unknown) > 0 {
		lo, n := unknown[0], 1
		for n < len(unknown) && unknown[n]-lo < protocol.MaxSyncMessages {
			n++
		}
		held, err := h.d.Journal.Range(ctx, conv, lo-1, unknown[n-1]+1, protocol.MaxSyncMessages, false)
		if err != nil {
			return err
		}
		for _, m := range held {
			if _, ok := bySeq[m.Seq]; !ok {
				bySeq[m.Seq] = m
			}
		}
		unknown = unknown[n:]
	}
	owner, ownerKnown := "", false
	for i, m := range msgs {
		if !m.Changes() {
			continue
		}
		bad := func(why string) error {
			return protocol.Errorf(protocol.CodeBadRequest, "message %d (seq %d): %s", i, m.Seq, why)
		}
		target, ok := bySeq[m.Ref]
		switch {
		case !ok:
			return bad("its message, seq " + strconv.FormatInt(m.Ref, 10) + ", is not known: upload it too")
		case target.Kind != "":
			return bad("its target, seq " + strconv.FormatInt(m.Ref, 10) + ", is an event, not a message")
		case target.From == m.From, m.Kind == protocol.KindRecall && h.d.Events.Operators[m.From]:
			continue
		case m.Kind == protocol.KindEdit:
			return bad("an edit is its message's author's, and " + target.From + " wrote seq " + strconv.FormatInt(m.Ref, 10))
		}
		if room != "" && !ownerKnown {
			list, err := h.d.Rooms.List(ctx, user)
			if err != nil {
				return err
			}
			if j := slices.IndexFunc(list, func(r protocol.RoomInfo) bool { return r.Name == room }); j >= 0 {
				owner = list[j].Owner
			}
			ownerKnown = true
		}
		if owner == "" || m.From != owner {
			return bad("a recall is its message's author's, an operator's or the room owner's")
		}
	}
	return nil
}
