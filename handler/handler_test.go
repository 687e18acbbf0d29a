package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"chatcluster/protocol"
)

type fakeConn struct{ id, user, device string }

func (c *fakeConn) ConnID() string     { return c.id }
func (c *fakeConn) User() string       { return c.user }
func (c *fakeConn) RemoteAddr() string { return "192.0.2.1:4242" }

// fakeUsers knows users by lower-case name; any spelling finds them. A
// login of "slow" is throttled.
type fakeUsers struct{ pw map[string]string }

func (f fakeUsers) CheckPassword(_ context.Context, u, p, remote string) (string, error) {
	if u == "slow" && remote == "192.0.2.1:4242" {
		return "", &protocol.Error{Code: protocol.CodeRateLimited, Msg: "wait", Data: protocol.RetryData{RetryAfter: 3}}
	}
	u = strings.ToLower(u)
	if pw, ok := f.pw[u]; !ok || pw != p {
		return "", ErrBadCredentials
	}
	return u, nil
}
func (f fakeUsers) TokenUser(_ context.Context, tok string) (string, error) {
	if tok == "good" {
		return "amy", nil
	}
	return "", ErrBadCredentials
}
func (f fakeUsers) Resolve(_ context.Context, u string) (string, error) {
	u = strings.ToLower(u)
	if _, ok := f.pw[u]; !ok {
		return "", ErrUnknownUser
	}
	return u, nil
}

type fakeSessions struct{}

func (fakeSessions) Login(_ context.Context, c Conn, u, device string) (string, error) {
	c.(*fakeConn).user, c.(*fakeConn).device = u, device
	return "s-" + c.ConnID(), nil
}
func (fakeSessions) Lookup(context.Context, string) (Presence, error) {
	return Presence{Online: true, Node: "n1", LoginTime: 5, Devices: []protocol.DeviceInfo{
		{Node: "n1", LoginTime: 5, Device: "phone"}, {Node: "n2", LoginTime: 3}}}, nil
}

// fakeJournal keeps messages in memory, per conversation.
type fakeJournal struct {
	convs map[string][]protocol.Message
	idem  map[string]protocol.Message
	rooms map[string][]string // user -> room conversations joined
	gaps  map[string]Gap      // what Unsure says, whatever the offsets
}

func (j *fakeJournal) Append(_ context.Context, m protocol.Message, cid string, members []string) (Stored, error) {
	if prev, ok := j.idem[m.From+cid]; ok && cid != "" {
		return Stored{Message: prev, Dup: true}, nil
	}
	m.Seq = int64(len(j.convs[m.Conv]) + 1)
	j.convs[m.Conv] = append(j.convs[m.Conv], m)
	j.idem[m.From+cid] = m
	return Stored{Message: m, Push: protocol.EncodeMessagePush(&m)}, nil
}
func (j *fakeJournal) Restore(_ context.Context, conv string, msgs []protocol.Message, members []string) (int, int64, error) {
	latest := int64(len(j.convs[conv]))
	sort.Slice(msgs, func(a, b int) bool { return msgs[a].Seq < msgs[b].Seq })
	n := 0
	for _, m := range msgs {
		if m.Seq > latest {
			j.convs[conv] = append(j.convs[conv], m)
			latest, n = m.Seq, n+1
		}
	}
	return n, latest, nil
}

func (j *fakeJournal) Unsure(context.Context, map[string]int64) (map[string]Gap, error) {
	return j.gaps, nil
}

func (j *fakeJournal) Latest(_ context.Context, convs []string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, c := range convs {
		out[c] = int64(len(j.convs[c]))
	}
	return out, nil
}
func (j *fakeJournal) Convs(_ context.Context, user string) ([]string, error) {
	var out []string
	for c := range j.convs {
		if strings.HasPrefix(c, protocol.DMPrefix) {
			out = append(out, c)
		}
	}
	out = append(out, j.rooms[user]...)
	sort.Strings(out)
	return out, nil
}

// Range applies the conversation's events to what it returns, as the
// node's journal does.
func (j *fakeJournal) Range(_ context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error) {
	var out []protocol.Message
	for _, m := range j.convs[conv] {
		if m.Seq > after && (before <= 0 || m.Seq < before) {
			out = append(out, m)
		}
	}
	if len(out) > limit {
		if newest {
			out = out[len(out)-limit:]
		} else {
			out = out[:limit]
		}
	}
	protocol.ApplyEvents(out, j.convs[conv])
	return out, nil
}

