package leader

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"chatcluster/handler"
	"chatcluster/protocol"
)

// memJournal stores messages in memory, per conversation, and reads them
// back in their final state, as the node's journal does.
type memJournal struct {
	mu    sync.Mutex
	convs map[string][]protocol.Message
	idem  map[string]string // message id -> the idempotency key it was stored with
	down  bool              // Append fails
}

func (j *memJournal) Append(_ context.Context, m protocol.Message, idem string, _ []string) (handler.Stored, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.down {
		return handler.Stored{}, errors.New("redis is down")
	}
	if idem != "" {
		for _, x := range j.convs[m.Conv] {
			if x.From == m.From && j.idem[x.ID] == idem {
				return handler.Stored{Message: x, Dup: true}, nil
			}
		}
	}
	m.Seq = int64(len(j.convs[m.Conv]) + 1)
	j.convs[m.Conv] = append(j.convs[m.Conv], m)
	if idem != "" {
		if j.idem == nil {
			j.idem = map[string]string{}
		}
		j.idem[m.ID] = idem
	}
	return handler.Stored{Message: m, Push: protocol.EncodeMessagePush(&m)}, nil
}

func (j *memJournal) Range(_ context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []protocol.Message
	for _, m := range j.convs[conv] {
		if m.Seq > after && (before <= 0 || m.Seq < before) {
			out = append(out, m)
		}
	}
	protocol.ApplyEvents(out, j.convs[conv])
	return out, nil
}

func (j *memJournal) Latest(context.Context, []string) (map[string]int64, error) { return nil, nil }

// roomLeader is a term whose rooms are loaded (none yet), with users
// online on n3, whose frames the test reads from the link.
func roomLeader(t *testing.T, users ...string) (*Term, *queueLink, *memJournal, *memRooms) {
	l, link := forwardingLeader(users...)
	j := &memJournal{convs: map[string][]protocol.Message{}}
	st := newMemRooms()
	l.d.Journal, l.d.Messages, l.d.Store, l.d.Convs = j, j, st, st
	l.d.RequestTimeout = 5 * time.Second
	l.d.Events = handler.EventPolicy{RecallWindow: time.Minute, Operators: map[string]bool{"op": true}}
	n := 0
	l.d.NewID = func() string { n++; return "ev" + string(rune('a'+n)) }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l.ctx = ctx
	close(l.rooms.loaded)
	return l, link, j, st
}

// pushes reads the push frames the link holds: recipients and push.
func pushes(t *testing.T, link *queueLink) (out []protocol.PeerFrame) {
	t.Helper()
	for len(link.send) > 0 {
		f, err := protocol.DecodePeer(<-link.send)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == protocol.PeerPush {
			out = append(out, f)
		}
	}
	return out
}

func roomOp(l *Term, op, user, name string, m *protocol.Message) protocol.PeerFrame {
	return l.rooms.run(protocol.PeerFrame{Type: protocol.PeerRoom, Op: op, User: user, Room: name, Message: m})
}

// A join or leave is an event of the room's conversation, pushed to the
// members as a member push with its seq: a join to the members with the
// one who joined, a leave to those before it, the one who left among
// them. The first to join a room owns it.
func TestRoomMemberEvents(t *testing.T) {
	l, link, j, st := roomLeader(t, "alice", "bob", "carol")
	const conv = "room:lobby"
	if rep := roomOp(l, protocol.RoomJoin, "alice", "lobby", nil); rep.Code != 0 {
		t.Fatalf("join: %+v", rep)
	}
	if st.saved["lobby"].Owner != "alice" || l.rooms.reg.Owner("lobby") != "alice" {
		t.Fatalf("stored %+v, want alice as the owner", st.saved["lobby"])
	}
	roomOp(l, protocol.RoomJoin, "bob", "lobby", nil)
	roomOp(l, protocol.RoomJoin, "bob", "lobby", nil) // again: no change, no event
	if st.saved["lobby"].Owner != "alice" {
		t.Fatalf("a second member took the room: %+v", st.saved["lobby"])
	}
	roomOp(l, protocol.RoomLeave, "bob", "lobby", nil)
	got := j.convs[conv]
	if len(got) != 3 || got[0].Kind != protocol.KindJoin || got[0].From != "alice" || got[1].Kind != protocol.KindJoin || got[1].From != "bob" ||
		got[2].Kind != protocol.KindLeave || got[2].From != "bob" || got[2].Room != "lobby" || got[2].Text != "" {
		t.Fatalf("the room's conversation holds %+v", got)
	}
	var seen []string
	for _, f := range pushes(t, link) {
		var p struct {
			Action string              `json:"action"`
			Data   protocol.MemberPush `json:"data"`
		}
		if err := json.Unmarshal(f.Push, &p); err != nil || p.Action != protocol.PushMember || f.Conv != conv || f.Seq != p.Data.Seq || p.Data.Conv != conv {
			t.Fatalf("push frame %+v (%v)", f, err)
		}
		recips := strings.Split(f.Recipients, ",")
		sort.Strings(recips)
		seen = append(seen, strings.Join(recips, "+")+":"+p.Data.Username+map[bool]string{true: " joined", false: " left"}[p.Data.Joined])
	}
	want := []string{"alice:alice joined", "alice+bob:bob joined", "alice+bob:bob left"}
	if strings.Join(seen, "; ") != strings.Join(want, "; ") {
		t.Fatalf("pushes %q, want %q", seen, want)
	}

	// An event Redis cannot take now is stored by the room's next request,
	// ahead of it.
	j.down = true
	if rep := roomOp(l, protocol.RoomJoin, "carol", "lobby", nil); rep.Code != 0 {
		t.Fatalf("join while the journal fails: %+v", rep)
	}
	j.down = false
	if rep := roomOp(l, protocol.RoomPost, "alice", "lobby", &protocol.Message{ID: "p", Text: "hi", TS: 1}); rep.Code != 0 {
		t.Fatalf("post: %+v", rep)
	}
	got = j.convs[conv]
	if len(got) != 5 || got[3].Kind != protocol.KindJoin || got[3].From != "carol" || got[4].Text != "hi" {
		t.Fatalf("the room's conversation holds %+v, want carol's join before the post", got)
	}
}

