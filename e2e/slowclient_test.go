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

// TestLargeSyncWithLiveTrafficKeepsClient: a client that comes back to a
// large backlog and syncs it while new messages keep arriving live gets
// more frames than its send queue's bound (2 here) at once, and keeps its
// connection: it reads what it is sent.
func TestLargeSyncWithLiveTrafficKeepsClient(t *testing.T) {
	env := append([]string{"CHAT_SEND_QUEUE=2"}, fastEnv...)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: env})
	c.WaitLeader(t)
	register(t, c, "away", "busy")
	busy := connect(t, c.Node(0).WSURL, "busy")
	const backlog, live = 2000, 300
	for i := range backlog {
		if _, err := busy.conn.Chat(ctxT(t, 10*time.Second), "away", text("busy", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	away := connect(t, c.Node(0).WSURL, "away")
	done := make(chan error, 1)
	go func() {
		for i := backlog; i < backlog+live; i++ {
			if _, err := busy.conn.Chat(ctxT(t, 10*time.Second), "away", text("busy", i), ""); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	conv := "dm:away:busy"
	got, err := away.conn.SyncAll(ctxT(t, time.Minute), map[string]int64{conv: 0})
	if err != nil {
		t.Fatalf("sync of the backlog: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	for _, m := range got[conv].Messages {
		have[m.Seq] = true
	}
	testenv.WaitFor(t, 30*time.Second, "away holds every message, by sync or live", func() bool {
		for _, m := range away.received() {
			have[m.Seq] = true
		}
		return len(have) == backlog+live
	})
	checkOrderOnce(t, "away (live)", away.received())
	select {
	case <-away.conn.Done():
		t.Fatal("away was disconnected")
	default:
	}
	if n := slowDisconnects(t, c); n != 0 {
		t.Fatalf("%v clients disconnected as too slow", n)
	}
	t.Logf("synced %d, received %d live, connection kept", len(got[conv].Messages), len(away.received()))
}