type fakeRouter struct {
	busy      bool
	delivered []protocol.Message
	// others are the DeliverExcept calls: the message handed to every
	// connection of a user but one.
	others []deliveredExcept
}

type deliveredExcept struct {
	user, except string
	m            protocol.Message
}

func (r *fakeRouter) DeliverExcept(user, except string, push []byte, m *protocol.Message) {
	if m == nil {
		panic("DeliverExcept without a message")
	}
	if want := protocol.EncodeMessagePush(m); push != nil && string(push) != string(want) {
		panic(fmt.Sprintf("delivered push %s for message %+v, want %s", push, *m, want))
	}
	r.others = append(r.others, deliveredExcept{user: user, except: except, m: *m})
}

func (r *fakeRouter) Ready() error {
	if r.busy {
		return ErrBusy
	}
	return nil
}
func (r *fakeRouter) Deliver(m protocol.Message, push []byte, to []string) {
	if want := protocol.EncodeMessagePush(&m); string(push) != string(want) {
		panic(fmt.Sprintf("delivered push %s for message %+v, want %s", push, m, want))
	}
	r.delivered = append(r.delivered, m)
}

// fakeRooms keeps rooms in memory and stores posts in the journal. The
// first to join a room owns it.
type fakeRooms struct {
	j       *fakeJournal
	members map[string][]string
	owners  map[string]string
	policy  *EventPolicy
	posted  []protocol.Message
}

func (f *fakeRooms) Join(_ context.Context, user, room string) ([]string, error) {
	if _, ok := f.members[room]; !ok {
		f.owners[room] = user
	}
	if !slices.Contains(f.members[room], user) {
		f.members[room] = append(f.members[room], user)
		sort.Strings(f.members[room])
		f.j.rooms[user] = append(f.j.rooms[user], protocol.RoomConv(room))
	}
	return f.members[room], nil
}
func (f *fakeRooms) Leave(_ context.Context, user, room string) ([]string, error) {
	ms, ok := f.members[room]
	if !ok {
		return nil, protocol.Errorf(protocol.CodeNotFound, "unknown room %q", room)
	}
	f.members[room] = slices.DeleteFunc(ms, func(u string) bool { return u == user })
	f.j.rooms[user] = slices.DeleteFunc(f.j.rooms[user], func(c string) bool { return c == protocol.RoomConv(room) })
	return f.members[room], nil
}
func (f *fakeRooms) List(_ context.Context, user string) ([]protocol.RoomInfo, error) {
	var out []protocol.RoomInfo
	for name, ms := range f.members {
		out = append(out, protocol.RoomInfo{Name: name, Members: len(ms), Joined: slices.Contains(ms, user), Owner: f.owners[name]})
	}
	return out, nil
}
func (f *fakeRooms) Post(ctx context.Context, m protocol.Message, cid string) (protocol.Message, bool, error) {
	ms, ok := f.members[m.Room]
	switch {
	case !ok:
		return m, false, protocol.Errorf(protocol.CodeNotFound, "unknown room %q", m.Room)
	case !slices.Contains(ms, m.From):
		return m, false, protocol.Errorf(protocol.CodeForbidden, "not a member of room %q", m.Room)
	}
	st, err := f.j.Append(ctx, m, cid, nil)
	if !st.Dup {
		f.posted = append(f.posted, st.Message)
	}
	return st.Message, st.Dup, err
}

func (f *fakeRooms) Change(ctx context.Context, m protocol.Message) (protocol.Message, error) {
	ms, ok := f.members[m.Room]
	switch {
	case !ok:
		return m, protocol.Errorf(protocol.CodeNotFound, "unknown room %q", m.Room)
	case !slices.Contains(ms, m.From):
		return m, protocol.Errorf(protocol.CodeForbidden, "not a member of room %q", m.Room)
	}
	target, err := Target(ctx, f.j, m.Conv, m.Ref)
	if err != nil {
		return m, err
	}
	if err := f.policy.Allow(m.Kind, m.From, target, f.owners[m.Room], m.TS); err != nil {
		return m, err
	}
	st, err := f.j.Append(ctx, m, "", nil)
	f.posted = append(f.posted, st.Message)
	return st.Message, err
}

