package handler

import (
	"context"
	"strings"
	"testing"
	"time"

	"chatcluster/protocol"
)

// eventTest is a handler whose clock the test moves, with an edit window
// of 1 h, a recall window of 1 min and one operator, "op".
type eventTest struct {
	t     *testing.T
	h     *Handler
	j     *fakeJournal
	r     *fakeRouter
	rooms *fakeRooms
	now   int64
}

func newEventTest(t *testing.T) *eventTest {
	et := &eventTest{t: t, now: 1_700_000_000_000}
	et.j = &fakeJournal{convs: map[string][]protocol.Message{}, idem: map[string]protocol.Message{}, rooms: map[string][]string{}}
	et.r = &fakeRouter{}
	policy := EventPolicy{EditWindow: time.Hour, RecallWindow: time.Minute, Operators: map[string]bool{"op": true}}
	et.rooms = &fakeRooms{j: et.j, members: map[string][]string{}, owners: map[string]string{}, policy: &policy}
	n := 0
	et.h = New(Deps{
		Node: "n1", Users: fakeUsers{pw: map[string]string{"amy": "x", "bob": "x", "cat": "x", "op": "x"}},
		Sessions: fakeSessions{}, Journal: et.j, Router: et.r, Rooms: et.rooms, Words: &fakeWords{},
		Filter: func(s string) string { return strings.ReplaceAll(s, "darn", "****") },
		Events: policy,
		Now:    func() int64 { return et.now },
		NewID:  func() string { n++; return "id" + string(rune('a'+n)) },
	})
	return et
}

func (et *eventTest) wait(d time.Duration) { et.now += d.Milliseconds() }

// do runs action for user and checks the reply's code and that its error
// holds every one of words.
func (et *eventTest) do(user, action string, data any, code int, words ...string) protocol.Reply {
	et.t.Helper()
	rep := et.h.Handle(context.Background(), &fakeConn{id: user, user: user}, req(action, data))
	if rep.Code != code {
		et.t.Fatalf("%s %s %v: code %d (%s), want %d", user, action, data, rep.Code, rep.Error, code)
	}
	for _, w := range words {
		if !strings.Contains(rep.Error, w) {
			et.t.Errorf("%s %s %v: error %q does not say %q", user, action, data, rep.Error, w)
		}
	}
	return rep
}

func (et *eventTest) history(user, conv string) map[int64]protocol.Message {
	et.t.Helper()
	rep := et.do(user, "history", map[string]any{"conv": conv}, 0)
	out := map[int64]protocol.Message{}
	for _, m := range rep.Data.(protocol.Messages).Messages {
		out[m.Seq] = m
	}
	return out
}

