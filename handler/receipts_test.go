package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"chatcluster/protocol"
)

// fakeReads keeps read positions in memory, rising only.
type fakeReads struct {
	pos   map[string]map[string]int64
	asked map[string]bool // conversations Positions was asked for
	// latest is where a checked Mark finds a conversation's latest seq,
	// 0 for none (as a missing counter); nil: it never has one.
	latest func(conv string) int64
}

func (f *fakeReads) Mark(_ context.Context, conv, user string, seq int64, check bool) (int64, bool, error) {
	if check {
		top := int64(0)
		if f.latest != nil {
			top = f.latest(conv)
		}
		switch {
		case top == 0:
			return 0, false, ErrNoLatest
		case seq > top:
			return 0, false, &AboveLatest{Latest: top}
		}
	}
	if f.pos[conv] == nil {
		f.pos[conv] = map[string]int64{}
	}
	if seq > f.pos[conv][user] {
		f.pos[conv][user] = seq
		return seq, true, nil
	}
	return f.pos[conv][user], false, nil
}

func (f *fakeReads) Positions(_ context.Context, want map[string][]string) (map[string]map[string]int64, error) {
	out := map[string]map[string]int64{}
	for cv, users := range want {
		if f.asked == nil {
			f.asked = map[string]bool{}
		}
		f.asked[cv] = true
		out[cv] = map[string]int64{}
		for _, u := range users {
			out[cv][u] = f.pos[cv][u]
		}
	}
	return out, nil
}

// fakePusher records the pushes handed to it.
type fakePusher struct{ sent []string }

func (p *fakePusher) ToUser(user, except string, push []byte) {
	p.sent = append(p.sent, fmt.Sprintf("to %s except %q: %s", user, except, push))
}

func (p *fakePusher) Typing(conv, from string, push []byte) {
	p.sent = append(p.sent, fmt.Sprintf("typing %s from %s: %s", conv, from, push))
}

func (p *fakePusher) take() []string {
	out := p.sent
	p.sent = nil
	return out
}

// limitedConn is a connection with a typing limit, as the node's are.
type limitedConn struct {
	fakeConn
	lim TypingLimit
}

func (c *limitedConn) TypingLimit() *TypingLimit { return &c.lim }

// newReceiptTest is a handler with read positions and a pusher, where amy
// and bob have two messages in their direct conversation and amy and bob
// are in room lobby (one message), which carol is not in.
func newReceiptTest(t *testing.T) (*Handler, *fakeReads, *fakePusher, *int64) {
	t.Helper()
	h, _, _, rooms, _ := newTestRooms()
	reads, pushes := &fakeReads{pos: map[string]map[string]int64{}}, &fakePusher{}
	h.d.Reads, h.d.Pushes = reads, pushes
	reads.latest = func(conv string) int64 {
		l, _ := h.d.Journal.Latest(context.Background(), []string{conv})
		return l[conv]
	}
	now := int64(1_000_000)
	h.d.Now = func() int64 { return now }
	ctx := context.Background()
	for _, u := range []string{"amy", "bob"} {
		if _, err := rooms.Join(ctx, u, "lobby"); err != nil {
			t.Fatal(err)
		}
	}
	rooms.members["ops"] = []string{"carol"}
	for i, r := range []protocol.Request{
		req("chat", map[string]string{"to": "bob", "text": "one"}),
		req("chat", map[string]string{"to": "bob", "text": "two"}),
		req("chat", map[string]string{"room": "lobby", "text": "all"}),
	} {
		if rep := h.Handle(ctx, &fakeConn{id: "c0", user: "amy"}, r); rep.Code != 0 {
			t.Fatalf("setup %d: %d %s", i, rep.Code, rep.Error)
		}
	}
	return h, reads, pushes, &now
}