type fakeWords struct{ counted []string }

func (w *fakeWords) Count(m protocol.Message) { w.counted = append(w.counted, m.Text) }
func (w *fakeWords) Top(_ context.Context, n int) ([]protocol.WordCount, error) {
	return []protocol.WordCount{{Word: "hi", Count: int64(n)}}, nil
}

func newTest() (*Handler, *fakeJournal, *fakeRouter) {
	h, j, r, _, _ := newTestRooms()
	return h, j, r
}

func newTestRooms() (*Handler, *fakeJournal, *fakeRouter, *fakeRooms, *fakeWords) {
	j := &fakeJournal{convs: map[string][]protocol.Message{}, idem: map[string]protocol.Message{}, rooms: map[string][]string{}}
	r := &fakeRouter{}
	rooms := &fakeRooms{j: j, members: map[string][]string{}, owners: map[string]string{}, policy: &EventPolicy{}}
	words := &fakeWords{}
	n := 0
	h := New(Deps{
		Node: "n1", Users: fakeUsers{pw: map[string]string{"amy": "secret1", "bob": "secret2"}},
		Sessions: fakeSessions{}, Journal: j, Router: r, Rooms: rooms, Words: words,
		Filter: func(s string) string { return strings.ReplaceAll(s, "darn", "****") },
		Now:    func() int64 { return 1000 },
		NewID:  func() string { n++; return string(rune('a' + n)) },
	})
	return h, j, r, rooms, words
}

func req(action string, data any) protocol.Request {
	b, _ := json.Marshal(data)
	return protocol.Request{Action: action, ID: "1", Data: b}
}

