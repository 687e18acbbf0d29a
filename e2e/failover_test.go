package e2e

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// kill -9 of the leader while messages flow: a new leader is listed within
// the session timeout plus one second, cross-node delivery works again, and
// after the receiver's sync no acknowledged message is missing.
func TestLeaderKilledWhileMessagesFlow(t *testing.T) {
	const sessionTimeout = 2 * time.Second
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, SessionTimeout: sessionTimeout, Env: fastEnv})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	li := c.Index(leader)
	// Sender and receiver on the two followers, so every message crosses
	// the leader.
	var followers []int
	for i := 0; i < 3; i++ {
		if i != li {
			followers = append(followers, i)
		}
	}
	register(t, c, "ann", "ben")
	ann := connect(t, c.Node(followers[0]).WSURL, "ann")
	ben := connect(t, c.Node(followers[1]).WSURL, "ben")

	var (
		mu    sync.Mutex
		acked []protocol.ChatReply
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load() && i < 100000; i++ {
			r, err := ann.conn.Chat(ctxT(t, 10*time.Second), "ben", text("ann", i), "")
			if err != nil {
				// A refusal is allowed (the cluster may be busy); a false
				// acknowledgement is not, and the checks below find one.
				continue
			}
			mu.Lock()
			acked = append(acked, r)
			mu.Unlock()
		}
	}()
	testenv.WaitFor(t, 10*time.Second, "traffic flows before the kill", func() bool { return len(ben.received()) >= 50 })

	killed := time.Now()
	c.Kill(li)
	var newLeader string
	testenv.WaitFor(t, sessionTimeout+time.Second, "gateway lists a new leader, without the dead one", func() bool {
		n, err := gw(c).Nodes(ctxT(t, time.Second))
		if err != nil || n.Leader == "" || n.Leader == leader {
			return false
		}
		for _, node := range n.Nodes {
			if node.ID == leader {
				return false
			}
		}
		newLeader = n.Leader
		return true
	})
	t.Logf("failover: new leader %s listed by /api/nodes %v after kill -9 of %s (session timeout %v)",
		newLeader, time.Since(killed).Round(time.Millisecond), leader, sessionTimeout)

	// Cross-node delivery works again: a message sent now arrives live.
	mu.Lock()
	lastBefore := acked[len(acked)-1].Seq
	mu.Unlock()
	testenv.WaitFor(t, 15*time.Second, "live delivery resumes through the new leader", func() bool {
		for _, m := range ben.received() {
			if m.Seq > lastBefore {
				return true
			}
		}
		return false
	})
	t.Logf("delivery restored %v after the kill", time.Since(killed).Round(time.Millisecond))
	stop.Store(true)
	wg.Wait()

	live := ben.received()
	checkOrderOnce(t, "ben (live)", live)
	conv := protocol.DMConv("ann", "ben")
	synced, err := ben.conn.SyncAll(ctxT(t, 30*time.Second), map[string]int64{conv: 0})
	if err != nil {
		t.Fatal(err)
	}
	have := map[int64]string{}
	for _, m := range live {
		have[m.Seq] = m.ID
	}
	for _, m := range synced[conv].Messages {
		if id, ok := have[m.Seq]; ok && id != m.ID {
			t.Fatalf("seq %d is %s live but %s in sync", m.Seq, id, m.ID)
		}
		have[m.Seq] = m.ID
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range acked {
		if have[r.Seq] != r.ID {
			t.Fatalf("acknowledged message seq %d (%s) is missing after sync", r.Seq, r.ID)
		}
	}
	t.Logf("%d acknowledged, %d delivered live, all present after sync", len(acked), len(live))
}

// Starting a fourth node: it appears in /api/nodes and serves users.
func TestFourthNodeJoins(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	c.WaitLeader(t)
	i := c.AddNode()
	id := c.Node(i).ID
	testenv.WaitFor(t, 15*time.Second, "fourth node listed by the gateway", func() bool {
		n, err := gw(c).Nodes(ctxT(t, time.Second))
		if err != nil {
			return false
		}
		for _, node := range n.Nodes {
			if node.ID == id && node.WS == c.Node(i).WSURL {
				return true
			}
		}
		return false
	})
	register(t, c, "ivy", "jay")
	ivy := connect(t, c.Node(i).WSURL, "ivy")
	jay := connect(t, c.Node(0).WSURL, "jay")
	for _, p := range [][2]*user{{ivy, jay}, {jay, ivy}} {
		if _, err := p[0].conn.Chat(ctxT(t, 5*time.Second), p[1].name, "hello from "+p[0].name, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []*user{ivy, jay} {
		testenv.WaitFor(t, 15*time.Second, u.name+" receives across the new node", func() bool { return len(u.received()) == 1 })
	}
	// The new node counts its connection for the gateway.
	testenv.WaitFor(t, 10*time.Second, "new node reports its connection", func() bool {
		n, err := gw(c).Nodes(ctxT(t, time.Second))
		if err != nil {
			return false
		}
		for _, node := range n.Nodes {
			if node.ID == id {
				return node.Connections == 1
			}
		}
		return false
	})
}

// SIGTERM drains a node: it leaves the gateway's list and tells its
// clients to reconnect.
func TestGracefulStop(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	fi := 1 - c.Index(leader) // the follower stops
	register(t, c, "kim")
	kim := connect(t, c.Node(fi).WSURL, "kim")
	// Frames for the leader just before the stop.
	join(t, kim, "farewell")
	if _, err := kim.conn.ChatRoom(ctxT(t, 5*time.Second), "farewell", "bye", ""); err != nil {
		t.Fatal(err)
	}
	c.Stop(fi)
	select {
	case <-kim.readDone:
	case <-time.After(15 * time.Second):
		t.Fatal("client not closed by the drain")
	}
	found := false
	for _, p := range kim.otherPushes() {
		found = found || p.Action == protocol.PushNode && string(p.Data) == `{"reconnect":true}`
	}
	if !found {
		t.Fatalf("no node reconnect push before close; pushes %v", kim.otherPushes())
	}
	testenv.WaitFor(t, 5*time.Second, "stopped node leaves the list", func() bool {
		n, err := gw(c).Nodes(ctxT(t, time.Second))
		return err == nil && len(n.Nodes) == 1 && n.Nodes[0].ID == leader
	})
}