func TestEditAndRecallDirect(t *testing.T) {
	et := newEventTest(t)
	const dm = "dm:amy:bob"
	et.do("amy", "chat", map[string]string{"to": "bob", "text": "hi"}, 0)
	et.do("bob", "chat", map[string]string{"to": "amy", "text": "yo"}, 0)

	et.wait(10 * time.Second)
	et.r.delivered = nil
	rep := et.do("amy", "edit", map[string]any{"conv": dm, "seq": 1, "text": "hi, darn"}, 0)
	if r := rep.Data.(protocol.ChatReply); r.Seq != 3 || r.Conv != dm || r.TS != et.now || r.ID == "" {
		t.Fatalf("edit reply %+v, want the event's seq 3", r)
	}
	if len(et.r.delivered) != 1 {
		t.Fatalf("delivered %+v, want the edit to bob", et.r.delivered)
	}
	if ev := et.r.delivered[0]; ev.Kind != protocol.KindEdit || ev.Ref != 1 || ev.Text != "hi, ****" || ev.From != "amy" || ev.To != "bob" || ev.Seq != 3 {
		t.Fatalf("delivered %+v, want amy's filtered edit of seq 1 to bob", ev)
	}
	h := et.history("bob", dm)
	if m := h[1]; m.Text != "hi, ****" || m.Edited != et.now || m.Recalled {
		t.Fatalf("history shows seq 1 as %+v, want it edited", m)
	}
	if h[3].Kind != protocol.KindEdit || h[3].Ref != 1 {
		t.Fatalf("history shows seq 3 as %+v, want the edit itself", h[3])
	}

	et.do("bob", "edit", map[string]any{"conv": dm, "seq": 1, "text": "mine now"}, 403, "not yours", "only its author")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 2, "text": "x"}, 403, "not yours")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 3, "text": "x"}, 400, "is an event (edit)")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 99, "text": "x"}, 404, "no message 99")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 1, "text": ""}, 400, "text is empty")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 1, "text": strings.Repeat("x", protocol.MaxTextBytes+1)}, 413)
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 0, "text": "x"}, 400, "seq")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": "1", "text": "x"}, 400)
	et.do("amy", "edit", map[string]any{"seq": 1, "text": "x"}, 400, "conv")
	et.do("amy", "edit", map[string]any{"conv": "dm:bob:amy", "seq": 1, "text": "x"}, 400, "invalid conversation")
	et.do("amy", "recall", map[string]any{"conv": "dm:bob:cat", "seq": 1}, 403)
	et.do("amy", "recall", map[string]any{"conv": "cs:~abc:1", "seq": 1}, 400, "support")
	// An operator is no participant of someone else's conversation.
	et.do("op", "recall", map[string]any{"conv": dm, "seq": 1}, 403)

	// Recalled within the window: the text is gone, from the message and
	// from its edit.
	et.wait(30 * time.Second)
	et.r.delivered = nil
	rep = et.do("amy", "recall", map[string]any{"conv": dm, "seq": 1}, 0)
	if r := rep.Data.(protocol.ChatReply); r.Seq != 4 {
		t.Fatalf("recall reply %+v, want seq 4", r)
	}
	if len(et.r.delivered) != 1 || et.r.delivered[0].Kind != protocol.KindRecall || et.r.delivered[0].Ref != 1 || et.r.delivered[0].Text != "" {
		t.Fatalf("delivered %+v, want the recall to bob", et.r.delivered)
	}
	h = et.history("amy", dm)
	if m := h[1]; !m.Recalled || m.Text != "" || m.Edited != 0 {
		t.Fatalf("history shows seq 1 as %+v, want it recalled", m)
	}
	if m := h[3]; !m.Recalled || m.Text != "" {
		t.Fatalf("history shows the edit of the recalled seq 1 as %+v, want it recalled too", m)
	}
	if h[2].Text != "yo" || h[4].Kind != protocol.KindRecall {
		t.Fatalf("history %+v", h)
	}
	et.do("amy", "recall", map[string]any{"conv": dm, "seq": 1}, 409, "recalled already")
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 1, "text": "back"}, 409, "was recalled", "no longer be edited")

	// The windows: bob's message is older than a minute now; amy's next
	// one is edited until an hour has passed.
	et.do("bob", "recall", map[string]any{"conv": dm, "seq": 4}, 400, "event")
	et.wait(25 * time.Second)
	et.do("bob", "recall", map[string]any{"conv": dm, "seq": 2}, 403, "recall window (1m)", "only an operator")
	et.do("amy", "chat", map[string]string{"to": "bob", "text": "later"}, 0)
	et.wait(59 * time.Minute)
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 5, "text": "still"}, 0)
	et.wait(2 * time.Minute)
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": 5, "text": "too late"}, 403, "edit window (1h)")

	// An operator recalls anything in a conversation of its own, at any
	// time.
	et.do("amy", "chat", map[string]string{"to": "op", "text": "spam"}, 0)
	et.wait(48 * time.Hour)
	et.do("op", "recall", map[string]any{"conv": "dm:amy:op", "seq": 1}, 0)
	if m := et.history("amy", "dm:amy:op")[1]; !m.Recalled {
		t.Fatalf("op's recall left %+v", m)
	}

	// Refused before anything is stored while the cluster is busy.
	rep = et.do("amy", "chat", map[string]string{"to": "bob", "text": "fresh"}, 0)
	et.r.busy = true
	before := len(et.j.convs[dm])
	et.do("amy", "edit", map[string]any{"conv": dm, "seq": rep.Data.(protocol.ChatReply).Seq, "text": "x"}, 503)
	et.do("amy", "recall", map[string]any{"conv": dm, "seq": rep.Data.(protocol.ChatReply).Seq}, 503)
	if len(et.j.convs[dm]) != before {
		t.Fatalf("a refused edit was stored")
	}
}