func TestActions(t *testing.T) {
	tests := []struct {
		name  string
		user  string
		req   protocol.Request
		code  int
		check func(t *testing.T, data any)
	}{
		{name: "ping before login", req: req("ping", nil), code: 401},
		{name: "ping", user: "amy", req: req("ping", nil)},
		{name: "history with unknown user", user: "amy", req: req("history", map[string]any{"with": "zed"}), code: 404},
		{name: "chat before login", req: req("chat", map[string]string{"to": "bob", "text": "x"}), code: 401},
		{name: "unknown action", user: "amy", req: req("dance", nil), code: 400},
		{name: "peer action", user: "amy", req: req("deliver", nil), code: 403},
		{name: "login password", req: req("login", map[string]string{"username": "amy", "password": "secret1"}),
			check: func(t *testing.T, d any) {
				if r := d.(protocol.LoginReply); r.Username != "amy" || r.Node != "n1" || r.SessionID == "" {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "login token", req: req("login", map[string]string{"token": "good"})},
		{name: "login on a device", req: req("login", map[string]string{"token": "good", "device": "phone-1.b_x"})},
		{name: "login on a bad device", req: req("login", map[string]string{"token": "good", "device": "my phone"}), code: 400},
		{name: "login on a long device", req: req("login", map[string]string{"token": "good", "device": strings.Repeat("d", 65)}), code: 400},
		{name: "login bad token", req: req("login", map[string]string{"token": "bad"}), code: 401},
		{name: "login wrong password", req: req("login", map[string]string{"username": "amy", "password": "nope"}), code: 401},
		{name: "login twice", user: "amy", req: req("login", map[string]string{"token": "good"}), code: 400},
		{name: "login bad name", req: req("login", map[string]string{"username": "a b", "password": "x"}), code: 400},
		{name: "login throttled", req: req("login", map[string]string{"username": "slow", "password": "whatever"}), code: 429,
			check: func(t *testing.T, d any) {
				if r, ok := d.(protocol.RetryData); !ok || r.RetryAfter != 3 {
					t.Fatalf("data %#v, want RetryData{3}", d)
				}
			}},
		{name: "login another spelling", req: req("login", map[string]string{"username": "AMY", "password": "secret1"}),
			check: func(t *testing.T, d any) {
				if r := d.(protocol.LoginReply); r.Username != "amy" {
					t.Fatalf("logged in as %q, want the user's own name amy", r.Username)
				}
			}},
		{name: "chat to another spelling", user: "amy", req: req("chat", map[string]string{"to": "Bob", "text": "hi"}),
			check: func(t *testing.T, d any) {
				if r := d.(protocol.ChatReply); r.Conv != "dm:amy:bob" {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "history with another spelling", user: "amy", req: req("history", map[string]any{"with": "BOB"})},
		{name: "userInfo another spelling", user: "amy", req: req("userInfo", map[string]any{"username": "Bob"}),
			check: func(t *testing.T, d any) {
				if r := d.(protocol.UserInfoReply); r.Username != "bob" {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "chat", user: "amy", req: req("chat", map[string]string{"to": "bob", "text": "hi"}),
			check: func(t *testing.T, d any) {
				if r := d.(protocol.ChatReply); r.Conv != "dm:amy:bob" || r.Seq != 1 || r.TS != 1000 {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "chat unknown user", user: "amy", req: req("chat", map[string]string{"to": "zed", "text": "hi"}), code: 404},
		{name: "chat empty", user: "amy", req: req("chat", map[string]string{"to": "bob"}), code: 400},
		{name: "history limit", user: "amy", req: req("history", map[string]any{"with": "bob", "limit": 500}), code: 400},
		{name: "history negative before", user: "amy", req: req("history", map[string]any{"with": "bob", "before": -1}), code: 400},
		{name: "history not mine", user: "amy", req: req("history", map[string]any{"conv": "dm:bob:zed"}), code: 403},
		{name: "userInfo", user: "amy", req: req("userInfo", map[string]any{"username": "bob"}),
			check: func(t *testing.T, d any) {
				want := []protocol.DeviceInfo{{Node: "n1", LoginTime: 5, Device: "phone"}, {Node: "n2", LoginTime: 3}}
				if r := d.(protocol.UserInfoReply); !r.Online || r.Node != "n1" || r.LoginTime != 5 || !reflect.DeepEqual(r.Devices, want) {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "sync negative", user: "amy", req: req("sync", map[string]any{"convs": map[string]int64{"dm:amy:bob": -1}}), code: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := newTest()
			rep := h.Handle(context.Background(), &fakeConn{id: "c1", user: tc.user}, tc.req)
			if rep.Code != tc.code {
				t.Fatalf("code %d (%s), want %d", rep.Code, rep.Error, tc.code)
			}
			if rep.ID != "1" || rep.Action != tc.req.Action {
				t.Fatalf("reply not matched to request: %+v", rep)
			}
			if tc.check != nil {
				tc.check(t, rep.Data)
			}
		})
	}
}

// A login names its device to the sessions, which apply the login policy.
func TestLoginPassesTheDevice(t *testing.T) {
	h, _, _ := newTest()
	c := &fakeConn{id: "c1"}
	if rep := h.Handle(context.Background(), c, req("login", map[string]string{"token": "good", "device": "laptop"})); rep.Code != 0 {
		t.Fatalf("login: %d %s", rep.Code, rep.Error)
	}
	if c.user != "amy" || c.device != "laptop" {
		t.Fatalf("logged in %q on device %q, want amy on laptop", c.user, c.device)
	}
	rep := h.Handle(context.Background(), &fakeConn{id: "c2"}, req("login", map[string]string{"token": "good", "device": "lap top"}))
	if rep.Code != 400 || rep.Error != "device must be 1 to 64 ASCII letters, digits, '_', '-' or '.'" {
		t.Fatalf("login on a bad device: %d %q", rep.Code, rep.Error)
	}
}

// A direct message goes to the recipient's connections, and to every
// connection of the sender but the one that sent it, which has the reply;
// a message to oneself goes to all of the sender's connections once.
func TestChatReachesTheSendersOtherDevices(t *testing.T) {
	h, _, r := newTest()
	amy := &fakeConn{id: "amy-phone", user: "amy"}
	if rep := h.Handle(context.Background(), amy, req("chat", map[string]string{"to": "bob", "text": "hi"})); rep.Code != 0 {
		t.Fatalf("chat: %d %s", rep.Code, rep.Error)
	}
	if len(r.delivered) != 1 || len(r.others) != 1 {
		t.Fatalf("delivered %d to the recipient and %d to the sender's devices, want 1 and 1", len(r.delivered), len(r.others))
	}
	if o := r.others[0]; o.user != "amy" || o.except != "amy-phone" || o.m != r.delivered[0] {
		t.Fatalf("to the sender's devices: %+v, want amy's but amy-phone, the same message", o)
	}
	if rep := h.Handle(context.Background(), amy, req("chat", map[string]string{"to": "amy", "text": "note"})); rep.Code != 0 {
		t.Fatalf("chat to self: %d %s", rep.Code, rep.Error)
	}
	if len(r.delivered) != 2 || len(r.others) != 1 {
		t.Fatalf("a message to oneself: delivered %d, to the other devices %d; want 2 and still 1", len(r.delivered), len(r.others))
	}
	// A resend stores nothing and delivers nothing.
	for range 2 {
		h.Handle(context.Background(), amy, req("chat", map[string]string{"to": "bob", "text": "once", "clientMsgId": "k1"}))
	}
	if len(r.delivered) != 3 || len(r.others) != 2 {
		t.Fatalf("a resent message: delivered %d, to the other devices %d; want 3 and 2", len(r.delivered), len(r.others))
	}
}

func TestChatBusyIsRefusedBeforeStoring(t *testing.T) {
	h, j, r := newTest()
	r.busy = true
	rep := h.Handle(context.Background(), &fakeConn{id: "c", user: "amy"}, req("chat", map[string]string{"to": "bob", "text": "hi"}))
	if rep.Code != 503 || len(j.convs["dm:amy:bob"]) != 0 {
		t.Fatalf("busy router: code %d, stored %d; want 503 and nothing stored", rep.Code, len(j.convs["dm:amy:bob"]))
	}
}

func TestChatIdempotentDeliversOnce(t *testing.T) {
	h, _, r := newTest()
	c := &fakeConn{id: "c", user: "amy"}
	a := h.Handle(context.Background(), c, req("chat", map[string]string{"to": "bob", "text": "hi", "clientMsgId": "k"}))
	b := h.Handle(context.Background(), c, req("chat", map[string]string{"to": "bob", "text": "hi", "clientMsgId": "k"}))
	if a.Data != b.Data || len(r.delivered) != 1 {
		t.Fatalf("resend: %+v vs %+v, delivered %d", a.Data, b.Data, len(r.delivered))
	}
}

func TestSyncOffsets(t *testing.T) {
	h, _, _ := newTest()
	c := &fakeConn{id: "c", user: "amy"}
	for i := 0; i < 5; i++ {
		h.Handle(context.Background(), c, req("chat", map[string]string{"to": "bob", "text": "hi"}))
	}
	rep := h.Handle(context.Background(), c, req("sync", map[string]any{"convs": map[string]int64{"dm:amy:bob": 3}}))
	sc := rep.Data.(protocol.SyncReply).Convs["dm:amy:bob"]
	if sc.Latest != 5 || len(sc.Messages) != 2 || sc.Messages[0].Seq != 4 || sc.Rebuild || sc.More {
		t.Fatalf("sync from 3: %+v", sc)
	}
	rep = h.Handle(context.Background(), c, req("sync", map[string]any{"convs": map[string]int64{"dm:amy:bob": 9}}))
	if sc := rep.Data.(protocol.SyncReply).Convs["dm:amy:bob"]; !sc.Rebuild || sc.Latest != 5 || sc.Floor != 5 || len(sc.Messages) != 0 {
		t.Fatalf("client ahead of server must be told to rebuild: %+v", sc)
	}
	rep = h.Handle(context.Background(), c, req("sync", map[string]any{}))
	if sc := rep.Data.(protocol.SyncReply).Convs["dm:amy:bob"]; len(sc.Messages) != 5 {
		t.Fatalf("empty sync covers every conversation: %+v", rep.Data)
	}
}

// While a conversation's gap settles, sync returns what lies at or below
// the floor and nothing above it, whatever the offset; a client the server
// lost messages of is still told to rebuild.
func TestSyncWhileTheGapSettles(t *testing.T) {
	h, j, _ := newTest()
	c := &fakeConn{id: "c", user: "amy"}
	for range 6 {
		h.Handle(context.Background(), c, req("chat", map[string]string{"to": "bob", "text": "hi"}))
	}
	const cv = "dm:amy:bob"
	j.gaps = map[string]Gap{cv: {Floor: 3, Settling: true}}
	for _, tc := range []struct {
		off  int64
		seqs []int64
	}{{0, []int64{1, 2, 3}}, {2, []int64{3}}, {3, nil}, {5, nil}} {
		rep := h.Handle(context.Background(), c, req("sync", map[string]any{"convs": map[string]int64{cv: tc.off}}))
		sc := rep.Data.(protocol.SyncReply).Convs[cv]
		var seqs []int64
		for _, m := range sc.Messages {
			seqs = append(seqs, m.Seq)
		}
		if !sc.Settling || sc.Floor != 3 || sc.Latest != 6 || sc.Rebuild || sc.More || !slices.Equal(seqs, tc.seqs) {
			t.Fatalf("sync from %d while settling: %+v, want seqs %v, settling above floor 3", tc.off, sc, tc.seqs)
		}
	}
	j.gaps = map[string]Gap{cv: {Floor: 3, Rebuild: true}}
	rep := h.Handle(context.Background(), c, req("sync", map[string]any{"convs": map[string]int64{cv: 5}}))
	if sc := rep.Data.(protocol.SyncReply).Convs[cv]; !sc.Rebuild || sc.Settling || sc.Floor != 3 || len(sc.Messages) != 0 {
		t.Fatalf("sync of a client holding what the server lost: %+v, want rebuild above 3", sc)
	}
}

// slowJournal's reads each take a second of the handler's clock.
type slowJournal struct {
	*fakeJournal
	now *int64
}

func (j slowJournal) Range(ctx context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error) {
	*j.now += 1000
	return j.fakeJournal.Range(ctx, conv, after, before, limit, newest)
}

// A sync whose reads are slow answers what it read within half the
// request's time and marks the rest "more" with no messages; asking again
// from the same offsets gets every message exactly once, and a sync always
// answers at least one conversation, however little time is left.
func TestSlowSyncAnswersInParts(t *testing.T) {
	h, j, _ := newTest()
	now := int64(1000)
	h.d.Now = func() int64 { return now }
	h.d.Journal = slowJournal{fakeJournal: j, now: &now}
	amy := &fakeConn{id: "c", user: "amy"}
	offsets := map[string]int64{}
	for i := range 6 {
		to := fmt.Sprintf("u%d", i)
		cv := protocol.DMConv("amy", to)
		j.convs[cv] = []protocol.Message{{ID: to + "-1", Conv: cv, Seq: 1}, {ID: to + "-2", Conv: cv, Seq: 2}}
		offsets[cv] = 0
	}
	for _, timeout := range []time.Duration{5 * time.Second, time.Millisecond} {
		got := map[string][]int64{}
		next := maps.Clone(offsets)
		for calls := 1; len(next) > 0; calls++ {
			if calls > len(offsets) {
				t.Fatalf("timeout %s: %d syncs did not answer every conversation: %v", timeout, calls-1, got)
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			rep := h.Handle(ctx, amy, req("sync", map[string]any{"convs": next}))
			cancel()
			if rep.Code != 0 {
				t.Fatalf("sync: %d %s", rep.Code, rep.Error)
			}
			convs := rep.Data.(protocol.SyncReply).Convs
			read := 0
			for cv, sc := range convs {
				if sc.Latest != 2 {
					t.Fatalf("%s: latest %d, want 2 whether read or not", cv, sc.Latest)
				}
				if len(sc.Messages) > 0 {
					read++
					for _, m := range sc.Messages {
						got[cv] = append(got[cv], m.Seq)
					}
					delete(next, cv)
				} else if !sc.More {
					t.Fatalf("%s: no messages and no more: %+v", cv, sc)
				}
			}
			switch {
			case read == 0:
				t.Fatalf("timeout %s: sync %d answered no conversation", timeout, calls)
			case timeout == time.Millisecond && read != 1:
				t.Fatalf("with no time left a sync reads one conversation, read %d", read)
			case timeout == 5*time.Second && len(next) > 0 && read != 3:
				t.Fatalf("2.5 s of budget at 1 s a read: sync %d read %d conversations, want 3", calls, read)
			}
		}
		for cv := range offsets {
			if !slices.Equal(got[cv], []int64{1, 2}) {
				t.Fatalf("timeout %s: %s got seqs %v, want [1 2]", timeout, cv, got[cv])
			}
		}
	}
}

func TestEmptySyncIsBounded(t *testing.T) {
	h, j, _ := newTest()
	for i := 0; i < protocol.MaxSyncConvs+5; i++ {
		j.convs[fmt.Sprintf("dm:amy:u%04d", i)] = nil
	}
	rep := h.Handle(context.Background(), &fakeConn{id: "c", user: "amy"}, req("sync", map[string]any{}))
	if n := len(rep.Data.(protocol.SyncReply).Convs); rep.Code != 0 || n != protocol.MaxSyncConvs {
		t.Fatalf("empty sync covered %d conversations (code %d), want %d", n, rep.Code, protocol.MaxSyncConvs)
	}
}

func TestRooms(t *testing.T) {
	h, _, r, rooms, words := newTestRooms()
	amy := &fakeConn{id: "a", user: "amy"}
	bob := &fakeConn{id: "b", user: "bob"}
	do := func(c *fakeConn, action string, data any) protocol.Reply {
		t.Helper()
		return h.Handle(context.Background(), c, req(action, data))
	}
	post := map[string]string{"room": "lobby", "text": "hi darn you"}
	if rep := do(amy, "chat", post); rep.Code != 404 {
		t.Fatalf("post to a room nobody created: %d %s", rep.Code, rep.Error)
	}
	if rep := do(amy, "joinRoom", map[string]string{"room": "bad name"}); rep.Code != 400 {
		t.Fatalf("join with a bad name: %d", rep.Code)
	}
	rep := do(amy, "joinRoom", map[string]string{"room": "lobby"})
	if jr := rep.Data.(protocol.JoinReply); rep.Code != 0 || !slices.Equal(jr.Members, []string{"amy"}) || jr.Recent == nil {
		t.Fatalf("join: %d %+v", rep.Code, rep.Data)
	}
	if rep := do(bob, "chat", post); rep.Code != 403 {
		t.Fatalf("post by a non-member: %d", rep.Code)
	}
	if rep := do(bob, "history", map[string]string{"room": "lobby"}); rep.Code != 403 {
		t.Fatalf("history by a non-member: %d", rep.Code)
	}
	rep = do(amy, "chat", post)
	if cr := rep.Data.(protocol.ChatReply); rep.Code != 0 || cr.Conv != "room:lobby" || cr.Seq != 1 {
		t.Fatalf("post: %d %+v", rep.Code, rep.Data)
	}
	if len(rooms.posted) != 1 || rooms.posted[0].Text != "hi **** you" || rooms.posted[0].Room != "lobby" || len(r.delivered) != 0 {
		t.Fatalf("posted %+v (direct deliveries %d): want one filtered room message", rooms.posted, len(r.delivered))
	}
	if !slices.Equal(words.counted, []string{"hi **** you"}) {
		t.Fatalf("counted %q: want the stored, filtered text", words.counted)
	}
	rep = do(bob, "joinRoom", map[string]string{"room": "lobby"})
	if jr := rep.Data.(protocol.JoinReply); len(jr.Recent) != 1 || !slices.Equal(jr.Members, []string{"amy", "bob"}) {
		t.Fatalf("second join: %+v", rep.Data)
	}
	rep = do(bob, "rooms", nil)
	if rr := rep.Data.(protocol.RoomsReply); len(rr.Rooms) != 1 || rr.Rooms[0] != (protocol.RoomInfo{Name: "lobby", Members: 2, Joined: true, Owner: "amy"}) {
		t.Fatalf("rooms: %+v", rep.Data)
	}
	if rep := do(bob, "leaveRoom", map[string]string{"room": "lobby"}); rep.Code != 0 {
		t.Fatalf("leave: %d", rep.Code)
	}
	if rep := do(bob, "leaveRoom", map[string]string{"room": "nope"}); rep.Code != 404 {
		t.Fatalf("leave unknown room: %d", rep.Code)
	}
	// A room the user left is skipped by sync, not an error.
	rep = do(bob, "sync", map[string]any{"convs": map[string]int64{"room:lobby": 0}})
	if rep.Code != 0 || len(rep.Data.(protocol.SyncReply).Convs) != 0 {
		t.Fatalf("sync of a room left: %d %+v", rep.Code, rep.Data)
	}
	rep = do(amy, "sync", map[string]any{})
	if sc, ok := rep.Data.(protocol.SyncReply).Convs["room:lobby"]; !ok || sc.Latest != 1 {
		t.Fatalf("empty sync of a member misses the room: %+v", rep.Data)
	}
}

func TestPopular(t *testing.T) {
	h, _, _ := newTest()
	c := &fakeConn{id: "a", user: "amy"}
	for _, tc := range []struct {
		data any
		code int
		n    int64
	}{{nil, 0, protocol.DefaultPopular}, {map[string]int{"n": 3}, 0, 3}, {map[string]int{"n": -1}, 400, 0}, {map[string]int{"n": protocol.MaxPopular + 1}, 400, 0}} {
		rep := h.Handle(context.Background(), c, req("popular", tc.data))
		if rep.Code != tc.code {
			t.Fatalf("popular %v: code %d", tc.data, rep.Code)
		}
		if tc.code == 0 && rep.Data.(protocol.PopularReply).Words[0].Count != tc.n {
			t.Fatalf("popular %v asked for %+v", tc.data, rep.Data)
		}
	}
}

func TestRebuild(t *testing.T) {
	h, j, _ := newTest()
	amy := &fakeConn{id: "a", user: "amy"}
	for i := 0; i < 2; i++ {
		h.Handle(context.Background(), amy, req("chat", map[string]string{"to": "bob", "text": "hi"}))
	}
	msg := func(seq int64, from, to string) protocol.Message {
		return protocol.Message{ID: fmt.Sprintf("m%d", seq), Conv: "dm:amy:bob", Seq: seq, From: from, To: to, Text: "held", TS: 9}
	}
	good := []protocol.Message{msg(2, "amy", "bob"), msg(3, "bob", "amy"), msg(4, "amy", "bob")}
	rep := h.Handle(context.Background(), amy, req("rebuild", map[string]any{"conv": "dm:amy:bob", "messages": good}))
	if r, ok := rep.Data.(protocol.RebuildReply); rep.Code != 0 || !ok || r.Restored != 2 || r.Latest != 4 {
		t.Fatalf("rebuild: %d %s %+v", rep.Code, rep.Error, rep.Data)
	}
	if got := j.convs["dm:amy:bob"]; len(got) != 4 || got[1].ID == "m2" {
		t.Fatalf("the server's own seq 2 must win: %+v", got)
	}
	dirty := msg(5, "bob", "amy")
	dirty.Text = "darn it"
	h.Handle(context.Background(), amy, req("rebuild", map[string]any{"conv": "dm:amy:bob", "messages": []protocol.Message{dirty}}))
	if got := j.convs["dm:amy:bob"]; len(got) != 5 || got[4].Text != "**** it" {
		t.Fatalf("rebuilt text must pass the filter: %+v", got[len(got)-1])
	}
	for name, tc := range map[string]struct {
		conv string
		msgs []protocol.Message
		code int
	}{
		"not mine":       {"dm:bob:zed", []protocol.Message{{ID: "x", Conv: "dm:bob:zed", Seq: 1, From: "bob", To: "zed", Text: "t", TS: 1}}, 403},
		"empty":          {"dm:amy:bob", nil, 400},
		"other conv":     {"dm:amy:bob", []protocol.Message{{ID: "x", Conv: "dm:amy:amy", Seq: 5, From: "amy", To: "amy", Text: "t", TS: 1}}, 400},
		"forged sender":  {"dm:amy:bob", []protocol.Message{msg(5, "zed", "bob")}, 400},
		"seq twice":      {"dm:amy:bob", []protocol.Message{msg(5, "amy", "bob"), msg(5, "bob", "amy")}, 400},
		"zero seq":       {"dm:amy:bob", []protocol.Message{msg(0, "amy", "bob")}, 400},
		"far ahead":      {"dm:amy:bob", []protocol.Message{msg(5+protocol.MaxRebuildAhead+1, "amy", "bob")}, 400},
		"room of others": {"room:lobby", []protocol.Message{{ID: "x", Conv: "room:lobby", Seq: 1, From: "amy", Room: "lobby", Text: "t", TS: 1}}, 403},
	} {
		rep := h.Handle(context.Background(), amy, req("rebuild", map[string]any{"conv": tc.conv, "messages": tc.msgs}))
		if rep.Code != tc.code {
			t.Errorf("%s: code %d (%s), want %d", name, rep.Code, rep.Error, tc.code)
		}
	}
}
