package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/internal/testenv"
)

// TestClientThatStopsReadingIsDisconnected: a client that logs in and then
// reads nothing while messages keep coming is disconnected as too slow
// (close code 1008), and the sender is not held back meanwhile.
func TestClientThatStopsReadingIsDisconnected(t *testing.T) {
	env := append([]string{"CHAT_SEND_QUEUE=16", "CHAT_SLOW_CLIENT_TIMEOUT=1s"}, fastEnv...)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: env})
	c.WaitLeader(t)
	register(t, c, "sloth", "flood")
	flood := connect(t, c.Node(0).WSURL, "flood")

	ws, _, err := websocket.DefaultDialer.DialContext(ctxT(t, 10*time.Second), c.Node(0).WSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	login := fmt.Sprintf(`{"action":"login","id":"1","data":{"username":"sloth","password":%q}}`, password)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(login)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), `"code":0`) {
		t.Fatalf("login reply %s, %v", b, err)
	}
	// From here sloth reads nothing. flood sends until the node gives up
	// on sloth: the socket buffers fill, then sloth's queue stays over
	// its bound. Bounded by the node's metric and by 2 minutes.
	body := strings.Repeat("z", 4000)
	sent := 0
	deadline := time.Now().Add(2 * time.Minute)
	for slowDisconnects(t, c) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a client that reads nothing was not disconnected after %d messages", sent)
		}
		if _, err := flood.conn.Chat(ctxT(t, 10*time.Second), "sloth", fmt.Sprintf("%d %s", sent, body), ""); err != nil {
			t.Fatalf("the sender was refused after %d messages while the recipient did not read: %v", sent, err)
		}
		sent++
	}
	t.Logf("sloth disconnected as too slow after %d messages of 4 kB", sent)

	// Reading again, sloth finds what the socket held, then the close.
	_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("closed with %d %q, want 1008", ce.Code, ce.Text)
		}
		break // a 1008 close, or the connection dropped under it
	}
	// The sender goes on.
	if _, err := flood.conn.Chat(ctxT(t, 10*time.Second), "sloth", "still here?", ""); err != nil {
		t.Fatalf("send after the recipient was disconnected: %v", err)
	}
}

// slowDisconnects reads chat_client_slow_disconnects_total of node 0.
func slowDisconnects(t *testing.T, c *testenv.Cluster) float64 {
	t.Helper()
	v, _ := scrape(t, "http://"+c.Node(0).AdminAddr+"/metrics").value("chat_client_slow_disconnects_total")
	return v
}
