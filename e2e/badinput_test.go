package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Every bad input gets its documented code and leaves the node and the
// other connections healthy.
func TestBadInput(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: fastEnv})
	c.WaitLeader(t)
	register(t, c, "lee", "max", "lou")
	ws := c.Node(0).WSURL
	bystander := connect(t, ws, "max")

	anon, err := dialNode(t, ws)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		frame string
		code  int
	}{
		{"malformed JSON", `{"action": "ping", "id": "1"`, 400},
		{"not an object", `["ping", "1"]`, 400},
		{"unknown action", `{"action": "fly", "id": "1"}`, 400},
		{"action not a string", `{"action": 7, "id": "1"}`, 400},
		{"no action", `{"id": "1"}`, 400},
		{"data not an object", `{"action": "login", "id": "1", "data": "x"}`, 400},
		{"chat before login", `{"action": "chat", "id": "1", "data": {"to": "max", "text": "hi"}}`, 401},
		{"history before login", `{"action": "history", "id": "1", "data": {"with": "max"}}`, 401},
		{"sync before login", `{"action": "sync", "id": "1", "data": {}}`, 401},
		{"userInfo before login", `{"action": "userInfo", "id": "1", "data": {"username": "max"}}`, 401},
		{"ping before login", `{"action": "ping", "id": "1"}`, 401},
		{"peer action on client port", `{"action": "route", "id": "1", "data": {}}`, 403},
		{"peer hello on client port", `{"action": "hello", "id": "1", "data": {}}`, 403},
		{"login without fields", `{"action": "login", "id": "1", "data": {}}`, 400},
		{"login wrong-typed", `{"action": "login", "id": "1", "data": {"username": 5, "password": "x"}}`, 400},
		{"wrong password", `{"action": "login", "id": "1", "data": {"username": "lee", "password": "wrong pass"}}`, 401},
		{"unknown user login", `{"action": "login", "id": "1", "data": {"username": "nobody", "password": "whatever"}}`, 401},
		{"bad token", `{"action": "login", "id": "1", "data": {"token": "deadbeef"}}`, 401},
		{"data after the request", `{"action": "login", "id": "1", "data": {"username": "lee", "password": "` + password + `"}}{"x":1}`, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A frame whose id cannot be read is answered with no id.
			id := "1"
			if !json.Valid([]byte(tc.frame)) || tc.frame[0] != '{' {
				id = ""
			}
			_, err := anon.RawRequest(ctxT(t, 10*time.Second), id, []byte(tc.frame))
			if got := chatclient.Code(err); got != tc.code {
				t.Fatalf("code %d (%v), want %d", got, err, tc.code)
			}
		})
	}

	lee := connect(t, ws, "lee")
	loggedIn := []struct {
		name string
		data any
		act  string
		code int
	}{
		{"chat to unknown user", map[string]any{"to": "nobody", "text": "hi"}, "chat", 404},
		{"chat without text", map[string]any{"to": "max"}, "chat", 400},
		{"chat text wrong type", map[string]any{"to": "max", "text": 12}, "chat", 400},
		{"chat to and room", map[string]any{"to": "max", "room": "r", "text": "hi"}, "chat", 400},
		{"chat invalid name", map[string]any{"to": "a:b", "text": "hi"}, "chat", 400},
		{"chat text too large", map[string]any{"to": "max", "text": strings.Repeat("x", protocol.MaxTextBytes+1)}, "chat", 413},
		{"chat unknown room", map[string]any{"room": "nowhere", "text": "hi"}, "chat", 404},
		{"history of others", map[string]any{"conv": protocol.DMConv("max", "nobody")}, "history", 403},
		{"history with unknown user", map[string]any{"with": "nobody"}, "history", 404},
		{"history bad conv", map[string]any{"conv": "xyz"}, "history", 400},
		{"history limit too big", map[string]any{"with": "max", "limit": 101}, "history", 400},
		{"history two selectors", map[string]any{"with": "max", "conv": "dm:lee:max"}, "history", 400},
		{"sync bad conv", map[string]any{"convs": map[string]int64{"nope": 1}}, "sync", 400},
		{"sync others", map[string]any{"convs": map[string]int64{protocol.DMConv("max", "nobody"): 0}}, "sync", 403},
		{"userInfo unknown", map[string]any{"username": "nobody"}, "userInfo", 404},
		{"second login", map[string]any{"username": "lee", "password": password}, "login", 400},
	}
	for _, tc := range loggedIn {
		t.Run(tc.name, func(t *testing.T) {
			err := lee.conn.Do(ctxT(t, 10*time.Second), tc.act, tc.data, nil)
			if got := chatclient.Code(err); got != tc.code {
				t.Fatalf("code %d (%v), want %d", got, err, tc.code)
			}
		})
	}

	// A frame over the read limit closes that connection with 1009 ...
	big, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	payload := append([]byte(`{"action":"ping","id":"1","data":{"x":"`), bytes.Repeat([]byte("x"), protocol.MaxFrameSize)...)
	payload = append(payload, `"}}`...)
	_ = big.WriteMessage(websocket.TextMessage, payload)
	_ = big.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = big.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("oversized frame: got %v, want close 1009", err)
	}

	// ... and everyone else is still served: the anonymous connection can
	// still log in, the others still answer.
	if _, err := anon.Login(ctxT(t, 5*time.Second), "lou", password); err != nil {
		t.Fatalf("login after bad input: %v", err)
	}
	for _, conn := range []*chatclient.Conn{lee.conn, bystander.conn} {
		if err := conn.Do(ctxT(t, 5*time.Second), protocol.ActionPing, struct{}{}, nil); err != nil {
			t.Fatalf("ping after bad input: %v", err)
		}
	}
	if _, err := lee.conn.Chat(ctxT(t, 5*time.Second), "max", "still here", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "bystander still receives", func() bool { return len(bystander.received()) == 1 })

	// The peer listener refuses anyone without the cluster secret.
	resp, err := http.Get("http://" + c.Node(0).PeerAddr + "/peer")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated peer request: %d, want 401", resp.StatusCode)
	}
	// And the client port has no peer endpoint.
	resp, err = http.Get(strings.TrimSuffix(strings.Replace(ws, "ws://", "http://", 1), "/ws") + "/peer")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("peer path on the client port: %d, want 404", resp.StatusCode)
	}
}

