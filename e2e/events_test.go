package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// members returns the member pushes u received, in order.
func (u *user) members() []protocol.MemberPush {
	var out []protocol.MemberPush
	for _, p := range u.otherPushes() {
		var mp protocol.MemberPush
		if p.Action == protocol.PushMember && json.Unmarshal(p.Data, &mp) == nil {
			out = append(out, mp)
		}
	}
	return out
}

// pushedEvent reports whether u got the message push of the event at seq
// of conv, of kind, changing ref.
func (u *user) pushedEvent(conv string, seq int64, kind string, ref int64) bool {
	return slices.ContainsFunc(u.received(), func(m protocol.Message) bool {
		return m.Conv == conv && m.Seq == seq && m.Kind == kind && m.Ref == ref
	})
}

// hasMember reports whether u got the member push of seq of room.
func (u *user) hasMember(room string, seq int64, who string, joined bool) bool {
	return slices.ContainsFunc(u.members(), func(p protocol.MemberPush) bool {
		return p.Room == room && p.Seq == seq && p.Username == who && p.Joined == joined && p.Conv == protocol.RoomConv(room) && p.ID != "" && p.TS > 0
	})
}

func bySeqOf(msgs []protocol.Message) map[int64]protocol.Message {
	out := map[int64]protocol.Message{}
	for _, m := range msgs {
		out[m.Seq] = m
	}
	return out
}

func mustCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	if chatclient.Code(err) != code {
		t.Fatalf("%s: %v, want %d", what, err, code)
	}
}

// Edits and recalls of a direct conversation, across two nodes: the other
// side gets them pushed, history and sync show the final state and the
// events, and a client that was away catches up with sync.
func TestEditAndRecallDirect(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "eva", "ebo")
	eva := connect(t, c.Node(0).WSURL, "eva")
	ebo := connect(t, c.Node(1).WSURL, "ebo")
	const dm = "dm:ebo:eva"
	for _, s := range []string{"hello", "oops, wrong chat"} {
		if _, err := eva.conn.Chat(ctxT(t, 5*time.Second), "ebo", s, ""); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "ebo gets both messages", func() bool { return len(ebo.received()) >= 2 })

	ed, err := eva.conn.Edit(ctxT(t, 5*time.Second), dm, 1, "hello, ebo")
	if err != nil || ed.Seq != 3 || ed.Conv != dm || ed.ID == "" {
		t.Fatalf("edit: %+v, %v; want the event's seq 3", ed, err)
	}
	rc, err := eva.conn.Recall(ctxT(t, 5*time.Second), dm, 2)
	if err != nil || rc.Seq != 4 {
		t.Fatalf("recall: %+v, %v; want seq 4", rc, err)
	}
	testenv.WaitFor(t, 10*time.Second, "ebo, on the other node, gets the edit and the recall", func() bool {
		return ebo.pushedEvent(dm, 3, protocol.KindEdit, 1) && ebo.pushedEvent(dm, 4, protocol.KindRecall, 2)
	})
	if got := ebo.received(); got[2].Text != "hello, ebo" || got[2].From != "eva" || got[3].Text != "" {
		t.Fatalf("pushes %+v", got)
	}
	checkOrderOnce(t, "ebo", ebo.received())

	mustCode(t, "ebo edits eva's message", func() error { _, err := ebo.conn.Edit(ctxT(t, 5*time.Second), dm, 1, "mine"); return err }(), 403)
	mustCode(t, "an edit of nothing", func() error { _, err := eva.conn.Edit(ctxT(t, 5*time.Second), dm, 99, "x"); return err }(), 404)
	mustCode(t, "an edit of an event", func() error { _, err := eva.conn.Edit(ctxT(t, 5*time.Second), dm, 3, "x"); return err }(), 400)
	mustCode(t, "a second recall", func() error { _, err := eva.conn.Recall(ctxT(t, 5*time.Second), dm, 2); return err }(), 409)
	mustCode(t, "an edit of a recalled message", func() error { _, err := eva.conn.Edit(ctxT(t, 5*time.Second), dm, 2, "x"); return err }(), 409)

	checkFinal := func(who string, msgs []protocol.Message) {
		t.Helper()
		h := bySeqOf(msgs)
		if m := h[1]; m.Text != "hello, ebo" || m.Edited == 0 || m.Recalled {
			t.Fatalf("%s reads seq 1 as %+v, want it edited", who, m)
		}
		if m := h[2]; !m.Recalled || m.Text != "" {
			t.Fatalf("%s reads seq 2 as %+v, want it recalled", who, m)
		}
		if h[3].Kind != protocol.KindEdit || h[3].Ref != 1 || h[4].Kind != protocol.KindRecall || h[4].Ref != 2 {
			t.Fatalf("%s reads the events as %+v and %+v", who, h[3], h[4])
		}
	}
	checkFinal("ebo's history", allHistory(t, ebo, dm))
	checkFinal("eva's history", allHistory(t, eva, dm))

	// ebo goes away; eva writes, edits and recalls meanwhile; ebo comes
	// back on the other node and syncs from what it holds.
	ebo.conn.Close()
	<-ebo.readDone
	r5, err := eva.conn.Chat(ctxT(t, 5*time.Second), "ebo", "are you there?", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eva.conn.Chat(ctxT(t, 5*time.Second), "ebo", "never mind", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := eva.conn.Edit(ctxT(t, 5*time.Second), dm, r5.Seq, "are you there, ebo?"); err != nil {
		t.Fatal(err)
	}
	if _, err := eva.conn.Recall(ctxT(t, 5*time.Second), dm, r5.Seq+1); err != nil {
		t.Fatal(err)
	}
	ebo = connect(t, c.Node(0).WSURL, "ebo")
	convs, err := ebo.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{dm: 4})
	if err != nil {
		t.Fatal(err)
	}
	sc := convs[dm]
	got := bySeqOf(sc.Messages)
	if sc.Latest != 8 || len(sc.Messages) != 4 {
		t.Fatalf("sync from 4: %+v", sc)
	}
	if m := got[5]; m.Text != "are you there, ebo?" || m.Edited == 0 {
		t.Fatalf("sync gives seq 5 as %+v, want it edited", m)
	}
	if m := got[6]; !m.Recalled || m.Text != "" {
		t.Fatalf("sync gives seq 6 as %+v, want it recalled", m)
	}
	if got[7].Kind != protocol.KindEdit || got[7].Ref != 5 || got[8].Kind != protocol.KindRecall || got[8].Ref != 6 {
		t.Fatalf("sync gives the events as %+v and %+v", got[7], got[8])
	}
	// A client with nothing syncs everything in its final state.
	convs, err = ebo.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{dm: 0})
	if err != nil {
		t.Fatal(err)
	}
	checkFinal("ebo's sync from 0", convs[dm].Messages)
}