func TestEditAndRecallInRooms(t *testing.T) {
	et := newEventTest(t)
	const lobby = "room:lobby"
	et.do("amy", "joinRoom", map[string]string{"room": "lobby"}, 0) // amy made it: its owner
	et.do("bob", "joinRoom", map[string]string{"room": "lobby"}, 0)
	et.do("bob", "chat", map[string]string{"room": "lobby", "text": "first"}, 0)
	et.do("bob", "chat", map[string]string{"room": "lobby", "text": "second"}, 0)

	et.do("cat", "edit", map[string]any{"conv": lobby, "seq": 1, "text": "x"}, 403, "not a member")
	et.do("amy", "edit", map[string]any{"conv": "room:nowhere", "seq": 1, "text": "x"}, 404)
	et.do("amy", "edit", map[string]any{"conv": lobby, "seq": 1, "text": "x"}, 403, "not yours")
	et.do("bob", "edit", map[string]any{"conv": lobby, "seq": 1, "text": "first, darn"}, 0)
	if got := et.rooms.posted[len(et.rooms.posted)-1]; got.Kind != protocol.KindEdit || got.Text != "first, ****" || got.Room != "lobby" {
		t.Fatalf("the room got %+v, want bob's filtered edit", got)
	}

	et.wait(time.Hour)
	et.do("bob", "recall", map[string]any{"conv": lobby, "seq": 2}, 403, "recall window (1m)", "an operator or the room's owner")
	// The owner recalls any message of the room, any time.
	et.do("amy", "recall", map[string]any{"conv": lobby, "seq": 2}, 0)
	et.do("bob", "edit", map[string]any{"conv": lobby, "seq": 2, "text": "x"}, 409)
	et.do("amy", "recall", map[string]any{"conv": lobby, "seq": 2}, 409)
	// An operator too, once a member.
	et.do("op", "recall", map[string]any{"conv": lobby, "seq": 1}, 403, "not a member")
	et.do("op", "joinRoom", map[string]string{"room": "lobby"}, 0)
	et.do("op", "recall", map[string]any{"conv": lobby, "seq": 1}, 0)
	h := et.history("bob", lobby)
	if !h[1].Recalled || !h[2].Recalled || h[1].Text != "" || !h[3].Recalled {
		t.Fatalf("history %+v, want 1 and 2 recalled, and the edit 3 of 1 too", h)
	}
}

func TestPolicyWindowsDefault(t *testing.T) {
	var p EventPolicy
	m := protocol.Message{Conv: "dm:a:b", Seq: 1, From: "a", TS: 0}
	day := (24 * time.Hour).Milliseconds()
	if err := p.Allow(protocol.KindEdit, "a", m, "", day); err != nil {
		t.Errorf("edit at 24h: %v", err)
	}
	if err := p.Allow(protocol.KindEdit, "a", m, "", day+1); err == nil || !strings.Contains(err.Error(), "edit window (24h)") {
		t.Errorf("edit after 24h: %v", err)
	}
	if err := p.Allow(protocol.KindRecall, "a", m, "", (2 * time.Minute).Milliseconds()); err != nil {
		t.Errorf("recall at 2m: %v", err)
	}
	if err := p.Allow(protocol.KindRecall, "a", m, "", (2*time.Minute).Milliseconds()+1); err == nil || !strings.Contains(err.Error(), "recall window (2m)") {
		t.Errorf("recall after 2m: %v", err)
	}
}

