package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// httpFrom is an HTTP client whose connections leave from the loopback
// address src (127.0.0.1 is the default source; 127.0.0.2 is another
// client address as far as the gateway can tell).
func httpFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// gatewayLogin posts a login and returns the status, the Retry-After
// header and the decoded body.
func gatewayLogin(t *testing.T, hc *http.Client, c *testenv.Cluster, user, pass string) (int, string, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": pass})
	resp, err := hc.Post(c.GatewayURL()+"/api/login", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("login reply: %v", err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), out
}

// wsReply is a reply frame as a node sends it.
type wsReply struct {
	Code  int             `json:"code"`
	Error string          `json:"error"`
	Data  json.RawMessage `json:"data"`
}

// wsLogin logs in with a password on a new connection to the node and
// returns the reply.
func wsLogin(t *testing.T, wsURL, user, pass string) wsReply {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	req, _ := json.Marshal(protocol.Request{Action: protocol.ActionLogin, ID: "1",
		Data: mustJSON(protocol.LoginData{Username: user, Password: pass})})
	if err := ws.WriteMessage(websocket.TextMessage, req); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var r wsReply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("login reply %s: %v", b, err)
	}
	return r
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Wrong passwords at the gateway throttle the account there and on the
// nodes, and the other way round: 429 with Retry-After, the right password
// refused while it waits, accepted after the wait, which resets the count.
// The counters are in Redis under the cluster's prefix, with TTLs.
func TestLoginThrottle(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: append([]string{
		"CHAT_LOGIN_FREE_FAILURES=2", "CHAT_LOGIN_FREE_FAILURES_ADDR=1000",
		"CHAT_LOGIN_BACKOFF=3s", "CHAT_LOGIN_BACKOFF_MAX=3s", "CHAT_LOGIN_FORGET=1m",
	}, fastEnv...)})
	c.WaitLeader(t)
	register(t, c, "tess")
	hc := httpFrom("127.0.0.1")
	ws := c.Node(0).WSURL

	for i := 0; i < 3; i++ { // 2 free failures, then the one that starts the waits
		if code, _, body := gatewayLogin(t, hc, c, "tess", "wrong password"); code != 401 {
			t.Fatalf("wrong password %d: %d %v, want 401", i+1, code, body)
		}
	}
	code, retry, body := gatewayLogin(t, hc, c, "tess", password)
	if n, err := strconv.Atoi(retry); code != 429 || err != nil || n < 1 || n > 3 ||
		!strings.Contains(body["error"].(string), "too many failed logins") {
		t.Fatalf("right password while throttled: %d Retry-After %q %v; want 429, Retry-After 1 to 3", code, retry, body)
	}
	// The node shares the counters: its password login is throttled too.
	r := wsLogin(t, ws, "tess", password)
	var rd protocol.RetryData
	if r.Code != 429 || json.Unmarshal(r.Data, &rd) != nil || rd.RetryAfter < 1 || rd.RetryAfter > 3 || !strings.Contains(r.Error, "too many failed logins") {
		t.Fatalf("node login while throttled: %+v (%s), want 429 with retryAfter 1 to 3", r, r.Data)
	}
	// Waiting on the condition: throttled attempts change nothing, so the
	// first one after the wait goes through.
	testenv.WaitFor(t, 30*time.Second, "the right password works after the wait", func() bool {
		code, _, body := gatewayLogin(t, hc, c, "tess", password)
		if code != 200 && code != 429 {
			t.Fatalf("login after the wait: %d %v", code, body)
		}
		return code == 200
	})

	// The success reset the account: two free failures again, now at the
	// node, then the third makes the gateway refuse.
	for i := 0; i < 3; i++ {
		if r := wsLogin(t, ws, "tess", "wrong password"); r.Code != 401 {
			t.Fatalf("node wrong password %d after the reset: %+v, want 401", i+1, r)
		}
	}
	if code, retry, _ := gatewayLogin(t, hc, c, "tess", password); code != 429 || retry == "" {
		t.Fatalf("gateway login after failures at the node: %d Retry-After %q, want 429", code, retry)
	}

	// Each side logged at WARN, with the username, when the waits began.
	for _, log := range []string{c.Gateway().Log, c.Node(0).Log} {
		if n := throttleWarnings(t, log, "tess"); n != 1 {
			t.Errorf("%s: %d warnings that tess's logins wait, want 1", log, n)
		}
	}

	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	defer rdb.Close()
	ctx := ctxT(t, 10*time.Second)
	keys, err := rdb.Keys(ctx, c.Namespace()+":login-failures:*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("failure counters %v %v, want the account's and 127.0.0.1's", keys, err)
	}
	for _, k := range keys {
		if ttl, err := rdb.PTTL(ctx, k).Result(); err != nil || ttl <= 0 || ttl > 3*time.Second+time.Minute {
			t.Errorf("TTL of %s: %v %v", k, ttl, err)
		}
	}
}

