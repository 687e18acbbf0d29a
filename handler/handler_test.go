package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"

	"chatcluster/protocol"
)

type fakeConn struct{ id, user string }

func (c *fakeConn) ConnID() string { return c.id }
func (c *fakeConn) User() string   { return c.user }

type fakeUsers struct{ pw map[string]string }

func (f fakeUsers) CheckPassword(_ context.Context, u, p string) error {
	if pw, ok := f.pw[u]; !ok || pw != p {
		return ErrBadCredentials
	}
	return nil
}
func (f fakeUsers) TokenUser(_ context.Context, tok string) (string, error) {
	if tok == "good" {
		return "amy", nil
	}
	return "", ErrBadCredentials
}
func (f fakeUsers) Exists(_ context.Context, u string) error {
	if _, ok := f.pw[u]; !ok {
		return ErrUnknownUser
	}
	return nil
}

type fakeSessions struct{}

func (fakeSessions) Login(_ context.Context, c Conn, u string) (string, error) {
	c.(*fakeConn).user = u
	return "s-" + c.ConnID(), nil
}
func (fakeSessions) Lookup(context.Context, string) (Presence, error) {
	return Presence{Online: true, Node: "n1", LoginTime: 5}, nil
}

// fakeJournal keeps messages in memory, per conversation.
type fakeJournal struct {
	convs map[string][]protocol.Message
	idem  map[string]protocol.Message
}

func (j *fakeJournal) Append(_ context.Context, m protocol.Message, cid string, members []string) (protocol.Message, bool, error) {
	if prev, ok := j.idem[m.From+cid]; ok && cid != "" {
		return prev, true, nil
	}
	m.Seq = int64(len(j.convs[m.Conv]) + 1)
	j.convs[m.Conv] = append(j.convs[m.Conv], m)
	j.idem[m.From+cid] = m
	return m, false, nil
}
func (j *fakeJournal) Latest(_ context.Context, convs []string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, c := range convs {
		out[c] = int64(len(j.convs[c]))
	}
	return out, nil
}
func (j *fakeJournal) Convs(context.Context, string) ([]string, error) {
	var out []string
	for c := range j.convs {
		out = append(out, c)
	}
	sort.Strings(out)
	return out, nil
}
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
	return out, nil
}

type fakeRouter struct {
	busy      bool
	delivered []protocol.Message
}

func (r *fakeRouter) Ready() error {
	if r.busy {
		return ErrBusy
	}
	return nil
}
func (r *fakeRouter) Deliver(m protocol.Message, to []string) { r.delivered = append(r.delivered, m) }

func newTest() (*Handler, *fakeJournal, *fakeRouter) {
	j := &fakeJournal{convs: map[string][]protocol.Message{}, idem: map[string]protocol.Message{}}
	r := &fakeRouter{}
	n := 0
	h := New(Deps{
		Node: "n1", Users: fakeUsers{pw: map[string]string{"amy": "secret1", "bob": "secret2"}},
		Sessions: fakeSessions{}, Journal: j, Router: r,
		Now:   func() int64 { return 1000 },
		NewID: func() string { n++; return string(rune('a' + n)) },
	})
	return h, j, r
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
		{name: "login bad token", req: req("login", map[string]string{"token": "bad"}), code: 401},
		{name: "login wrong password", req: req("login", map[string]string{"username": "amy", "password": "nope"}), code: 401},
		{name: "login twice", user: "amy", req: req("login", map[string]string{"token": "good"}), code: 400},
		{name: "login bad name", req: req("login", map[string]string{"username": "a b", "password": "x"}), code: 400},
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
				if r := d.(protocol.UserInfoReply); !r.Online || r.Node != "n1" {
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
	if sc := rep.Data.(protocol.SyncReply).Convs["dm:amy:bob"]; !sc.Rebuild || sc.Latest != 5 || len(sc.Messages) != 0 {
		t.Fatalf("client ahead of server must be told to rebuild: %+v", sc)
	}
	rep = h.Handle(context.Background(), c, req("sync", map[string]any{}))
	if sc := rep.Data.(protocol.SyncReply).Convs["dm:amy:bob"]; len(sc.Messages) != 5 {
		t.Fatalf("empty sync covers every conversation: %+v", rep.Data)
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
