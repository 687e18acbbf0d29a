package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// TLS on the client listener and on the peer link, with certificates
// made by the test (testenv.CA).

// The nodes serve wss:// when given a certificate: they publish wss://
// URLs, which the gateway hands out as they are; clients trusting the CA
// chat across nodes, while a plain ws:// connection, or one that does
// not trust the CA, fails.
func TestNodesServeWSS(t *testing.T) {
	ca := testenv.NewCA(t, "chat")
	cert, key := ca.Issue(t, "nodes", "127.0.0.1")
	env := append([]string{"CHAT_TLS_CERT_FILE=" + cert, "CHAT_TLS_KEY_FILE=" + key}, fastEnv...)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, SecureWS: true, Env: env})
	c.WaitNodes(t, "n1", "n2")
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "the leader links to every node", func() bool { return linked(t, c) })

	urls := map[string]string{}
	for _, n := range c.Nodes(t).Nodes {
		if !strings.HasPrefix(n.WS, "wss://127.0.0.1:") {
			t.Fatalf("the gateway lists %s at %q, want a wss:// URL", n.ID, n.WS)
		}
		urls[n.ID] = n.WS
	}
	trust := &tls.Config{RootCAs: ca.Pool()}
	register(t, c, "ann", "bob")
	ann := connectTLS(t, urls["n1"], "ann", trust)
	bob := connectTLS(t, urls["n2"], "bob", trust)
	for i := range 20 {
		if _, err := ann.conn.Chat(ctxT(t, 10*time.Second), "bob", text("ann", i), ""); err != nil {
			t.Fatalf("ann chat %d: %v", i, err)
		}
		if _, err := bob.conn.Chat(ctxT(t, 10*time.Second), "ann", text("bob", i), ""); err != nil {
			t.Fatalf("bob chat %d: %v", i, err)
		}
	}
	for _, u := range []*user{ann, bob} {
		testenv.WaitFor(t, 20*time.Second, u.name+" receives 20 messages over wss", func() bool { return len(u.received()) >= 20 })
		checkOrderOnce(t, u.name, u.received())
	}

	plain := "ws://" + strings.TrimPrefix(urls["n1"], "wss://")
	if conn, err := chatclient.Dial(ctxT(t, 10*time.Second), plain, 16); err == nil {
		conn.Close()
		t.Fatalf("a plain ws:// connection to the wss port %s succeeded", plain)
	} else {
		t.Logf("plain ws:// to the wss port: %v", err)
	}
	if conn, err := chatclient.Dial(ctxT(t, 10*time.Second), urls["n1"], 16); err == nil {
		conn.Close()
		t.Fatal("a wss:// connection that does not trust the CA succeeded")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("wss:// without trusting the CA: %v, want a certificate error", err)
	}
}

// With peer TLS every link is mutual TLS with the cluster's CA: the
// cluster chats across nodes as without it. A node whose certificate
// another CA signed, and one with no peer TLS at all, register but never
// link, and both ends of each failed link log why.
func TestPeerMutualTLS(t *testing.T) {
	ca, other := testenv.NewCA(t, "cluster"), testenv.NewCA(t, "other")
	envs := map[string][]string{} // by node id; set before the node starts
	peerEnv := func(signer, trusted *testenv.CA, id string) []string {
		cert, key := signer.Issue(t, id, "127.0.0.1")
		return []string{"CHAT_PEER_TLS_CERT_FILE=" + cert, "CHAT_PEER_TLS_KEY_FILE=" + key, "CHAT_PEER_TLS_CA_FILE=" + trusted.File}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		envs[id] = peerEnv(ca, ca, id)
	}
	envs["n4"] = peerEnv(other, other, "n4")
	envs["n5"] = nil
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv, NodeEnv: func(p *testenv.Proc) []string { return envs[p.ID] }})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "the leader links to every node over mutual TLS", func() bool { return linked(t, c) })
	li := c.Index(leader)
	f0, f1 := (li+1)%3, (li+2)%3

	// Between the two nodes that do not lead: every message goes through
	// the leader, over two TLS links.
	register(t, c, "cy", "dee")
	cy := connect(t, c.Node(f0).WSURL, "cy")
	dee := connect(t, c.Node(f1).WSURL, "dee")
	for i := range 20 {
		if _, err := cy.conn.Chat(ctxT(t, 10*time.Second), "dee", text("cy", i), ""); err != nil {
			t.Fatalf("cy chat %d: %v", i, err)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "dee receives cy's 20 messages", func() bool { return len(dee.received()) >= 20 })
	checkOrderOnce(t, "dee", dee.received())

	for _, tc := range []struct {
		id, leaderSays, nodeSays string
	}{
		{"n4", "presented a certificate the cluster's CA (--peer-tls-ca-file) did not sign", "peer link refused: TLS handshake failed"},
		{"n5", "does not speak TLS on its peer listener", "the dialling node speaks TLS and this peer listener does not"},
	} {
		since := time.Now()
		i := c.AddNode()
		if c.Node(i).ID != tc.id {
			t.Fatalf("the new node is %s, want %s", c.Node(i).ID, tc.id)
		}
		testenv.WaitFor(t, 20*time.Second, "the leader logs why it cannot link to "+tc.id, func() bool {
			return logHas(t, c.Node(li).Log, since, `"peer":"`+tc.id+`"`, "cannot link to node; retrying", tc.leaderSays)
		})
		testenv.WaitFor(t, 20*time.Second, tc.id+" logs why it refused the link", func() bool {
			return logHas(t, c.Node(i).Log, since, tc.nodeSays)
		})
		for _, n := range clusterInfo(t, c).Nodes {
			if n.ID == tc.id && n.Linked {
				t.Fatalf("the leader linked to %s", tc.id)
			}
		}
		if logHas(t, c.Node(i).Log, since, "linked to leader") {
			t.Fatalf("%s linked to the leader", tc.id)
		}
	}
	// The nodes with the cluster's certificates chat on.
	if _, err := dee.conn.Chat(ctxT(t, 10*time.Second), "cy", "still here", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "cy receives dee's message", func() bool {
		for _, m := range cy.received() {
			if m.Text == "still here" && m.Conv == protocol.DMConv("cy", "dee") {
				return true
			}
		}
		return false
	})
}

// logHas reports whether a line of the log file, logged since t0, holds
// every one of parts.
func logHas(t *testing.T, file string, t0 time.Time, parts ...string) bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var e struct {
			Time time.Time `json:"time"`
		}
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e.Time.Before(t0) {
			continue
		}
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