// throttleWarnings counts the WARN lines of the log file that say logins
// of user now wait.
func throttleWarnings(t *testing.T, file, user string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		var e struct{ Level, Message, User, By string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Level == "warn" && e.User == user && e.By == "account" &&
			strings.HasPrefix(e.Message, "too many failed logins") {
			n++
		}
	}
	return n
}

// Failed logins against many names from one address throttle every login
// from it, at the gateway and at the nodes, but not logins from another
// address.
func TestLoginThrottlePerAddress(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: append([]string{
		"CHAT_LOGIN_FREE_FAILURES=100", "CHAT_LOGIN_FREE_FAILURES_ADDR=3",
		"CHAT_LOGIN_BACKOFF=1m", "CHAT_LOGIN_BACKOFF_MAX=1m",
	}, fastEnv...)})
	c.WaitLeader(t)
	register(t, c, "ursula")
	here, there := httpFrom("127.0.0.1"), httpFrom("127.0.0.2")
	ws := c.Node(0).WSURL

	for i, name := range []string{"nobody1", "ursula", "nobody2"} {
		if code, _, _ := gatewayLogin(t, here, c, name, "wrong password"); code != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, code)
		}
	}
	if r := wsLogin(t, ws, "nobody3", "wrong password"); r.Code != 401 {
		t.Fatalf("failure 4 (at the node): %+v", r)
	}
	if code, retry, _ := gatewayLogin(t, here, c, "ursula", password); code != 429 || retry == "" {
		t.Fatalf("the right password from the throttled address: %d Retry-After %q, want 429", code, retry)
	}
	if r := wsLogin(t, ws, "ursula", password); r.Code != 429 {
		t.Fatalf("node login from the throttled address: %+v, want 429", r)
	}
	if code, _, body := gatewayLogin(t, there, c, "ursula", password); code != 200 {
		t.Fatalf("the right password from another address: %d %v, want 200", code, body)
	}
}

// Usernames are unique under their normal form: the lookalikes of a taken
// name are refused, names mixing scripts are invalid, and a user is
// registered under the canonical form, which every spelling logs in to and
// reaches.
func TestLookalikeUsernames(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: fastEnv})
	c.WaitLeader(t)
	post := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(c.GatewayURL()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	creds := func(user string) string {
		return string(mustJSON(map[string]string{"username": user, "password": password}))
	}
	if code, body := post("/api/register", creds("alice")); code != 201 || body["username"] != "alice" {
		t.Fatalf("register alice: %d %v", code, body)
	}
	for _, tc := range []struct {
		name string
		code int
		why  string
	}{
		{"Alice", 409, "taken"},
		{"ALICE", 409, "taken"},
		{"ａｌｉｃｅ", 409, "taken"},   // full-width
		{"аlice", 400, "scripts"}, // Cyrillic а
		{"alicе", 400, "scripts"}, // Cyrillic е
	} {
		if code, body := post("/api/register", creds(tc.name)); code != tc.code || !strings.Contains(body["error"].(string), tc.why) {
			t.Errorf("register %q beside alice: %d %v, want %d (%s)", tc.name, code, body, tc.code, tc.why)
		}
	}
	if code, body := post("/api/register", creds("Bob")); code != 201 || body["username"] != "bob" {
		t.Fatalf("register Bob: %d %v, want 201 as bob", code, body)
	}
	code, body := post("/api/login", creds("BOB"))
	if code != 200 || body["username"] != "bob" {
		t.Fatalf("login as BOB: %d %v, want bob", code, body)
	}
	bobConn, err := dialNode(t, c.Node(0).WSURL)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := bobConn.LoginToken(ctxT(t, 10*time.Second), body["token"].(string)); err != nil || r.Username != "bob" {
		t.Fatalf("token login: %+v %v", r, err)
	}
	alice := connect(t, c.Node(0).WSURL, "Alice") // any spelling logs in
	ack, err := alice.conn.Chat(ctxT(t, 10*time.Second), "Bob", "hi", "")
	if err != nil || ack.Conv != protocol.DMConv("alice", "bob") {
		t.Fatalf("chat to Bob: %+v %v, want conversation %s", ack, err, protocol.DMConv("alice", "bob"))
	}
	var info protocol.UserInfoReply
	if err := alice.conn.Do(ctxT(t, 10*time.Second), protocol.ActionUserInfo, protocol.UserInfoData{Username: "ＢＯＢ"}, &info); err != nil || info.Username != "bob" || !info.Online {
		t.Fatalf("userInfo ＢＯＢ: %+v %v", info, err)
	}
	// Delivered to bob, the user "Bob" stands for.
	select {
	case p := <-bobConn.Pushes():
		var m protocol.Message
		if p.Action != protocol.PushMessage || json.Unmarshal(p.Data, &m) != nil || m.From != "alice" || m.To != "bob" || m.Text != "hi" {
			t.Fatalf("bob got %s %s, want alice's message", p.Action, p.Data)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("bob got no message within 15s")
	}
}