// The leader judges a room's edits and recalls by the policy, with the
// room's owner.
func TestRoomChanges(t *testing.T) {
	l, link, j, _ := roomLeader(t, "alice", "bob")
	roomOp(l, protocol.RoomJoin, "alice", "lobby", nil) // 1
	roomOp(l, protocol.RoomJoin, "bob", "lobby", nil)   // 2
	now := time.Now().UnixMilli()
	roomOp(l, protocol.RoomPost, "bob", "lobby", &protocol.Message{ID: "p1", Text: "hi", TS: now}) // 3
	pushes(t, link)
	change := func(user, kind string, ref int64, text string, at int64) protocol.PeerFrame {
		return roomOp(l, protocol.RoomChange, user, "lobby", &protocol.Message{ID: "c" + user, Kind: kind, Ref: ref, Text: text, TS: at})
	}
	if rep := change("bob", protocol.KindEdit, 3, "hi!", now+1); rep.Code != 0 || rep.Message == nil || rep.Message.Seq != 4 || rep.Message.From != "bob" || rep.Message.Room != "lobby" {
		t.Fatalf("bob's edit: %+v", rep)
	}
	if ps := pushes(t, link); len(ps) != 1 || ps[0].Seq != 4 || !strings.Contains(ps[0].Recipients, "alice") || !strings.Contains(ps[0].Recipients, "bob") {
		t.Fatalf("pushes of the edit %+v, want one to alice and bob", ps)
	}
	// The same frame again (a node hands a frame its lost link did not
	// acknowledge to the next leader): stored once, pushed once.
	if rep := change("bob", protocol.KindEdit, 3, "hi!", now+1); rep.Code != 0 || !rep.Dup || rep.Message == nil || rep.Message.Seq != 4 {
		t.Fatalf("bob's edit handed over again: %+v, want the first one, as a duplicate", rep)
	}
	if ps := pushes(t, link); len(ps) != 0 || len(j.convs["room:lobby"]) != 4 {
		t.Fatalf("the edit handed over again was pushed (%+v) or stored (%d entries)", ps, len(j.convs["room:lobby"]))
	}
	for _, tc := range []struct {
		user, kind string
		ref        int64
		at         int64
		code       int
	}{
		{"alice", protocol.KindEdit, 3, now, 403},             // not hers
		{"bob", protocol.KindEdit, 1, now, 400},               // a join
		{"bob", protocol.KindEdit, 9, now, 404},               // nothing there
		{"carol", protocol.KindRecall, 3, now, 403},           // no member
		{"bob", protocol.KindRecall, 3, now + 61_000, 403},    // past the window
		{"bob", protocol.KindJoin, 3, now, 400},               // no change
		{"alice", protocol.KindRecall, 3, now + 3_600_000, 0}, // the owner, any time
		{"bob", protocol.KindRecall, 3, now, 409},             // recalled already
		{"bob", protocol.KindEdit, 3, now, 409},
	} {
		if rep := change(tc.user, tc.kind, tc.ref, "x", tc.at); rep.Code != tc.code {
			t.Errorf("%s %s of %d: code %d (%s), want %d", tc.user, tc.kind, tc.ref, rep.Code, rep.Error, tc.code)
		}
	}
	if got := j.convs["room:lobby"]; len(got) != 5 || got[4].Kind != protocol.KindRecall || got[4].From != "alice" {
		t.Fatalf("the room holds %+v", got)
	}
}