// Room membership is told as events of the room, pushed to its members as
// member pushes; edits and recalls of room messages go through the leader,
// and the room's owner may recall anyone's message. A member who was
// away syncs the final state, and one who joins later gets no push of
// what came before.
func TestRoomEvents(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "ra", "rb", "rc", "rd")
	ra := connect(t, c.Node(0).WSURL, "ra")
	rb := connect(t, c.Node(1).WSURL, "rb")
	rc := connect(t, c.Node(1).WSURL, "rc")
	const room, conv = "evroom", "room:evroom"

	for i, u := range []*user{ra, rb, rc} {
		r := join(t, u, room)
		if last := r.Recent[len(r.Recent)-1]; last.Kind != protocol.KindJoin || last.From != u.name || last.Seq != int64(i+1) {
			t.Fatalf("%s's join reply ends with %+v, want its own join at seq %d", u.name, last, i+1)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "the members hear of the joins after theirs", func() bool {
		return ra.hasMember(room, 1, "ra", true) && ra.hasMember(room, 2, "rb", true) && ra.hasMember(room, 3, "rc", true) &&
			rb.hasMember(room, 2, "rb", true) && rb.hasMember(room, 3, "rc", true) && rc.hasMember(room, 3, "rc", true)
	})
	if rb.hasMember(room, 1, "ra", true) || rc.hasMember(room, 2, "rb", true) {
		t.Fatalf("a member heard of a join before its own: rb %+v, rc %+v", rb.members(), rc.members())
	}
	rooms, err := rc.conn.Rooms(ctxT(t, 5*time.Second))
	if err != nil || !slices.Contains(rooms, protocol.RoomInfo{Name: room, Members: 3, Joined: true, Owner: "ra"}) {
		t.Fatalf("rooms: %+v, %v; want ra as the owner", rooms, err)
	}

	for _, s := range []string{"first", "second"} { // 4, 5
		if _, err := rc.conn.ChatRoom(ctxT(t, 5*time.Second), room, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "rb gets rc's messages", func() bool { return len(rb.roomMsgs(room)) >= 2 })
	rb.conn.Close()
	<-rb.readDone

	if r, err := rc.conn.Edit(ctxT(t, 5*time.Second), conv, 4, "first, edited"); err != nil || r.Seq != 6 {
		t.Fatalf("rc's edit: %+v, %v", r, err)
	}
	mustCode(t, "ra edits rc's message", func() error { _, err := ra.conn.Edit(ctxT(t, 5*time.Second), conv, 5, "x"); return err }(), 403)
	mustCode(t, "an edit of a join", func() error { _, err := rc.conn.Edit(ctxT(t, 5*time.Second), conv, 3, "x"); return err }(), 400)
	if r, err := ra.conn.Recall(ctxT(t, 5*time.Second), conv, 5); err != nil || r.Seq != 7 {
		t.Fatalf("the owner's recall of rc's message: %+v, %v", r, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the members online get the edit and the recall", func() bool {
		for _, u := range []*user{ra, rc} {
			if !u.pushedEvent(conv, 6, protocol.KindEdit, 4) || !u.pushedEvent(conv, 7, protocol.KindRecall, 5) {
				return false
			}
		}
		return true
	})

	// rc leaves: it hears of its own leave, then nothing more of the room.
	if _, err := rc.conn.LeaveRoom(ctxT(t, 5*time.Second), room); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "ra and rc hear of rc's leave", func() bool {
		return ra.hasMember(room, 8, "rc", false) && rc.hasMember(room, 8, "rc", false)
	})
	mustCode(t, "an edit after leaving", func() error { _, err := rc.conn.Edit(ctxT(t, 5*time.Second), conv, 4, "x"); return err }(), 403)

	// rd joins late: its join reply shows the room as it is now, and it
	// is pushed nothing of what came before.
	rd := connect(t, c.Node(0).WSURL, "rd")
	r := join(t, rd, room)
	recent := bySeqOf(r.Recent)
	if m := recent[4]; m.Text != "first, edited" || m.Edited == 0 {
		t.Fatalf("rd's join reply shows seq 4 as %+v", m)
	}
	if m := recent[5]; !m.Recalled || m.Text != "" {
		t.Fatalf("rd's join reply shows seq 5 as %+v", m)
	}
	if recent[9].Kind != protocol.KindJoin || recent[9].From != "rd" {
		t.Fatalf("rd's join reply ends with %+v", r.Recent[len(r.Recent)-1])
	}
	if _, err := ra.conn.ChatRoom(ctxT(t, 5*time.Second), room, "welcome, rd", ""); err != nil { // 10
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "rd gets the message posted after its join", func() bool { return len(rd.roomMsgs(room)) >= 1 })
	if got := rd.roomMsgs(room); len(got) != 1 || got[0].Seq != 10 {
		t.Fatalf("rd was pushed %+v, want only seq 10", got)
	}
	if ms := rd.members(); len(ms) != 1 || ms[0].Seq != 9 {
		t.Fatalf("rd was pushed the member events %+v, want only its own join", ms)
	}
	if n := len(rc.roomMsgs(room)); slices.ContainsFunc(rc.roomMsgs(room), func(m protocol.Message) bool { return m.Seq > 8 }) {
		t.Fatalf("rc, gone, was pushed %d room messages, some after its leave", n)
	}

	// rb comes back on the other node and syncs from seq 5, the last it
	// got: the events it missed, the room's messages in their final state.
	rb = connect(t, c.Node(0).WSURL, "rb")
	convs, err := rb.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{conv: 5})
	if err != nil {
		t.Fatal(err)
	}
	sc := convs[conv]
	got := bySeqOf(sc.Messages)
	if sc.Latest != 10 || len(sc.Messages) != 5 {
		t.Fatalf("rb's sync from 5: %+v", sc)
	}
	want := []struct {
		seq       int64
		kind, who string
		ref       int64
	}{{6, protocol.KindEdit, "rc", 4}, {7, protocol.KindRecall, "ra", 5}, {8, protocol.KindLeave, "rc", 0}, {9, protocol.KindJoin, "rd", 0}, {10, "", "ra", 0}}
	for _, w := range want {
		if m := got[w.seq]; m.Kind != w.kind || m.From != w.who || m.Ref != w.ref || m.Room != room {
			t.Errorf("rb's sync gives seq %d as %+v, want %s by %s of %d", w.seq, m, w.kind, w.who, w.ref)
		}
	}
	h := bySeqOf(allHistory(t, rb, conv))
	if h[4].Text != "first, edited" || !h[5].Recalled || h[5].Text != "" || h[10].Text != "welcome, rd" || len(h) != 10 {
		t.Fatalf("rb's history %s", fmt.Sprint(h))
	}
}