func TestRebuildEvents(t *testing.T) {
	et := newEventTest(t)
	const dm = "dm:amy:bob"
	et.do("amy", "chat", map[string]string{"to": "bob", "text": "one"}, 0) // seq 1, held by the server
	m := func(seq int64, from, to, kind string, ref int64, text string) protocol.Message {
		return protocol.Message{ID: "r" + string(rune('a'+seq)), Conv: dm, Seq: seq, From: from, To: to, Kind: kind, Ref: ref, Text: text, TS: 5}
	}
	edited := m(2, "bob", "amy", "", 0, "two, edited")
	edited.Edited = 6
	recalled := m(3, "amy", "bob", "", 0, "")
	recalled.Recalled = true
	good := []protocol.Message{edited, recalled,
		m(4, "bob", "amy", protocol.KindEdit, 2, "two, darn"),
		m(5, "amy", "bob", protocol.KindRecall, 3, ""),
		m(6, "amy", "bob", protocol.KindEdit, 1, "one, edited"), // of the server's seq 1
	}
	rep := et.do("amy", "rebuild", map[string]any{"conv": dm, "messages": good}, 0)
	if r := rep.Data.(protocol.RebuildReply); r.Restored != 5 || r.Latest != 6 {
		t.Fatalf("rebuild %+v", r)
	}
	if got := et.j.convs[dm][3]; got.Text != "two, ****" {
		t.Fatalf("a rebuilt edit's text passes the filter: %+v", got)
	}
	h := et.history("bob", dm)
	if h[1].Text != "one, edited" || h[2].Text != "two, ****" || !h[3].Recalled {
		t.Fatalf("history after rebuild %+v", h)
	}

	bad := map[string]protocol.Message{
		"unknown kind":             m(7, "amy", "bob", "poke", 0, "x"),
		"join in a dm":             m(7, "amy", "bob", protocol.KindJoin, 0, ""),
		"edit of another's":        m(7, "amy", "bob", protocol.KindEdit, 2, "x"),
		"recall of another's":      m(7, "bob", "amy", protocol.KindRecall, 1, ""),
		"recall with text":         m(7, "amy", "bob", protocol.KindRecall, 1, "x"),
		"edit without text":        m(7, "amy", "bob", protocol.KindEdit, 1, ""),
		"ref not earlier":          m(7, "amy", "bob", protocol.KindEdit, 7, "x"),
		"ref of nothing":           m(9, "amy", "bob", protocol.KindEdit, 8, "x"),
		"ref of an event":          m(7, "amy", "bob", protocol.KindRecall, 5, ""),
		"message with a ref":       m(7, "amy", "bob", "", 1, "x"),
		"recalled message of text": {ID: "x", Conv: dm, Seq: 7, From: "amy", To: "bob", Recalled: true, Text: "x", TS: 5},
		"negative edited":          {ID: "x", Conv: dm, Seq: 7, From: "amy", To: "bob", Edited: -1, Text: "x", TS: 5},
	}
	for name, msg := range bad {
		t.Run(name, func(t *testing.T) {
			et.t = t
			et.do("amy", "rebuild", map[string]any{"conv": dm, "messages": []protocol.Message{msg}}, 400)
		})
	}
	et.t = t

	// In a room, the owner's recall of another's message is allowed; a
	// member's is not.
	et.do("amy", "joinRoom", map[string]string{"room": "lobby"}, 0)
	et.do("bob", "joinRoom", map[string]string{"room": "lobby"}, 0)
	et.do("bob", "chat", map[string]string{"room": "lobby", "text": "hi"}, 0)
	rm := func(seq int64, from, kind string, ref int64) protocol.Message {
		return protocol.Message{ID: "q" + string(rune('a'+seq)), Conv: "room:lobby", Seq: seq, From: from, Room: "lobby", Kind: kind, Ref: ref, TS: 5}
	}
	et.do("bob", "rebuild", map[string]any{"conv": "room:lobby", "messages": []protocol.Message{rm(2, "amy", protocol.KindRecall, 1), rm(3, "cat", protocol.KindJoin, 0)}}, 0)
	et.do("bob", "rebuild", map[string]any{"conv": "room:lobby", "messages": []protocol.Message{rm(4, "bob", protocol.KindRecall, 2)}}, 400, "event")
	et.do("amy", "chat", map[string]string{"room": "lobby", "text": "mine"}, 0) // seq 4
	et.do("bob", "rebuild", map[string]any{"conv": "room:lobby", "messages": []protocol.Message{rm(5, "bob", protocol.KindRecall, 4)}}, 400, "author's, an operator's or the room owner's")
	et.do("bob", "rebuild", map[string]any{"conv": "room:lobby", "messages": []protocol.Message{rm(5, "op", protocol.KindRecall, 4)}}, 0)
}
