package protocol

import (
	"cmp"
	"slices"
)

// Event kinds (Message.Kind). An event is stored in its conversation like
// a message, with a seq of its own, so that whatever covers messages
// (pushes, sync, history, rebuild) covers it too.
const (
	KindEdit   = "edit"   // From changed the text of message Ref to Text
	KindRecall = "recall" // From recalled message Ref; Text is ""
	KindJoin   = "join"   // From joined room Room; Text is ""
	KindLeave  = "leave"  // From left room Room; Text is ""
)

// ValidKind reports whether k is "" (a message) or one of the event kinds.
func ValidKind(k string) bool {
	switch k {
	case "", KindEdit, KindRecall, KindJoin, KindLeave:
		return true
	}
	return false
}

// Changes reports whether m is an event that changes an earlier message:
// an edit or a recall.
func (m *Message) Changes() bool { return m.Kind == KindEdit || m.Kind == KindRecall }

// EditData is the data of an edit request: the new text of message Seq of
// Conv.
type EditData struct {
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
	Text string `json:"text"`
}

// RecallData is the data of a recall request: message Seq of Conv.
type RecallData struct {
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
}

// MemberPush tells the members of a room that Username joined or left it.
// ID, Conv, Seq and TS are those of the join or leave event stored in the
// room's conversation (Event gives it whole), so that a client's offset
// advances past it and a client may hold it like any entry. TS is the
// last field, as in a message push (MessagePushTS reads it).
type MemberPush struct {
	Room     string `json:"room"`
	Username string `json:"username"`
	Joined   bool   `json:"joined"`
	ID       string `json:"id"`
	Conv     string `json:"conv"`
	Seq      int64  `json:"seq"`
	TS       int64  `json:"ts"`
}

// Event is the join or leave event p tells of, as history reads it.
func (p MemberPush) Event() Message {
	kind := KindLeave
	if p.Joined {
		kind = KindJoin
	}
	return Message{ID: p.ID, Conv: p.Conv, Seq: p.Seq, From: p.Username, Room: p.Room, Kind: kind, TS: p.TS}
}

// ApplyEvents brings msgs to their final state under events and under the
// events among msgs themselves: a message that an edit targets takes the
// text of its last edit (by seq) and Edited its time; a recalled one has
// Recalled set, Text "" and Edited 0, whatever the edits before or after.
// An edit among msgs whose target is recalled reads back recalled too, with
// Text "", so a recalled text is not left in its edits. events may hold
// any events of the conversation, in any order, repeated; only edits and
// recalls of messages (not of events) count. msgs are changed in place.
func ApplyEvents(msgs []Message, events []Message) {
	var evs []Message
	for _, list := range [][]Message{msgs, events} {
		for _, e := range list {
			if e.Changes() && e.Ref > 0 && e.Ref < e.Seq {
				evs = append(evs, e)
			}
		}
	}
	if len(evs) == 0 {
		return
	}
	slices.SortFunc(evs, func(a, b Message) int { return cmp.Compare(a.Seq, b.Seq) })
	evs = slices.CompactFunc(evs, func(a, b Message) bool { return a.Seq == b.Seq })
	recalled := map[int64]bool{}
	edit := map[int64]Message{} // target -> its last edit
	for _, e := range evs {
		if e.Kind == KindRecall {
			recalled[e.Ref] = true
		} else {
			edit[e.Ref] = e
		}
	}
	// An event is never a target: one that names another event's seq
	// changes nothing.
	isEvent := map[int64]bool{}
	for _, m := range msgs {
		if m.Kind != "" {
			isEvent[m.Seq] = true
		}
	}
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.Kind == "" && recalled[m.Seq]:
			m.Recalled, m.Text, m.Edited = true, "", 0
		case m.Kind == "":
			if e, ok := edit[m.Seq]; ok {
				m.Text, m.Edited = e.Text, e.TS
			}
		case m.Kind == KindEdit && recalled[m.Ref] && !isEvent[m.Ref]:
			m.Recalled, m.Text = true, ""
		}
	}
}