func TestTypingChecksAndPushes(t *testing.T) {
	tests := []struct {
		name string
		user string
		data any
		code int
		sent []string
	}{
		{name: "before login", data: map[string]string{"conv": "dm:amy:bob"}, code: 401},
		{name: "no conv", user: "amy", data: map[string]string{}, code: 400},
		{name: "bad conv", user: "amy", data: map[string]string{"conv": "lobby"}, code: 400},
		{name: "conv not a string", user: "amy", data: map[string]int{"conv": 5}, code: 400},
		{name: "support conv", user: "amy", data: map[string]string{"conv": "cs:~abc:1"}, code: 400},
		{name: "not a participant", user: "amy", data: map[string]string{"conv": "dm:bob:carol"}, code: 403},
		{name: "not a member", user: "amy", data: map[string]string{"conv": "room:ops"}, code: 403},
		{name: "direct", user: "amy", data: map[string]string{"conv": "dm:amy:bob"},
			sent: []string{`typing dm:amy:bob from amy: {"action":"typing","data":{"conv":"dm:amy:bob","from":"amy"}}`}},
		{name: "room", user: "bob", data: map[string]string{"conv": "room:lobby"},
			sent: []string{`typing room:lobby from bob: {"action":"typing","data":{"conv":"room:lobby","from":"bob"}}`}},
		{name: "with oneself", user: "amy", data: map[string]string{"conv": "dm:amy:amy"}},
		{name: "with a user who does not exist", user: "amy", data: map[string]string{"conv": "dm:amy:zed"},
			sent: []string{`typing dm:amy:zed from amy: {"action":"typing","data":{"conv":"dm:amy:zed","from":"amy"}}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _, pushes, _ := newReceiptTest(t)
			rep := h.Handle(context.Background(), &limitedConn{fakeConn: fakeConn{id: "c1", user: tc.user}}, req("typing", tc.data))
			if rep.Code != tc.code {
				t.Fatalf("code %d (%s), want %d", rep.Code, rep.Error, tc.code)
			}
			if tc.code == 0 {
				if b, _ := json.Marshal(rep.Data); string(b) != "{}" {
					t.Fatalf("reply data %s, want {}", b)
				}
			}
			if got := pushes.take(); fmt.Sprint(got) != fmt.Sprint(tc.sent) {
				t.Fatalf("pushes %q, want %q", got, tc.sent)
			}
		})
	}
}

// Over the limit a typing is answered {} and passed on to no one: one per
// conversation per second, five a second over all.
func TestTypingRateLimit(t *testing.T) {
	h, _, pushes, now := newReceiptTest(t)
	c := &limitedConn{fakeConn: fakeConn{id: "c1", user: "amy"}}
	typing := func(conv string) bool {
		t.Helper()
		rep := h.Handle(context.Background(), c, req("typing", map[string]string{"conv": conv}))
		if rep.Code != 0 {
			t.Fatalf("typing %s: code %d (%s), want 0 even over the limit", conv, rep.Code, rep.Error)
		}
		return len(pushes.take()) == 1
	}
	if !typing("dm:amy:bob") {
		t.Fatal("the first typing was not passed on")
	}
	*now += 999
	if typing("dm:amy:bob") {
		t.Fatal("a second typing within 1 s was passed on")
	}
	if !typing("room:lobby") {
		t.Fatal("a typing in another conversation was not passed on")
	}
	*now++
	if !typing("dm:amy:bob") {
		t.Fatal("a typing 1 s after the last one was not passed on")
	}
	// A burst over many conversations: the budget is five a second.
	*now += 10_000
	passed := 0
	for i := range 20 {
		if typing(fmt.Sprintf("dm:amy:u%d", i)) {
			passed++
		}
	}
	if passed != protocol.TypingPerSecond {
		t.Fatalf("%d of a burst of 20 passed on, want %d", passed, protocol.TypingPerSecond)
	}
	*now += 200 // a fifth of a second: one more
	if !typing("dm:amy:u100") || typing("dm:amy:u101") {
		t.Fatal("the budget did not refill by one in 200 ms")
	}
	// A typing that fails its checks still counts against the limit, and
	// one over the limit is not checked.
	*now += 10_000
	if rep := h.Handle(context.Background(), c, req("typing", map[string]string{"conv": "room:ops"})); rep.Code != 403 {
		t.Fatalf("typing in a room not joined: %d, want 403", rep.Code)
	}
	if rep := h.Handle(context.Background(), c, req("typing", map[string]string{"conv": "room:ops"})); rep.Code != 0 {
		t.Fatalf("a second typing in a room not joined within 1 s: %d, want 0 (dropped unchecked)", rep.Code)
	}
}

// The limit remembers a bounded number of conversations: those whose
// interval has passed are forgotten to make room.
func TestTypingLimitBounded(t *testing.T) {
	var l TypingLimit
	now := int64(5000)
	for i := range 4 * protocol.MaxTypingConvs {
		now += 1000 / protocol.TypingPerSecond
		if !l.Allow(fmt.Sprintf("room:r%d", i), now) {
			t.Fatalf("typing %d, in a new conversation within the budget, refused", i)
		}
		if len(l.last) > protocol.MaxTypingConvs {
			t.Fatalf("the limit remembers %d conversations, over %d", len(l.last), protocol.MaxTypingConvs)
		}
	}
}

func TestReadChecksMonotonicAndPushes(t *testing.T) {
	h, reads, pushes, _ := newReceiptTest(t)
	ctx := context.Background()
	amy := &fakeConn{id: "c1", user: "amy"}
	read := func(c Conn, data any) protocol.Reply {
		t.Helper()
		return h.Handle(ctx, c, req("read", data))
	}
	errs := []struct {
		name string
		data any
		code int
		msg  string
	}{
		{"no conv", map[string]any{"seq": 1}, 400, "read needs conv (dm:<a>:<b> or room:<name>)"},
		{"bad conv", map[string]any{"conv": "dm:bob:amy", "seq": 1}, 400, `invalid conversation "dm:bob:amy"`},
		{"support conv", map[string]any{"conv": "cs:~abc:1", "seq": 1}, 400, "read is for direct conversations and rooms, not cs:~abc:1"},
		{"negative", map[string]any{"conv": "dm:amy:bob", "seq": -1}, 400, "seq must not be negative"},
		{"seq not a number", map[string]any{"conv": "dm:amy:bob", "seq": "2"}, 400, `bad data: field "seq" must be a number, not string`},
		{"above latest", map[string]any{"conv": "dm:amy:bob", "seq": 3}, 400, "seq 3 is above the latest of dm:amy:bob (2)"},
		{"not a participant", map[string]any{"conv": "dm:bob:carol", "seq": 1}, 403, "not a participant of dm:bob:carol"},
		{"not a member", map[string]any{"conv": "room:ops", "seq": 1}, 403, `not a member of room "ops"`},
	}
	for _, tc := range errs {
		if rep := read(amy, tc.data); rep.Code != tc.code || rep.Error != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.name, rep.Code, rep.Error, tc.code, tc.msg)
		}
	}
	if got := pushes.take(); len(got) != 0 {
		t.Fatalf("failed reads pushed %q", got)
	}

	steps := []struct {
		seq    int64
		stored int64
		sent   []string
	}{
		{1, 1, []string{
			`to bob except "": {"action":"read","data":{"conv":"dm:amy:bob","user":"amy","seq":1}}`,
			`to amy except "c1": {"action":"read","data":{"conv":"dm:amy:bob","user":"amy","seq":1}}`,
		}},
		{2, 2, []string{
			`to bob except "": {"action":"read","data":{"conv":"dm:amy:bob","user":"amy","seq":2}}`,
			`to amy except "c1": {"action":"read","data":{"conv":"dm:amy:bob","user":"amy","seq":2}}`,
		}},
		{1, 2, nil}, // lower: nothing changes, nothing is pushed
		{2, 2, nil},
		{0, 2, nil},
	}
	for i, st := range steps {
		rep := read(amy, map[string]any{"conv": "dm:amy:bob", "seq": st.seq})
		if rep.Code != 0 {
			t.Fatalf("step %d: %d %s", i, rep.Code, rep.Error)
		}
		if r := rep.Data.(protocol.ReadReply); r.Conv != "dm:amy:bob" || r.Seq != st.stored {
			t.Fatalf("step %d: read %d answered %+v, want seq %d", i, st.seq, r, st.stored)
		}
		if got := pushes.take(); fmt.Sprint(got) != fmt.Sprint(st.sent) {
			t.Fatalf("step %d: pushes %q, want %q", i, got, st.sent)
		}
	}
	if reads.pos["dm:amy:bob"]["amy"] != 2 || reads.pos["dm:amy:bob"]["bob"] != 0 {
		t.Fatalf("positions %v", reads.pos)
	}

	// A room: the reader's own other connections only.
	rep := read(&fakeConn{id: "c2", user: "bob"}, map[string]any{"conv": "room:lobby", "seq": 1})
	if rep.Code != 0 || rep.Data.(protocol.ReadReply).Seq != 1 {
		t.Fatalf("room read: %d %s %+v", rep.Code, rep.Error, rep.Data)
	}
	if got, want := pushes.take(), []string{`to bob except "c2": {"action":"read","data":{"conv":"room:lobby","user":"bob","seq":1}}`}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("room read pushes %q, want %q", got, want)
	}

	// A conversation without messages stores nothing.
	rep = read(amy, map[string]any{"conv": "dm:amy:zed", "seq": 0})
	if rep.Code != 0 || rep.Data.(protocol.ReadReply).Seq != 0 || reads.pos["dm:amy:zed"] != nil {
		t.Fatalf("read of an empty conversation: %d %+v, positions %v", rep.Code, rep.Data, reads.pos)
	}

	h.d.Reads = nil
	if rep := read(amy, map[string]any{"conv": "dm:amy:bob", "seq": 1}); rep.Code != 503 {
		t.Fatalf("without read positions: %d, want 503", rep.Code)
	}
}

// sync returns the user's read position of each conversation and, of a
// direct one, the other user's; 0 is left out.
func TestSyncReturnsReadPositions(t *testing.T) {
	h, reads, _, _ := newReceiptTest(t)
	ctx := context.Background()
	for _, r := range []struct {
		user, conv string
		seq        int64
	}{{"amy", "dm:amy:bob", 1}, {"bob", "dm:amy:bob", 2}, {"bob", "room:lobby", 1}} {
		if rep := h.Handle(ctx, &fakeConn{id: "x", user: r.user}, req("read", map[string]any{"conv": r.conv, "seq": r.seq})); rep.Code != 0 {
			t.Fatalf("read: %d %s", rep.Code, rep.Error)
		}
	}
	sync := func(user string) string {
		t.Helper()
		rep := h.Handle(ctx, &fakeConn{id: "s", user: user}, req("sync", map[string]any{"convs": map[string]int64{"dm:amy:bob": 2, "room:lobby": 1, "dm:" + user + ":zed": 0}}))
		if rep.Code != 0 {
			t.Fatalf("sync: %d %s", rep.Code, rep.Error)
		}
		b, _ := json.Marshal(rep.Data)
		return string(b)
	}
	if got, want := sync("amy"), `{"convs":{"dm:amy:bob":{"latest":2,"messages":[],"read":1,"peerRead":2},"dm:amy:zed":{"latest":0,"messages":[]},"room:lobby":{"latest":1,"messages":[]}}}`; got != want {
		t.Fatalf("amy's sync %s\nwant %s", got, want)
	}
	if got, want := sync("bob"), `{"convs":{"dm:amy:bob":{"latest":2,"messages":[],"read":2,"peerRead":1},"dm:bob:zed":{"latest":0,"messages":[]},"room:lobby":{"latest":1,"messages":[],"read":1}}}`; got != want {
		t.Fatalf("bob's sync %s\nwant %s", got, want)
	}
	if reads.asked["dm:amy:zed"] || reads.asked["dm:bob:zed"] {
		t.Fatal("read positions of a conversation without messages were looked up")
	}
}
