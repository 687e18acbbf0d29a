package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// supportWait bounds every wait for a support push or state: far above
// what a loaded machine takes (an assignment is a few milliseconds), so
// only a lost push or a wrong state fails it.
const supportWait = 30 * time.Second

// visitor creates a visitor at the gateway and logs it in at wsURL.
func visitor(t *testing.T, c *testenv.Cluster, wsURL, name string) (*user, string) {
	t.Helper()
	v, err := gw(c).Visitor(ctxT(t, 10*time.Second), name, "web")
	if err != nil {
		t.Fatalf("POST /api/visitor: %v", err)
	}
	return visitorAt(t, wsURL, v.Visitor, v.Token), v.Token
}

// visitorAt logs visitor id in at wsURL with its token.
func visitorAt(t *testing.T, wsURL, id, token string) *user {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	conn, err := chatclient.Dial(ctx, wsURL, 4096)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	u := &user{name: id, conn: conn, readDone: make(chan struct{})}
	go u.collect()
	t.Cleanup(func() { conn.Close() })
	rep, err := conn.LoginToken(ctx, token)
	if err != nil {
		t.Fatalf("visitor login at %s: %v", wsURL, err)
	}
	if rep.Username != id || !rep.Visitor {
		t.Fatalf("visitor login = %+v, want %s as a visitor", rep, id)
	}
	return u
}

// agentUp logs agent name in at wsURL and sets it available.
func agentUp(t *testing.T, wsURL, name string) *user {
	t.Helper()
	u := connect(t, wsURL, name)
	waitFor(t, "agent "+name+" available", func() error {
		st, err := u.conn.AgentStatus(ctxT(t, 10*time.Second), protocol.AgentAvailable)
		if err == nil && st.Status != protocol.AgentAvailable {
			err = fmt.Errorf("status %q", st.Status)
		}
		return err
	})
	return u
}

// waitFor retries f until it returns nil, for up to supportWait.
func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(supportWait)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, supportWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pushesOf decodes u's pushes of kind.
func pushesOf[T any](u *user, kind string) []T {
	var out []T
	for _, p := range u.otherPushes() {
		if p.Action != kind {
			continue
		}
		var v T
		if json.Unmarshal(p.Data, &v) == nil {
			out = append(out, v)
		}
	}
	return out
}

// waitPush waits for a push of kind to u that ok accepts and returns it.
func waitPush[T any](t *testing.T, u *user, kind string, ok func(T) bool) T {
	t.Helper()
	var got T
	waitFor(t, fmt.Sprintf("%s push to %s", kind, u.name), func() error {
		for _, p := range pushesOf[T](u, kind) {
			if ok(p) {
				got = p
				return nil
			}
		}
		return errors.New("none yet")
	})
	return got
}

// waitMessage waits until u was pushed a message of conv with text.
func waitMessage(t *testing.T, u *user, conv, text string) protocol.Message {
	t.Helper()
	var got protocol.Message
	waitFor(t, fmt.Sprintf("message %q to %s", text, u.name), func() error {
		for _, m := range u.received() {
			if m.Conv == conv && m.Text == text {
				got = m
				return nil
			}
		}
		return errors.New("not yet")
	})
	return got
}

// held is what agent u holds, by conversation id.
func held(t *testing.T, u *user) []string {
	t.Helper()
	r, err := u.conn.SupportConvs(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("supportConvs of %s: %v", u.name, err)
	}
	var out []string
	for _, c := range r.Convs {
		out = append(out, c.Conv)
	}
	slices.Sort(out)
	return out
}

func wantCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	if chatclient.Code(err) != code {
		t.Fatalf("%s: %v, want code %d", what, err, code)
	}
}

