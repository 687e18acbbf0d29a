package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

const apiKey = "e2e-key-Zt3m9L0bVQ2hR6pX8yK4wN1c"

// api calls the server API of the cluster's gateway with key and decodes
// the answer into out (if not nil). It returns the status and the error
// of an error answer.
func api(t *testing.T, c *testenv.Cluster, key, method, path string, body, out any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctxT(t, 20*time.Second), method, c.GatewayURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: answer %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, e.Error
}

// apiOK is api for a call that must succeed with status want.
func apiOK(t *testing.T, c *testenv.Cluster, want int, method, path string, body, out any) {
	t.Helper()
	if status, msg := api(t, c, apiKey, method, path, body, out); status != want {
		t.Fatalf("%s %s: %d %q, want %d", method, path, status, msg, want)
	}
}

// The server API against a real cluster of two nodes: a bot publishes to
// a user on the node the call does not run on (pushed, in history) and to
// a room; users are listed online and disconnected with a reason; rooms
// are created, listed and deleted; keys are checked; and without a live
// node the API says so.
func TestServerAPI(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "api.keys")
	if err := os.WriteFile(keys, []byte("# e2e\ne2e-bot "+apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: append(fastEnv, "CHAT_GATEWAY_API_KEYS_FILE="+keys)})
	lead := c.WaitLeader(t)
	testenv.WaitFor(t, 20*time.Second, "the leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "newsbot", "alice", "bob")

	// Calls go to the leader first: bob is on the other node.
	li := c.Index(lead)
	other := 1 - li
	alice := connect(t, c.Node(li).WSURL, "alice")
	bob := connect(t, c.Node(other).WSURL, "bob")

	// Keys.
	if status, msg := api(t, c, "", http.MethodGet, "/api/server/online", nil, nil); status != http.StatusUnauthorized || !strings.Contains(msg, "missing API key") {
		t.Fatalf("no key: %d %q", status, msg)
	}
	if status, msg := api(t, c, apiKey+"x", http.MethodPost, "/api/server/messages", protocol.ServerMessage{From: "newsbot", To: "bob", Text: "x"}, nil); status != http.StatusUnauthorized || msg != "wrong API key" {
		t.Fatalf("wrong key: %d %q", status, msg)
	}

	// A direct message from the bot to bob, on the other node.
	var sent protocol.ChatReply
	apiOK(t, c, http.StatusOK, http.MethodPost, "/api/server/messages",
		protocol.ServerMessage{From: "newsbot", To: "bob", Text: "the news at six", ClientMsgID: "news-1"}, &sent)
	if sent.Conv != protocol.DMConv("bob", "newsbot") || sent.Seq != 1 || sent.ID == "" {
		t.Fatalf("publish answered %+v", sent)
	}
	testenv.WaitFor(t, 10*time.Second, "bob gets the bot's message", func() bool {
		for _, m := range bob.received() {
			if m.ID == sent.ID && m.From == "newsbot" && m.Text == "the news at six" && m.Seq == 1 {
				return true
			}
		}
		return false
	})
	// The same clientMsgId again: the first message, stored once.
	var again protocol.ChatReply
	apiOK(t, c, http.StatusOK, http.MethodPost, "/api/server/messages",
		protocol.ServerMessage{From: "newsbot", To: "bob", Text: "the news at six", ClientMsgID: "news-1"}, &again)
	if again != sent {
		t.Fatalf("resend answered %+v, want %+v", again, sent)
	}
	hist, err := bob.conn.History(ctxT(t, 10*time.Second), protocol.HistoryData{With: "newsbot"})
	if err != nil || len(hist) != 1 || hist[0].ID != sent.ID || hist[0].Text != "the news at six" {
		t.Fatalf("bob's history with newsbot: %+v, %v", hist, err)
	}
	sync, err := bob.conn.Sync(ctxT(t, 10*time.Second), nil)
	if err != nil || sync.Convs[sent.Conv].Latest != 1 {
		t.Fatalf("bob's sync: %+v, %v", sync, err)
	}
	for _, tc := range []struct {
		msg    protocol.ServerMessage
		status int
		want   string
	}{
		{protocol.ServerMessage{From: "nobody", To: "bob", Text: "x"}, http.StatusNotFound, `no user "nobody"`},
		{protocol.ServerMessage{From: "newsbot", To: "nobody", Text: "x"}, http.StatusNotFound, "unknown user"},
		{protocol.ServerMessage{From: "newsbot", To: "bob"}, http.StatusBadRequest, "text is empty"},
		{protocol.ServerMessage{From: "newsbot", Room: "nowhere", Text: "x"}, http.StatusNotFound, `unknown room "nowhere"`},
	} {
		if status, msg := api(t, c, apiKey, http.MethodPost, "/api/server/messages", tc.msg, nil); status != tc.status || !strings.Contains(msg, tc.want) {
			t.Errorf("publish %+v: %d %q, want %d %q", tc.msg, status, msg, tc.status, tc.want)
		}
	}

	// A room made by the API with alice and bob; the bot posts to it and
	// becomes a member.
	var created protocol.RoomReply
	apiOK(t, c, http.StatusCreated, http.MethodPost, "/api/server/rooms", map[string]any{"room": "news", "members": []string{"bob", "alice"}}, &created)
	if created.Room != "news" || !slices.Equal(created.Members, []string{"alice", "bob"}) {
		t.Fatalf("create answered %+v", created)
	}
	if status, msg := api(t, c, apiKey, http.MethodPost, "/api/server/rooms", map[string]any{"room": "news"}, nil); status != http.StatusConflict {
		t.Fatalf("creating news again: %d %q", status, msg)
	}
	var posted protocol.ChatReply
	apiOK(t, c, http.StatusOK, http.MethodPost, "/api/server/messages", protocol.ServerMessage{From: "newsbot", Room: "news", Text: "breaking"}, &posted)
	for _, u := range []*user{alice, bob} {
		testenv.WaitFor(t, 10*time.Second, u.name+" gets the bot's room message", func() bool {
			got := u.roomMsgs("news")
			return len(got) == 1 && got[0].ID == posted.ID && got[0].From == "newsbot" && got[0].Text == "breaking"
		})
	}
	// The room's conversation: the joins of its members, as created, and
	// of the bot, then the bot's message.
	hist, err = alice.conn.History(ctxT(t, 10*time.Second), protocol.HistoryData{Room: "news"})
	if err != nil || len(hist) != 4 || hist[3].ID != posted.ID {
		t.Fatalf("alice's history of news: %+v, %v", hist, err)
	}
	for i, who := range []string{"alice", "bob", "newsbot"} {
		if hist[i].Kind != protocol.KindJoin || hist[i].From != who {
			t.Fatalf("entry %d of news is %+v, want the join of %s", i, hist[i], who)
		}
	}
	// (The leader may hear of a login a moment after its reply, so the
	// lists are waited for.)
	var members protocol.ServerMembersReply
	testenv.WaitFor(t, 10*time.Second, "news has alice, bob and newsbot, alice and bob online", func() bool {
		apiOK(t, c, http.StatusOK, http.MethodGet, "/api/server/rooms/news/members", nil, &members)
		return slices.Equal(members.Members, []string{"alice", "bob", "newsbot"}) && slices.Equal(members.Online, []string{"alice", "bob"})
	})

	// Online users, a page of one at a time.
	var names, nodes []string
	testenv.WaitFor(t, 10*time.Second, "alice online on the leader and bob on the other node", func() bool {
		names, nodes = nil, nil
		for after, pages := "", 0; ; pages++ {
			if pages > 5 {
				t.Fatalf("online pages do not end: %v", names)
			}
			var page protocol.ServerOnlineReply
			apiOK(t, c, http.StatusOK, http.MethodGet, "/api/server/online?limit=1&after="+after, nil, &page)
			for _, u := range page.Users {
				names, nodes = append(names, u.Username), append(nodes, u.Node)
			}
			if page.Next == "" {
				break
			}
			after = page.Next
		}
		return slices.Equal(names, []string{"alice", "bob"}) && slices.Equal(nodes, []string{lead, c.Node(other).ID})
	})

	// bob is disconnected with a reason.
	var gone protocol.ServerDisconnectReply
	apiOK(t, c, http.StatusOK, http.MethodPost, "/api/server/users/bob/disconnect", map[string]string{"reason": "spamming the lobby"}, &gone)
	if gone != (protocol.ServerDisconnectReply{Username: "bob", Online: true}) {
		t.Fatalf("disconnect answered %+v", gone)
	}
	select {
	case <-bob.readDone:
	case <-time.After(10 * time.Second):
		t.Fatal("bob's connection is still open after the disconnect")
	}
	if kicked := pushesOf[protocol.KickedPush](bob, protocol.PushKicked); len(kicked) != 1 || kicked[0].Reason != "spamming the lobby" {
		t.Fatalf("bob's kicked pushes: %+v", kicked)
	}
	testenv.WaitFor(t, 10*time.Second, "the online list without bob", func() bool {
		var page protocol.ServerOnlineReply
		apiOK(t, c, http.StatusOK, http.MethodGet, "/api/server/online", nil, &page)
		return len(page.Users) == 1 && page.Users[0].Username == "alice"
	})
	if status, msg := api(t, c, apiKey, http.MethodPost, "/api/server/users/nobody/disconnect", nil, nil); status != http.StatusNotFound || msg != `unknown user "nobody"` {
		t.Fatalf("disconnect of an unknown user: %d %q", status, msg)
	}

	// The room is deleted: alice is told, can no longer post, join, read
	// or sync it, and its name is not given again.
	var deleted protocol.RoomReply
	apiOK(t, c, http.StatusOK, http.MethodDelete, "/api/server/rooms/news?reason=the+news+moved", nil, &deleted)
	if !slices.Equal(deleted.Members, []string{"alice", "bob", "newsbot"}) {
		t.Fatalf("delete answered %+v", deleted)
	}
	testenv.WaitFor(t, 10*time.Second, "alice is told news was deleted", func() bool {
		for _, rd := range pushesOf[protocol.RoomDeletedPush](alice, protocol.PushRoomDeleted) {
			if rd.Room == "news" && rd.Reason == "the news moved" {
				return true
			}
		}
		return false
	})
	ctx := ctxT(t, 10*time.Second)
	if _, err := alice.conn.ChatRoom(ctx, "news", "hello?", ""); chatclient.Code(err) != protocol.CodeNotFound || !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("alice posts to the deleted room: %v", err)
	}
	if _, err := alice.conn.JoinRoom(ctx, "news"); chatclient.Code(err) != protocol.CodeNotFound {
		t.Fatalf("alice joins the deleted room: %v", err)
	}
	if _, err := alice.conn.History(ctx, protocol.HistoryData{Room: "news"}); chatclient.Code(err) != protocol.CodeForbidden {
		t.Fatalf("alice reads the deleted room's history: %v", err)
	}
	sync, err = alice.conn.Sync(ctx, nil)
	if _, listed := sync.Convs[protocol.RoomConv("news")]; err != nil || listed {
		t.Fatalf("alice's sync after the delete: %+v, %v", sync, err)
	}
	if rooms, err := alice.conn.Rooms(ctx); err != nil || slices.ContainsFunc(rooms, func(r protocol.RoomInfo) bool { return r.Name == "news" }) {
		t.Fatalf("rooms after the delete: %+v, %v", rooms, err)
	}
	if status, msg := api(t, c, apiKey, http.MethodPost, "/api/server/messages", protocol.ServerMessage{From: "newsbot", Room: "news", Text: "x"}, nil); status != http.StatusNotFound || !strings.Contains(msg, "was deleted") {
		t.Fatalf("the bot posts to the deleted room: %d %q", status, msg)
	}
	if status, msg := api(t, c, apiKey, http.MethodGet, "/api/server/rooms/news/members", nil, nil); status != http.StatusNotFound {
		t.Fatalf("members of the deleted room: %d %q", status, msg)
	}
	if status, msg := api(t, c, apiKey, http.MethodPost, "/api/server/rooms", map[string]any{"room": "news"}, nil); status != http.StatusConflict || !strings.Contains(msg, "cannot be used again") {
		t.Fatalf("creating the deleted room again: %d %q", status, msg)
	}

	// A new leader knows the room was deleted.
	c.Kill(li)
	testenv.WaitFor(t, 30*time.Second, "the other node leads", func() bool {
		r := c.Nodes(t)
		return r.Status == http.StatusOK && r.Leader == c.Node(other).ID
	})
	testenv.WaitFor(t, 20*time.Second, "the new leader refuses the deleted room's name", func() bool {
		status, _ := api(t, c, apiKey, http.MethodPost, "/api/server/rooms", map[string]any{"room": "news"}, nil)
		return status == http.StatusConflict
	})

	// Without a live node, the API says so.
	c.Kill(other)
	testenv.WaitFor(t, 30*time.Second, "the API answers 503 without a live node", func() bool {
		status, msg := api(t, c, apiKey, http.MethodGet, "/api/server/online", nil, nil)
		return status == http.StatusServiceUnavailable && msg == "no chat node is live"
	})
}