// The gateway API answers as documented.
func TestGatewayAPI(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: fastEnv})
	c.WaitLeader(t)
	g := gw(c)
	ctx := ctxT(t, 30*time.Second)
	status := func(err error) int {
		var he *chatclient.HTTPError
		if errors.As(err, &he) {
			return he.Status
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	if err := g.Register(ctx, "nina", password); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, user, pass string
		want             int
	}{
		{"taken", "nina", password, 409},
		{"bad name", "no spaces", password, 400},
		{"short password", "olga", "123", 400},
		{"empty", "", "", 400},
	} {
		if got := status(g.Register(ctx, tc.user, tc.pass)); got != tc.want {
			t.Errorf("register %s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if _, _, err := g.Login(ctx, "nina", "wrong password"); status(err) != 401 {
		t.Errorf("login with wrong password: %v, want 401", err)
	}
	resp, err := http.Post(c.GatewayURL()+"/api/login", "application/json", strings.NewReader(`{"username":`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("malformed login body: %d, want 400", resp.StatusCode)
	}
	// One JSON object and nothing after it, at both endpoints.
	for _, path := range []string{"/api/login", "/api/register"} {
		for _, body := range []string{
			`{"username":"nina","password":"` + password + `"}{"x":1}`,
			`{"username":"nina","password":"` + password + `"} x`,
		} {
			resp, err := http.Post(c.GatewayURL()+path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Error string }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(e.Error, "body must be a JSON object") {
				t.Errorf("POST %s %s: %d %q, want 400", path, body, resp.StatusCode, e.Error)
			}
		}
		resp, err := http.Post(c.GatewayURL()+path, "application/json", strings.NewReader(`{"username":"nina","password":"`+password+`"}`+" \n\t"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[string]int{"/api/login": 200, "/api/register": 409}[path]; resp.StatusCode != want {
			t.Errorf("POST %s with white space after the object: %d, want %d", path, resp.StatusCode, want)
		}
	}
	n, err := g.Nodes(ctx)
	if err != nil || len(n.Nodes) != 1 || n.Leader != c.Node(0).ID || n.Nodes[0].WS != c.Node(0).WSURL {
		t.Fatalf("nodes: %+v, %v", n, err)
	}
	for _, path := range []string{"/healthz", "/api/cluster", "/"} {
		resp, err := http.Get(c.GatewayURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	// With no node live, /api/nodes says 503.
	c.Kill(0)
	testenv.WaitFor(t, 10*time.Second, "no node live gives 503", func() bool {
		_, err := g.Nodes(ctxT(t, time.Second))
		var he *chatclient.HTTPError
		return errors.As(err, &he) && he.Status == 503
	})
}
