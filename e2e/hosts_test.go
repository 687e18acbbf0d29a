package e2e

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
)

// TestNodesOnSeveralHosts: three nodes, each in a network namespace of
// its own with an address of its own (testenv.StartHosts), bind every
// address and publish the one they are reached at. Users on all three
// chat across nodes. Then one namespace, of a node that does not lead, is
// cut off by a firewall rule: the gateway stops listing its node, its
// users notice (their pings go unanswered), reconnect to a node the
// gateway lists and sync, and every acknowledged message is held exactly
// once by both sides of its conversation. When the rule is removed the
// node rejoins: the gateway lists it again, the leader links to it, and
// new users on it chat across nodes, while the users who moved away keep
// their new connections.
func TestNodesOnSeveralHosts(t *testing.T) {
	hosts := testenv.StartHosts(t, 3)
	// ZooKeeper, Redis and the store run on loopback; the namespaces
	// reach them through proxies on the bridge, the gateway too.
	zk := hosts.Reach(t, testenv.ZK(t)[0])
	rds := hosts.Reach(t, testenv.Redis(t))
	mu, err := url.Parse(testenv.Mongo(t))
	if err != nil {
		t.Fatal(err)
	}
	mu.Host = hosts.Reach(t, mu.Host)
	mongo := mu.String()
	c := testenv.StartCluster(t, testenv.Options{
		Nodes: 3, ZK: []string{zk}, Redis: rds, Mongo: mongo, Env: fastEnv,
		Host: func(i int) testenv.NodeHost {
			return testenv.NodeHost{Exec: hosts.Exec(i), Bind: "0.0.0.0", Addr: hosts.Addr(i)}
		},
	})
	c.WaitNodes(t, "n1", "n2", "n3")
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 20*time.Second, "the leader links to every node across namespaces", func() bool { return linked(t, c) })
	for _, n := range c.Nodes(t).Nodes {
		i := c.Index(n.ID)
		if want := "ws://" + hosts.Addr(i) + ":"; !strings.HasPrefix(n.WS, want) {
			t.Fatalf("the gateway lists %s at %q, want the address of its namespace (%s...)", n.ID, n.WS, want)
		}
	}
	li := c.Index(leader)
	x := (li + 1) % 3 // the node cut off
	o := (li + 2) % 3 // the other node that does not lead
	cutID := c.Node(x).ID
	t.Logf("leader %s; %s (in %s at %s) is cut off later", leader, cutID, hosts.Name(x), hosts.Addr(x))

	l := newLedger()
	parties, flows := pairUp(t, c, []pairSpec{
		{"ann", x, "bob", li}, {"cy", o, "dee", x}, {"eve", li, "fay", o},
	})
	tr := startTraffic(t, l, flows, 20*time.Millisecond)
	waitLiveCount(t, flows, 10)
	t.Logf("cross-node chat between the three namespaces: %d messages acknowledged", l.total())

	// The users on the node to cut ping it, as a client app does, and
	// close their connection when a ping goes unanswered.
	stopPings := make(chan struct{})
	t.Cleanup(func() { close(stopPings) })
	var onCut []*party
	for _, p := range parties {
		if p.node == x {
			onCut = append(onCut, p)
			go p.conn().Keepalive(stopPings, 300*time.Millisecond, time.Second)
		}
	}

	cut := time.Now()
	hosts.Cut(x)
	var others []string
	for i := range 3 {
		if i != x {
			others = append(others, c.Node(i).ID)
		}
	}
	c.WaitNodes(t, others...)
	t.Logf("the gateway stopped listing %s %s after the cut", cutID, time.Since(cut).Round(time.Millisecond))
	for _, p := range onCut {
		testenv.WaitFor(t, 20*time.Second, p.name+" notices its node is unreachable", func() bool {
			select {
			case <-p.conn().Done():
				return true
			default:
				return false
			}
		})
		token, nodes, err := gw(c).Login(ctxT(t, 10*time.Second), p.name, password)
		if err != nil {
			t.Fatalf("%s: gateway login: %v", p.name, err)
		}
		if len(nodes) == 0 || slices.ContainsFunc(nodes, func(n chatclient.NodeInfo) bool { return n.ID == cutID }) {
			t.Fatalf("%s: the gateway hands out %v after %s was cut off", p.name, nodes, cutID)
		}
		p.reconnectWithToken(t, nodes[0].WS, token)
		p.node = c.Index(nodes[0].ID)
		p.catchUp(t)
		t.Logf("%s moved to %s %s after the cut", p.name, nodes[0].ID, time.Since(cut).Round(time.Millisecond))
	}
	moved := time.Now()
	for _, f := range flows {
		testenv.WaitFor(t, 30*time.Second, "traffic of "+f.conv+" goes on while "+cutID+" is cut off", func() bool {
			return l.ackedSinceConv(f.conv, moved) >= 20
		})
	}

	heal := time.Now()
	hosts.Heal(x)
	c.WaitNodes(t, "n1", "n2", "n3")
	testenv.WaitFor(t, 30*time.Second, "the leader links to "+cutID+" again", func() bool { return linked(t, c) })
	t.Logf("%s listed and linked again %s after the rule was removed", cutID, time.Since(heal).Round(time.Millisecond))
	if lead := c.WaitLeader(t); lead != leader {
		t.Logf("the leader is now %s (was %s)", lead, leader)
	}
	// New users on the node that rejoined chat with users elsewhere.
	newParties, newFlows := pairUp(t, c, []pairSpec{{"gus", x, "hal", li}, {"ivy", o, "jo", x}})
	parties = append(parties, newParties...)
	tr2 := startTraffic(t, l, newFlows, 20*time.Millisecond)
	waitLiveCount(t, newFlows, 10)
	healed := time.Now()
	for _, f := range flows {
		testenv.WaitFor(t, 30*time.Second, "traffic of "+f.conv+" goes on after "+cutID+" rejoined", func() bool {
			return l.ackedSinceConv(f.conv, healed) >= 20
		})
	}
	tr.Stop()
	tr2.Stop()

	// The users who moved were not sent back, nor kicked, by the node that
	// rejoined: each still holds the connection it moved to.
	for _, p := range parties {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		want := 1
		if slices.Contains(onCut, p) {
			want = 2
		}
		select {
		case <-p.conn().Done():
			t.Fatalf("%s's connection to %s ended: %v", p.name, c.Node(p.node).ID, p.conn().Err())
		default:
		}
		if n != want {
			t.Fatalf("%s connected %d times, want %d", p.name, n, want)
		}
	}
	latest, _ := settle(t, parties, l)
	verify(t, parties, l)
	checkMongo(t, openMongo(t, mongo, c.Namespace()), parties, latest, false)
	t.Logf("%d messages acknowledged, %d unanswered or refused; all held exactly once", l.total(), len(l.failuresSince(time.Time{})))
}