// TestSupportVisitorMeetsAgent walks a support conversation as its users
// would: a visitor from the web page waits in the queue and writes
// meanwhile, an agent comes online and gets the conversation with what
// was written, they talk across nodes, the visitor reloads and resumes,
// the agent closes it and takes the next one, transfers one to a
// colleague, and reads a visitor's whole history.
func TestSupportVisitorMeetsAgent(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: []string{"CHAT_VISITORS_PER_MINUTE=3"}})
	c.WaitLeader(t)
	register(t, c, "ann", "bob", "carl")
	if out := c.Admin(t, "agent", "add", "ann", "--capacity", "1"); out == "" {
		t.Fatal("chat admin agent add printed nothing")
	}
	c.Admin(t, "agent", "add", "bob", "--capacity", "1")

	// Bad input at the gateway.
	if _, err := gw(c).Visitor(ctxT(t, 5*time.Second), string(make([]byte, 200)), "web"); err == nil {
		t.Fatal("a visitor name of 200 bytes was accepted")
	}
	if _, err := gw(c).Visitor(ctxT(t, 5*time.Second), "x", "Web Site"); err == nil {
		t.Fatal("a channel with spaces was accepted")
	}

	v1, tok1 := visitor(t, c, c.Node(0).WSURL, "Vera")
	// A visitor can do nothing but support.
	ctx := ctxT(t, 2*time.Minute)
	_, err := v1.conn.Rooms(ctx)
	wantCode(t, "rooms as a visitor", err, protocol.CodeForbidden)
	_, err = v1.conn.Chat(ctx, "ann", "hi", "")
	wantCode(t, "a direct message from a visitor", err, protocol.CodeForbidden)
	_, err = v1.conn.JoinRoom(ctx, "lobby")
	wantCode(t, "joinRoom as a visitor", err, protocol.CodeForbidden)

	sc, err := v1.conn.Support(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sc.State != protocol.SupportQueued || sc.Position != 1 || sc.Name != "Vera" || sc.Channel != "web" {
		t.Fatalf("support = %+v, want queued at 1 as Vera from web", sc)
	}
	conv1 := sc.Conv
	if again, err := v1.conn.Support(ctx); err != nil || again.Conv != conv1 {
		t.Fatalf("support again = %+v, %v; want the same %s", again, err, conv1)
	}
	if _, err := v1.conn.ChatConv(ctx, conv1, "is anyone there?", "v1-1"); err != nil {
		t.Fatalf("a message while queued: %v", err)
	}

	v2, _ := visitor(t, c, c.Node(1).WSURL, "")
	// The gateway bounds the visitors one address makes: 3 a minute here,
	// and the first of this minute may have been in the previous one.
	var limited *chatclient.HTTPError
	for i := 0; limited == nil; i++ {
		if i > 4 {
			t.Fatal("no 429 after 6 visitors from one address with a bound of 3 a minute")
		}
		if _, err := gw(c).Visitor(ctx, "", ""); err != nil && !errors.As(err, &limited) {
			t.Fatal(err)
		}
	}
	if limited.Status != 429 {
		t.Fatalf("visitor over the bound: %v, want 429", limited)
	}
	sc2, err := v2.conn.Support(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sc2.Position != 2 || sc2.Waiting != 2 {
		t.Fatalf("second visitor = %+v, want position 2 of 2", sc2)
	}
	// Another visitor cannot write to or read the first one's.
	_, err = v2.conn.ChatConv(ctx, conv1, "hijack", "")
	wantCode(t, "a visitor writing to another's conversation", err, protocol.CodeForbidden)
	_, err = v2.conn.History(ctx, protocol.HistoryData{Conv: conv1})
	wantCode(t, "a visitor reading another's conversation", err, protocol.CodeForbidden)
	// A user who is not an agent has no agent actions.
	carl := connect(t, c.Node(2).WSURL, "carl")
	_, err = carl.conn.AgentStatus(ctx, protocol.AgentAvailable)
	wantCode(t, "agentStatus of a user who is no agent", err, protocol.CodeForbidden)

	ann := agentUp(t, c.Node(2).WSURL, "ann")
	got := waitPush(t, ann, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == conv1 })
	if got.Visitor != v1.name || got.Name != "Vera" || len(got.Messages) != 1 || got.Messages[0].Text != "is anyone there?" {
		t.Fatalf("ann's assigned push = %+v, want Vera's conversation with her message", got)
	}
	waitPush(t, v1, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == conv1 && p.Agent == "ann" })
	waitPush(t, v2, protocol.PushQueue, func(p protocol.QueuePush) bool { return p.Conv == sc2.Conv && p.Position == 1 })

	if _, err := ann.conn.ChatConv(ctx, conv1, "hello Vera, how can I help?", "a-1"); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, v1, conv1, "hello Vera, how can I help?")
	if _, err := v1.conn.ChatConv(ctx, conv1, "my order is late", "v1-2"); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, ann, conv1, "my order is late")
	// bob holds nothing and may not write to it.
	bob := connect(t, c.Node(0).WSURL, "bob")
	_, err = bob.conn.ChatConv(ctx, conv1, "me too", "")
	wantCode(t, "an agent writing to another's conversation", err, protocol.CodeForbidden)

	// The visitor reloads the page: same token, same conversation, and
	// what it missed by sync.
	v1.conn.Close()
	v1 = visitorAt(t, c.Node(1).WSURL, v1.name, tok1)
	if sc, err := v1.conn.Support(ctx); err != nil || sc.Conv != conv1 || sc.State != protocol.SupportAssigned || sc.Agent != "ann" || sc.Latest != 3 {
		t.Fatalf("support after reload = %+v, %v; want %s assigned to ann with 3 messages", sc, err, conv1)
	}
	sync, err := v1.conn.SyncAll(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := sync[conv1]; len(s.Messages) != 3 || len(sync) != 1 {
		t.Fatalf("visitor sync = %+v, want its one conversation with 3 messages", sync)
	}

	// ann closes it: the visitor is told, and the next one is hers.
	if _, err := ann.conn.SupportClose(ctx, conv1); err != nil {
		t.Fatal(err)
	}
	waitPush(t, v1, protocol.PushClosed, func(p protocol.ClosedPush) bool { return p.Conv == conv1 && p.By == "ann" })
	_, err = v1.conn.ChatConv(ctx, conv1, "one more thing", "")
	wantCode(t, "a message to a closed conversation", err, protocol.CodeConflict)
	waitPush(t, ann, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc2.Conv })

	// A page that lost the closed push resumes the conversation it shows:
	// it is told it was closed, and nothing new is opened.
	if sc, err := v1.conn.SupportResume(ctx, conv1); err != nil || sc.Conv != conv1 || sc.State != protocol.SupportClosed || sc.ClosedBy != "ann" {
		t.Fatalf("resume of the closed conversation = %+v, %v; want it closed by ann", sc, err)
	}
	_, err = v1.conn.SupportResume(ctx, sc2.Conv)
	wantCode(t, "resuming another visitor's conversation", err, protocol.CodeBadRequest)

	// The visitor opens a new one; bob takes it and hands it to ann once
	// she has room.
	sc3, err := v1.conn.Support(ctx)
	if err != nil || sc3.Conv == conv1 || sc3.State != protocol.SupportQueued {
		t.Fatalf("support after close = %+v, %v; want a new queued conversation", sc3, err)
	}
	if _, err := v1.conn.ChatConv(ctx, sc3.Conv, "it is me again", "v1-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.conn.AgentStatus(ctx, protocol.AgentAvailable); err != nil {
		t.Fatal(err)
	}
	waitPush(t, bob, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc3.Conv })
	_, err = bob.conn.SupportTransfer(ctx, sc3.Conv, "ann")
	wantCode(t, "a transfer to an agent with no room", err, protocol.CodeConflict)
	_, err = bob.conn.SupportTransfer(ctx, sc3.Conv, "carl")
	wantCode(t, "a transfer to a user who is no agent", err, protocol.CodeNotFound)
	if _, err := ann.conn.SupportClose(ctx, sc2.Conv); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ann free", func() error {
		if h := held(t, ann); len(h) != 0 {
			return fmt.Errorf("ann holds %v", h)
		}
		return nil
	})
	if _, err := bob.conn.SupportTransfer(ctx, sc3.Conv, "ann"); err != nil {
		t.Fatalf("transfer to ann: %v", err)
	}
	tr := waitPush(t, ann, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc3.Conv })
	if tr.From != "bob" || len(tr.Messages) != 1 {
		t.Fatalf("transferred push = %+v, want from bob with the visitor's message", tr)
	}
	waitPush(t, bob, protocol.PushUnassigned, func(p protocol.UnassignedPush) bool {
		return p.Conv == sc3.Conv && p.Reason == "transferred" && p.To == "ann"
	})
	waitPush(t, v1, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc3.Conv && p.Agent == "ann" })
	if h := held(t, bob); len(h) != 0 {
		t.Fatalf("bob holds %v after the transfer", h)
	}

	// Any agent reads a visitor's whole history, across conversations,
	// in pages.
	var all []protocol.Message
	q := protocol.SupportHistoryData{Visitor: v1.name, Limit: 2}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("supportHistory does not end")
		}
		r, err := bob.conn.SupportHistory(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Convs) != 2 || r.Convs[0].Conv != sc3.Conv || r.Convs[1].Conv != conv1 || !slices.Equal(r.Convs[0].Agents, []string{"bob", "ann"}) {
			t.Fatalf("supportHistory convs = %+v, want %s (bob then ann) and %s", r.Convs, sc3.Conv, conv1)
		}
		all = append(r.Messages, all...)
		if r.Next == nil {
			break
		}
		q.Conv, q.Before = r.Next.Conv, r.Next.Before
	}
	var texts []string
	for _, m := range all {
		texts = append(texts, m.Text)
	}
	want := []string{"is anyone there?", "hello Vera, how can I help?", "my order is late", "it is me again"}
	if !slices.Equal(texts, want) {
		t.Fatalf("the visitor's whole history = %q, want %q", texts, want)
	}
	_, err = v1.conn.SupportHistory(ctx, protocol.SupportHistoryData{Visitor: v1.name})
	wantCode(t, "supportHistory as a visitor", err, protocol.CodeForbidden)
	_, err = carl.conn.SupportHistory(ctx, protocol.SupportHistoryData{Visitor: v1.name})
	wantCode(t, "supportHistory as a user who is no agent", err, protocol.CodeForbidden)

	// The operator disables ann: what she holds goes back to the queue,
	// and bob (available) takes it.
	c.Admin(t, "agent", "disable", "ann")
	waitPush(t, ann, protocol.PushUnassigned, func(p protocol.UnassignedPush) bool { return p.Conv == sc3.Conv && p.Reason == "disabled" })
	waitPush(t, bob, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc3.Conv && len(p.Messages) == 1 })
	if out := c.Admin(t, "agent", "list"); !containsAll(out, "ann", "bob", "false") {
		t.Fatalf("chat admin agent list = %q", out)
	}

	// What operators see: the leader's state on its admin listener, its
	// metrics, and the figures the status page reads. Assignments so far:
	// from the queue, Vera's first to ann, the second visitor's to ann,
	// Vera's second to bob and again to bob after ann was disabled (4,
	// each with its wait), and bob's transfer to ann (5 in all).
	leader := c.Index(c.WaitLeader(t))
	var snap protocol.SupportSnapshot
	getJSON(t, "http://"+c.Node(leader).AdminAddr+"/support", &snap)
	if len(snap.Held) != 1 || snap.Held[0].Conv != sc3.Conv || snap.Held[0].Agent != "bob" || len(snap.Queue) != 0 {
		t.Fatalf("GET /support = %+v, want %s held by bob and nothing queued", snap, sc3.Conv)
	}
	other := (leader + 1) % c.Len()
	if resp, err := http.Get("http://" + c.Node(other).AdminAddr + "/support"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /support on a follower: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	metrics := getText(t, "http://"+c.Node(leader).AdminAddr+"/metrics")
	for _, want := range []string{"chat_support_assignments_total 5", "chat_support_assigned 1", "chat_support_queue_length 0",
		"chat_support_requeued_total 1", "chat_support_closed_total 2", "chat_support_wait_seconds_count 4"} {
		if !contains(metrics, want+"\n") {
			t.Errorf("leader metrics lack %q", want)
		}
	}
	var cl struct {
		Support *struct {
			Queue, Assigned, AgentsReady, Agents int
			Assignments                          int64
		} `json:"support"`
	}
	waitFor(t, "the support figures in GET /api/cluster", func() error {
		getJSON(t, c.GatewayURL()+"/api/cluster", &cl)
		if cl.Support == nil || cl.Support.Assignments != 4 || cl.Support.Assigned != 1 || cl.Support.Agents != 2 || cl.Support.AgentsReady != 1 {
			return fmt.Errorf("support = %+v", cl.Support)
		}
		return nil
	})
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !contains(s, sub) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestSupportAgentAwayOrGone: an agent that comes back within the grace
// period keeps its conversations; one that does not, or sets itself away,
// has them put back at the front of the queue, and the next agent gets
// every message written meanwhile.
func TestSupportAgentAwayOrGone(t *testing.T) {
	const grace = 6 * time.Second
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: []string{"CHAT_SUPPORT_GRACE=" + grace.String()}})
	c.WaitLeader(t)
	register(t, c, "ann", "bob")
	c.Admin(t, "agent", "add", "ann", "--capacity", "2")
	c.Admin(t, "agent", "add", "bob", "--capacity", "2")
	ctx := ctxT(t, 2*time.Minute)

	ann := agentUp(t, c.Node(1).WSURL, "ann")
	v1, _ := visitor(t, c, c.Node(0).WSURL, "first")
	sc1, err := v1.conn.Support(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitPush(t, ann, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc1.Conv })

	// Back within the grace period: still hers, after the grace period
	// has passed. (What must not happen has no event to wait for: the
	// test watches for one and a half grace periods.)
	ann.conn.Close()
	ann = connect(t, c.Node(0).WSURL, "ann")
	if h := held(t, ann); !slices.Equal(h, []string{sc1.Conv}) {
		t.Fatalf("ann after a quick reconnect holds %v, want %s", h, sc1.Conv)
	}
	time.Sleep(grace * 3 / 2)
	if h := held(t, ann); !slices.Equal(h, []string{sc1.Conv}) {
		t.Fatalf("ann, back within the grace period, holds %v after it, want %s", h, sc1.Conv)
	}
	if q := pushesOf[protocol.QueuePush](v1, protocol.PushQueue); len(q) != 0 {
		t.Fatalf("the visitor was put back in the queue while ann was back: %+v", q)
	}

	// Gone for good: the conversation returns to the front of the queue,
	// ahead of a visitor who came later, and what the visitor writes
	// meanwhile reaches the next agent.
	ann.conn.Close()
	v2, _ := visitor(t, c, c.Node(1).WSURL, "second")
	sc2, err := v2.conn.Support(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v1.conn.ChatConv(ctx, sc1.Conv, "hello? are you there?", "v1-a"); err != nil {
		t.Fatal(err)
	}
	waitPush(t, v1, protocol.PushQueue, func(p protocol.QueuePush) bool { return p.Conv == sc1.Conv && p.Position == 1 })
	waitPush(t, v2, protocol.PushQueue, func(p protocol.QueuePush) bool { return p.Conv == sc2.Conv && p.Position == 2 })
	bob := agentUp(t, c.Node(0).WSURL, "bob")
	first := waitPush(t, bob, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc1.Conv })
	if len(first.Messages) != 1 || first.Messages[0].Text != "hello? are you there?" || !slices.Equal(first.Agents, []string{"ann", "bob"}) {
		t.Fatalf("bob's push = %+v, want the message written while ann was gone, agents ann then bob", first)
	}
	waitPush(t, bob, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == sc2.Conv })

	// Away: both go back, and ann (back, available) takes them.
	ann = agentUp(t, c.Node(1).WSURL, "ann")
	if _, err := bob.conn.AgentStatus(ctx, protocol.AgentAway); err != nil {
		t.Fatal(err)
	}
	for _, conv := range []string{sc1.Conv, sc2.Conv} {
		waitPush(t, bob, protocol.PushUnassigned, func(p protocol.UnassignedPush) bool { return p.Conv == conv && p.Reason == "requeued" })
		waitPush(t, ann, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv == conv })
	}
	if h := held(t, bob); len(h) != 0 {
		t.Fatalf("bob holds %v while away", h)
	}
	if _, err := ann.conn.ChatConv(ctx, sc1.Conv, "I am back, sorry", "a-b"); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, v1, sc1.Conv, "I am back, sorry")
}

