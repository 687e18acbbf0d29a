package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

const password = "correct horse"

// fastEnv lets test clients send as fast as they can.
var fastEnv = []string{"CHAT_RATE_LIMIT=100000"}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func gw(c *testenv.Cluster) *chatclient.Gateway { return &chatclient.Gateway{URL: c.GatewayURL()} }

func register(t *testing.T, c *testenv.Cluster, users ...string) {
	t.Helper()
	for _, u := range users {
		if err := gw(c).Register(ctxT(t, 10*time.Second), u, password); err != nil {
			t.Fatalf("register %s: %v", u, err)
		}
	}
}

// user is a logged-in test client that records every message pushed to it.
type user struct {
	name string
	conn *chatclient.Conn

	mu       sync.Mutex
	got      []protocol.Message // message pushes, in arrival order
	pushes   []chatclient.Push  // every other push
	stopped  chan struct{}
	readDone chan struct{}
}

func connect(t *testing.T, wsURL, name string) *user {
	t.Helper()
	return connectTLS(t, wsURL, name, nil)
}

// connectTLS is connect with the TLS configuration of a wss:// URL.
func connectTLS(t *testing.T, wsURL, name string, tlsConf *tls.Config) *user {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	conn, err := chatclient.DialTLS(ctx, wsURL, 4096, tlsConf)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	u := &user{name: name, conn: conn, readDone: make(chan struct{})}
	go u.collect()
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Login(ctx, name, password); err != nil {
		t.Fatalf("login %s at %s: %v", name, wsURL, err)
	}
	return u
}

func (u *user) collect() {
	defer close(u.readDone)
	for p := range u.conn.Pushes() {
		u.mu.Lock()
		if p.Action == protocol.PushMessage {
			var m protocol.Message
			if json.Unmarshal(p.Data, &m) == nil {
				u.got = append(u.got, m)
			}
		} else {
			u.pushes = append(u.pushes, p)
		}
		u.mu.Unlock()
	}
}

func (u *user) received() []protocol.Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]protocol.Message(nil), u.got...)
}

func (u *user) otherPushes() []chatclient.Push {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]chatclient.Push(nil), u.pushes...)
}

// checkOrderOnce asserts that msgs of conv arrived each at most once and in
// strictly increasing seq order.
func checkOrderOnce(t *testing.T, who string, msgs []protocol.Message) {
	t.Helper()
	last := map[string]int64{}
	ids := map[string]bool{}
	for _, m := range msgs {
		if ids[m.ID] {
			t.Fatalf("%s received message %s (seq %d) twice", who, m.ID, m.Seq)
		}
		ids[m.ID] = true
		if m.Seq <= last[m.Conv] {
			t.Fatalf("%s received %s seq %d after seq %d: out of order", who, m.Conv, m.Seq, last[m.Conv])
		}
		last[m.Conv] = m.Seq
	}
}

// allHistory pages backwards through a conversation and returns it oldest
// first.
func allHistory(t *testing.T, u *user, conv string) []protocol.Message {
	t.Helper()
	var all []protocol.Message
	before := int64(0)
	for {
		page, err := u.conn.History(ctxT(t, 10*time.Second), protocol.HistoryData{Conv: conv, Before: before, Limit: 100})
		if err != nil {
			t.Fatalf("history %s before %d: %v", conv, before, err)
		}
		if len(page) == 0 {
			break
		}
		all = append(page, all...)
		before = page[0].Seq
		if before == 1 {
			break
		}
	}
	return all
}

func text(from string, i int) string { return fmt.Sprintf("%s says %d", from, i) }

func dialNode(t *testing.T, wsURL string) (*chatclient.Conn, error) {
	conn, err := chatclient.Dial(ctxT(t, 5*time.Second), wsURL, 1024)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, err
}

// clusterInfo reads GET /api/cluster.
func clusterInfo(t *testing.T, c *testenv.Cluster) clusterView {
	t.Helper()
	var v clusterView
	resp, err := http.Get(c.GatewayURL() + "/api/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

type clusterView struct {
	Leader string `json:"leader"`
	Epoch  int64  `json:"epoch"`
	Nodes  []struct {
		ID          string `json:"id"`
		Connections int    `json:"connections"`
		Linked      bool   `json:"linked"`
		Messages    int64  `json:"messages"`
	} `json:"nodes"`
	Backlog int64 `json:"historyBacklog"`
}

// linked reports whether the leader holds a peer link to every live node.
func linked(t *testing.T, c *testenv.Cluster) bool {
	v := clusterInfo(t, c)
	if v.Leader == "" || len(v.Nodes) == 0 {
		return false
	}
	for _, n := range v.Nodes {
		if !n.Linked {
			return false
		}
	}
	return true
}
