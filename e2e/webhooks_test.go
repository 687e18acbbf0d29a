package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
	"chatcluster/webhook"
)

// Modes of a test receiver.
const (
	receiverUp      = iota // answers 204
	receiverFailing        // answers 503
	receiverClosed         // takes the event, then closes the connection without an answer
)

// hookReceiver is a webhook endpoint in the test: it verifies every
// delivery's signature (and rejects old ones), and keeps each event once,
// by its id, as a receiver should.
type hookReceiver struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server
	mode   atomic.Int32
	failed atomic.Int64 // deliveries not taken (503 or closed)

	mu     sync.Mutex
	events map[string]webhook.Event // by id
	dups   int                      // deliveries of an id taken before
}

func newHookReceiver(t *testing.T, secret []byte) *hookReceiver {
	r := &hookReceiver{t: t, secret: secret, events: map[string]webhook.Event{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		return
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, webhook.DefaultTolerance, time.Now()); err != nil {
		r.t.Errorf("delivery with a bad signature (%v): %s", err, body)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	switch r.mode.Load() {
	case receiverFailing:
		r.failed.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var ev webhook.Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.ID != req.Header.Get(webhook.HeaderEventID) {
		r.t.Errorf("delivery %s (id header %q): %v", body, req.Header.Get(webhook.HeaderEventID), err)
	}
	r.mu.Lock()
	if _, seen := r.events[ev.ID]; seen {
		r.dups++
	} else {
		r.events[ev.ID] = ev
	}
	r.mu.Unlock()
	if r.mode.Load() == receiverClosed {
		// Processed, but the answer is lost: the node must send it again.
		r.failed.Add(1)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// find returns the events of type typ that match.
func (r *hookReceiver) find(typ string, match func(webhook.Event) bool) []webhook.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []webhook.Event
	for _, ev := range r.events {
		if ev.Type == typ && match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// message returns the message of a message.stored event with that id.
func (r *hookReceiver) message(id string) (protocol.Message, bool) {
	evs := r.find(webhook.MessageStored, func(ev webhook.Event) bool { return ev.ID == "m-"+id })
	if len(evs) != 1 {
		return protocol.Message{}, false
	}
	var d struct {
		Message protocol.Message `json:"message"`
	}
	if err := json.Unmarshal(evs[0].Data, &d); err != nil {
		return protocol.Message{}, false
	}
	return d.Message, true
}

// session returns the login or logout events of user.
func (r *hookReceiver) session(typ, user string) []webhook.SessionData {
	var out []webhook.SessionData
	for _, ev := range r.find(typ, func(webhook.Event) bool { return true }) {
		var s webhook.SessionData
		if json.Unmarshal(ev.Data, &s) == nil && s.User == user {
			out = append(out, s)
		}
	}
	return out
}

func writeSecret(t *testing.T, name, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// activeDispatcher returns the index of the node whose dispatcher
// delivers, by its metrics.
func activeDispatcher(t *testing.T, c *testenv.Cluster) int {
	t.Helper()
	active := -1
	testenv.WaitFor(t, 30*time.Second, "a webhook dispatcher active", func() bool {
		for i := 0; i < c.Len(); i++ {
			if v, _ := scrape(t, "http://"+c.Node(i).AdminAddr+"/metrics").value("chat_webhook_dispatcher_active"); v == 1 {
				active = i
				return true
			}
		}
		return false
	})
	return active
}

// TestWebhooks: events reach an endpoint the cluster's nodes are given,
// signed; while the endpoint is down (503, then closing connections) chat
// goes on, and once it is back it gets every event it missed, each id
// once after deduplication.
func TestWebhooks(t *testing.T) {
	const secret = "e2e-webhook-secret-0123456789"
	rcv := newHookReceiver(t, []byte(secret))
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: append([]string{
		"CHAT_WEBHOOKS=" + rcv.srv.URL + "/chat-events",
		"CHAT_WEBHOOK_SECRET_FILE=" + writeSecret(t, "webhook.secret", secret),
		"CHAT_WEBHOOK_RETRY_MIN=50ms", "CHAT_WEBHOOK_RETRY_MAX=400ms", "CHAT_WEBHOOK_ATTEMPTS=1000",
	}, fastEnv...)})
	c.WaitLeader(t)
	register(t, c, "alice", "bob", "carol")
	alice := connect(t, c.Node(0).WSURL, "alice")
	bob := connect(t, c.Node(1).WSURL, "bob")

	sent := map[string]protocol.ChatReply{} // message id -> reply
	texts := map[string]string{}
	send := func(from *user, to, text string) {
		t.Helper()
		rep, err := from.conn.Chat(ctxT(t, 10*time.Second), to, text, "")
		if err != nil {
			t.Fatalf("%s to %s: %v", from.name, to, err)
		}
		sent[rep.ID], texts[rep.ID] = rep, text
	}
	send(alice, "bob", "before the outage")
	testenv.WaitFor(t, 30*time.Second, "the logins and the first message delivered", func() bool {
		_, ok := rcv.message(firstID(sent))
		return ok && len(rcv.session(webhook.UserLogin, "alice")) == 1 && len(rcv.session(webhook.UserLogin, "bob")) == 1
	})
	if l := rcv.session(webhook.UserLogin, "bob")[0]; l.Node != "n2" || l.SessionID == "" {
		t.Fatalf("bob's login event %+v", l)
	}

	// The endpoint answers 503: chat is not slowed, events wait.
	rcv.mode.Store(receiverFailing)
	start := time.Now()
	for i := range 3 {
		send(alice, "bob", text("alice during 503", i))
		send(bob, "alice", text("bob during 503", i))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("6 messages took %v with the endpoint down", took)
	}
	carol := connect(t, c.Node(0).WSURL, "carol")
	bobSession := rcv.session(webhook.UserLogin, "bob")[0].SessionID
	bob.conn.Close()
	testenv.WaitFor(t, 30*time.Second, "attempts refused with 503", func() bool { return rcv.failed.Load() >= 5 })
	// Then it takes events but closes the connection without answering,
	// so they come again.
	rcv.mode.Store(receiverClosed)
	failed := rcv.failed.Load()
	send(alice, "carol", "while the endpoint closes connections")
	send(carol, "alice", "and back")
	testenv.WaitFor(t, 30*time.Second, "attempts cut off", func() bool { return rcv.failed.Load() >= failed+5 })

	active := activeDispatcher(t, c)
	m := scrape(t, "http://"+c.Node(active).AdminAddr+"/metrics")
	name := webhook.NameOf(rcv.srv.URL + "/chat-events")
	if v, _ := m.value("chat_webhook_failures_total", "endpoint", name); v < 10 {
		t.Errorf("chat_webhook_failures_total = %v on the active node, want at least 10", v)
	}
	if v, ok := m.value("chat_webhook_endpoint_up", "endpoint", name); !ok || v != 0 {
		t.Errorf("chat_webhook_endpoint_up = %v (%v) while the endpoint is down", v, ok)
	}
	if v, _ := m.value("chat_webhook_backlog", "endpoint", name); v < 1 {
		t.Errorf("chat_webhook_backlog = %v while events wait", v)
	}

	// Back up: every event it missed arrives.
	rcv.mode.Store(receiverUp)
	testenv.WaitFor(t, 60*time.Second, "every event after the outage", func() bool {
		for id := range sent {
			if _, ok := rcv.message(id); !ok {
				return false
			}
		}
		logout := rcv.session(webhook.UserLogout, "bob")
		return len(rcv.session(webhook.UserLogin, "carol")) == 1 && len(logout) == 1 && logout[0].SessionID == bobSession
	})
	for id, rep := range sent {
		got, _ := rcv.message(id)
		if got.Conv != rep.Conv || got.Seq != rep.Seq || got.TS != rep.TS || got.Text != texts[id] || got.From == "" {
			t.Errorf("event of %s carries %+v; the reply was %+v, the text %q", id, got, rep, texts[id])
		}
	}
	if n := len(rcv.find(webhook.MessageStored, func(webhook.Event) bool { return true })); n != len(sent) {
		t.Errorf("%d message events, want %d (one per message)", n, len(sent))
	}
	testenv.WaitFor(t, 30*time.Second, "the endpoint up again in the metrics", func() bool {
		v, ok := scrape(t, "http://"+c.Node(active).AdminAddr+"/metrics").value("chat_webhook_endpoint_up", "endpoint", name)
		return ok && v == 1
	})
	rcv.mu.Lock()
	dups := rcv.dups
	rcv.mu.Unlock()
	if dups < 2 {
		t.Errorf("%d deliveries of events already taken, want the 2 whose answer was lost at least", dups)
	}

	// Events of a conversation other than messages: an edit, a recall, a
	// room joined and left, each its own event type.
	var target protocol.ChatReply
	for _, rep := range sent {
		if strings.HasPrefix(texts[rep.ID], "alice") && rep.Conv == "dm:alice:bob" {
			target = rep
			break
		}
	}
	if target.Seq == 0 {
		t.Fatal("no message of alice to bob was sent")
	}
	edit, err := alice.conn.Edit(ctxT(t, 10*time.Second), target.Conv, target.Seq, "edited after the outage")
	if err != nil {
		t.Fatalf("edit of %+v: %v", target, err)
	}
	recall, err := alice.conn.Recall(ctxT(t, 10*time.Second), target.Conv, target.Seq)
	if err != nil {
		t.Fatalf("recall of %+v: %v", target, err)
	}
	if _, err := carol.conn.JoinRoom(ctxT(t, 10*time.Second), "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.conn.LeaveRoom(ctxT(t, 10*time.Second), "ops"); err != nil {
		t.Fatal(err)
	}
	entry := func(ev webhook.Event) (m protocol.Message) {
		var d struct {
			Message protocol.Message `json:"message"`
			Room    string           `json:"room"`
			User    string           `json:"user"`
		}
		if json.Unmarshal(ev.Data, &d) != nil {
			return protocol.Message{}
		}
		if d.Room != "" && (d.Room != d.Message.Room || d.User != d.Message.From) {
			t.Errorf("room event %s names %s/%s, its entry %+v", ev.ID, d.Room, d.User, d.Message)
		}
		return d.Message
	}
	want := []struct {
		typ   string
		match func(protocol.Message) bool
	}{
		{webhook.MessageEdited, func(m protocol.Message) bool {
			return m.ID == edit.ID && m.Seq == edit.Seq && m.Kind == protocol.KindEdit && m.Ref == target.Seq && m.Text == "edited after the outage"
		}},
		{webhook.MessageRecalled, func(m protocol.Message) bool {
			return m.ID == recall.ID && m.Kind == protocol.KindRecall && m.Ref == target.Seq && m.From == "alice"
		}},
		{webhook.RoomJoin, func(m protocol.Message) bool {
			return m.Room == "ops" && m.From == "carol" && m.Kind == protocol.KindJoin
		}},
		{webhook.RoomLeave, func(m protocol.Message) bool {
			return m.Room == "ops" && m.From == "carol" && m.Kind == protocol.KindLeave
		}},
	}
	for _, w := range want {
		testenv.WaitFor(t, 30*time.Second, "a "+w.typ+" event", func() bool {
			return len(rcv.find(w.typ, func(ev webhook.Event) bool { return w.match(entry(ev)) })) == 1
		})
	}
	if n := len(rcv.find(webhook.MessageStored, func(webhook.Event) bool { return true })); n != len(sent) {
		t.Errorf("%d message events after the edit, recall, join and leave, want %d: they are events of their own types", n, len(sent))
	}
}

func firstID(sent map[string]protocol.ChatReply) string {
	for id := range sent {
		return id
	}
	return ""
}

// TestBeforeMessageHook: the hook allows, rejects and rewrites messages;
// one that does not answer in time lets the message through on a node
// that fails open and has it refused on one that fails closed.
func TestBeforeMessageHook(t *testing.T) {
	const secret = "e2e-hook-secret-0123456789"
	release := make(chan struct{})
	var calls atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header.Get(webhook.HeaderSignature), body, webhook.DefaultTolerance, time.Now()); err != nil {
			t.Errorf("hook call with a bad signature: %v", err)
		}
		var ev struct {
			Type string `json:"type"`
			Data struct {
				Message protocol.Message `json:"message"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.Type != webhook.MessageBefore {
			t.Errorf("hook call %s: %v", body, err)
		}
		text := ev.Data.Message.Text
		switch {
		case strings.HasPrefix(text, "slow"):
			select { // past the node's deadline
			case <-release:
			case <-r.Context().Done():
			}
		case strings.HasPrefix(text, "reject"):
			io.WriteString(w, `{"action":"reject","reason":"no shouting, please"}`)
		case strings.HasPrefix(text, "rewrite"):
			io.WriteString(w, `{"action":"rewrite","text":"rewritten by the hook"}`)
		default:
			io.WriteString(w, `{"action":"allow"}`)
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { close(release) }) // first: the server waits for its handlers
	secretFile := writeSecret(t, "hook.secret", secret)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2,
		Env: append([]string{
			"CHAT_BEFORE_MESSAGE_HOOK=" + hook.URL + "/check",
			"CHAT_BEFORE_MESSAGE_HOOK_SECRET_FILE=" + secretFile,
			"CHAT_BEFORE_MESSAGE_HOOK_TIMEOUT=200ms",
		}, fastEnv...),
		NodeEnv: func(p *testenv.Proc) []string {
			if p.ID == "n2" {
				return []string{"CHAT_BEFORE_MESSAGE_HOOK_FAIL=closed"}
			}
			return nil
		},
	})
	c.WaitLeader(t)
	register(t, c, "alice", "bob", "carol")
	alice := connect(t, c.Node(0).WSURL, "alice") // fail-open
	carol := connect(t, c.Node(1).WSURL, "carol") // fail-closed
	bob := connect(t, c.Node(0).WSURL, "bob")

	chat := func(u *user, text string) (protocol.ChatReply, error) {
		return u.conn.Chat(ctxT(t, 10*time.Second), "bob", text, "")
	}
	stored := func(conv string) map[string]string {
		out := map[string]string{}
		for _, m := range allHistory(t, bob, conv) {
			out[m.ID] = m.Text
		}
		return out
	}

	allowed, err := chat(alice, "hello bob")
	if err != nil {
		t.Fatalf("allowed message: %v", err)
	}
	_, err = chat(alice, "reject this")
	var re *chatclient.ReplyError
	if !errors.As(err, &re) || re.Code != 403 || re.Msg != "message rejected: no shouting, please" {
		t.Fatalf("rejected message: %v, want 403 message rejected: no shouting, please", err)
	}
	rewritten, err := chat(alice, "rewrite this")
	if err != nil {
		t.Fatalf("rewritten message: %v", err)
	}
	start := time.Now()
	open, err := chat(alice, "slow on a node that fails open")
	if err != nil {
		t.Fatalf("fail-open: %v", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("the message waited %v for a hook with a 200ms deadline", took)
	}
	_, err = chat(carol, "slow on a node that fails closed")
	if !errors.As(err, &re) || re.Code != 503 || !strings.Contains(re.Msg, "could not be checked") {
		t.Fatalf("fail-closed: %v, want 503", err)
	}
	carolOK, err := chat(carol, "fine from carol")
	if err != nil {
		t.Fatalf("allowed on the fail-closed node: %v", err)
	}

	want := map[string]string{
		allowed.ID: "hello bob", rewritten.ID: "rewritten by the hook", open.ID: "slow on a node that fails open",
	}
	if got := stored(allowed.Conv); len(got) != len(want) {
		t.Fatalf("alice's conversation holds %v, want %v", got, want)
	} else {
		for id, text := range want {
			if got[id] != text {
				t.Errorf("message %s stored as %q, want %q", id, got[id], text)
			}
		}
	}
	if got := stored(carolOK.Conv); len(got) != 1 || got[carolOK.ID] != "fine from carol" {
		t.Fatalf("carol's conversation holds %v: the message refused fail-closed must not be stored", got)
	}
	// bob got pushed what was stored, the rewritten text included.
	testenv.WaitFor(t, 10*time.Second, "bob's pushes", func() bool { return len(bob.received()) == 4 })
	for _, m := range bob.received() {
		if m.ID == rewritten.ID && m.Text != "rewritten by the hook" {
			t.Errorf("bob was pushed %q for the rewritten message", m.Text)
		}
	}
	if n := calls.Load(); n != 6 {
		t.Errorf("the hook was called %d times, want once per message (6)", n)
	}
	for i, outcome := range map[int]map[string]float64{
		0: {"allow": 1, "reject": 1, "rewrite": 1, "error": 1},
		1: {"allow": 1, "error": 1},
	} {
		m := scrape(t, "http://"+c.Node(i).AdminAddr+"/metrics")
		for o, n := range outcome {
			m.expect(t, c.Node(i).ID, "chat_before_message_hook_total", n, "outcome", o)
		}
	}
}