// TestSupportRaces is seed 004's races with real processes: many visitors
// asking at once on every node, a visitor asking many times at once, an
// agent dropping while it is being given a conversation, and the leader
// killed with kill -9 holding a queue and assignments. At every step no
// conversation is held by two agents, no agent holds more than its
// capacity, and every conversation asked for is either held or queued.
func TestSupportRaces(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: []string{"CHAT_SUPPORT_GRACE=3s", "CHAT_VISITORS_PER_MINUTE=0"}})
	leader := c.WaitLeader(t)
	li := c.Index(leader)
	// Agents and visitors on the two other nodes, so that their
	// connections outlive the leader.
	var others []int
	for i := range c.Len() {
		if i != li {
			others = append(others, i)
		}
	}
	register(t, c, "ann", "bob", "cid")
	c.Admin(t, "agent", "add", "ann", "--capacity", "2")
	c.Admin(t, "agent", "add", "bob", "--capacity", "3")
	c.Admin(t, "agent", "add", "cid", "--capacity", "1")
	ctx := ctxT(t, 4*time.Minute)
	ann := agentUp(t, c.Node(others[0]).WSURL, "ann")
	bob := agentUp(t, c.Node(others[1]).WSURL, "bob")
	caps := map[string]int{"ann": 2, "bob": 3, "cid": 1}

	// 30 visitors ask at once, ten per node; one of them five times at
	// once.
	const n = 30
	vs := make([]*user, n)
	tokens := make([]string, n)
	for i := range vs {
		vs[i], tokens[i] = visitor(t, c, c.Node(i%c.Len()).WSURL, fmt.Sprintf("v%d", i))
	}
	convOf := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	ask := func(i int) {
		defer wg.Done()
		sc, err := vs[i].conn.Support(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("visitor %d: %w", i, err))
			return
		}
		if convOf[i] != "" && convOf[i] != sc.Conv {
			errs = append(errs, fmt.Errorf("visitor %d opened %s and %s", i, convOf[i], sc.Conv))
		}
		convOf[i] = sc.Conv
	}
	for i := range vs {
		wg.Add(1)
		go ask(i)
	}
	for range 4 {
		wg.Add(1)
		go ask(0)
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs)
	}

	// check asserts the invariants over the agents' own lists and the
	// visitors' view, and returns who holds what.
	agents := map[string]*user{"ann": ann, "bob": bob}
	// noneWith waits until no visitor says it is with agent.
	noneWith := func(agent string) {
		t.Helper()
		waitFor(t, "no conversation with "+agent, func() error {
			for i, v := range vs {
				if convOf[i] == "" {
					continue
				}
				sc, err := v.conn.Support(ctx)
				if err != nil {
					return err
				}
				if sc.Agent == agent {
					return fmt.Errorf("%s is with %s", sc.Conv, agent)
				}
			}
			return nil
		})
	}
	check := func(wantHeld int) map[string]string {
		t.Helper()
		holder := map[string]string{}
		waitFor(t, fmt.Sprintf("%d conversations held", wantHeld), func() error {
			holder = map[string]string{}
			for name, a := range agents {
				r, err := a.conn.SupportConvs(ctx)
				if err != nil {
					return err
				}
				if len(r.Convs) > caps[name] {
					t.Fatalf("%s holds %d, over its capacity %d", name, len(r.Convs), caps[name])
				}
				for _, sc := range r.Convs {
					if other, ok := holder[sc.Conv]; ok {
						t.Fatalf("%s is held by %s and %s", sc.Conv, other, name)
					}
					holder[sc.Conv] = name
				}
			}
			if len(holder) != wantHeld {
				return fmt.Errorf("%d held", len(holder))
			}
			return nil
		})
		// Every conversation asked for is held or queued, and the queued
		// ones have distinct places 1..k.
		places := map[int]string{}
		for i, v := range vs {
			if convOf[i] == "" {
				continue
			}
			sc, err := v.conn.Support(ctx)
			if err != nil {
				t.Fatalf("visitor %d: %v", i, err)
			}
			if sc.Conv != convOf[i] {
				t.Fatalf("visitor %d has %s, asked for %s: a conversation was lost", i, sc.Conv, convOf[i])
			}
			switch sc.State {
			case protocol.SupportAssigned:
				if holder[sc.Conv] != sc.Agent {
					t.Fatalf("%s says it is with %s, the agents say %q", sc.Conv, sc.Agent, holder[sc.Conv])
				}
			case protocol.SupportQueued:
				if _, ok := holder[sc.Conv]; ok {
					t.Fatalf("%s is queued and held by %s", sc.Conv, holder[sc.Conv])
				}
				if other, dup := places[sc.Position]; dup || sc.Position < 1 {
					t.Fatalf("%s and %s share place %d", other, sc.Conv, sc.Position)
				}
				places[sc.Position] = sc.Conv
			default:
				t.Fatalf("visitor %d: state %q", i, sc.State)
			}
		}
		for p := 1; p <= len(places); p++ {
			if places[p] == "" {
				t.Fatalf("queue places %v have a gap at %d", places, p)
			}
		}
		return holder
	}
	check(5)

	// An agent drops while it is being given conversations: cid's
	// request to be available leaves, and its connection is closed right
	// behind it. Whatever it got goes back after the grace period (the
	// others are full, so to the queue); then cid, back and available,
	// takes one.
	cid := connect(t, c.Node(others[0]).WSURL, "cid")
	frame, _ := json.Marshal(map[string]any{"action": protocol.ActionAgentStatus, "id": "drop", "data": protocol.AgentStatusData{Status: protocol.AgentAvailable}})
	if err := cid.conn.WriteRaw(frame); err != nil {
		t.Fatal(err)
	}
	cid.conn.Close()
	// The leader has seen both, the request and the drop, before the
	// visitors are asked: until then nothing may be with cid yet, and
	// asking would prove nothing.
	waitFor(t, "the leader sees cid available and offline", func() error {
		var snap protocol.SupportSnapshot
		getJSON(t, "http://"+c.Node(li).AdminAddr+"/support", &snap)
		for _, a := range snap.Agents {
			if a.Agent == "cid" {
				if a.Status != protocol.AgentAvailable || a.Online {
					return fmt.Errorf("cid is %s, online %v", a.Status, a.Online)
				}
				return nil
			}
		}
		return errors.New("cid is not in the leader's agents")
	})
	noneWith("cid")
	check(5)
	cid = agentUp(t, c.Node(others[1]).WSURL, "cid")
	agents["cid"] = cid
	check(6)

	// The leader is killed with kill -9 holding the queue and the
	// assignments: the new leader carries them on.
	before := check(6)
	c.Kill(li)
	c.WaitLeader(t)
	// The visitors on the killed node come back on another, as their
	// page would.
	for i := range vs {
		if i%c.Len() == li {
			vs[i] = visitorAt(t, c.Node(others[i%2]).WSURL, vs[i].name, tokens[i])
		}
	}
	after := check(6)
	for conv, a := range before {
		if after[conv] != a {
			t.Fatalf("after the leader kill %s is held by %q, was %s", conv, after[conv], a)
		}
	}
	// Closing frees room, which the next in the queue gets, on the new
	// leader.
	var annConv string
	for conv, a := range after {
		if a == "ann" {
			annConv = conv
		}
	}
	if _, err := ann.conn.SupportClose(ctx, annConv); err != nil {
		t.Fatal(err)
	}
	for i := range vs {
		if convOf[i] == annConv {
			convOf[i] = "" // closed: no longer asked for
		}
	}
	waitPush(t, ann, protocol.PushAssigned, func(p protocol.AssignedPush) bool { return p.Conv != annConv && after[p.Conv] == "" })
	check(6)
}
