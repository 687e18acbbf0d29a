package e2e

import (
	"sync"
	"testing"
	"time"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Two users on different nodes exchange 1,000 messages each way; each
// arrives exactly once, in order, and history (from MongoDB) has them all.
func TestDirectChatAcrossNodes(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	c.WaitLeader(t)
	register(t, c, "alice", "bob")
	alice := connect(t, c.Node(0).WSURL, "alice")
	bob := connect(t, c.Node(1).WSURL, "bob")

	const n = 1000
	acked := map[string][]protocol.ChatReply{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, pair := range [][2]*user{{alice, bob}, {bob, alice}} {
		from, to := pair[0], pair[1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				r, err := from.conn.Chat(ctxT(t, 10*time.Second), to.name, text(from.name, i), "")
				if err != nil {
					t.Errorf("%s chat %d: %v", from.name, i, err)
					return
				}
				mu.Lock()
				acked[from.name] = append(acked[from.name], r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, u := range []*user{alice, bob} {
		testenv.WaitFor(t, 30*time.Second, u.name+" receives all messages", func() bool { return len(u.received()) >= n })
		got := u.received()
		checkOrderOnce(t, u.name, got)
		if len(got) != n {
			t.Fatalf("%s received %d messages, want %d", u.name, len(got), n)
		}
	}
	// Every acknowledged message reached its recipient with its acked seq.
	for from, replies := range acked {
		to := bob
		if from == "bob" {
			to = alice
		}
		bySeq := map[int64]protocol.Message{}
		for _, m := range to.received() {
			bySeq[m.Seq] = m
		}
		for i, r := range replies {
			m, ok := bySeq[r.Seq]
			if !ok || m.ID != r.ID || m.Text != text(from, i) || m.From != from {
				t.Fatalf("acked message %d of %s (seq %d) arrived as %+v", i, from, r.Seq, m)
			}
		}
	}

	// History comes back whole, and it is durable in MongoDB.
	conv := protocol.DMConv("alice", "bob")
	mdb := openMongo(t, testenv.Mongo(t), c.Namespace())
	testenv.WaitFor(t, 60*time.Second, "history writer stores all messages in MongoDB", func() bool {
		cnt, err := mdb.count(conv)
		return err == nil && cnt == 2*n
	})
	hist := allHistory(t, alice, conv)
	if len(hist) != 2*n {
		t.Fatalf("history has %d messages, want %d", len(hist), 2*n)
	}
	for i, m := range hist {
		if m.Seq != int64(i+1) {
			t.Fatalf("history[%d] has seq %d, want %d", i, m.Seq, i+1)
		}
	}

	// The cluster page counts what each node accepted, and the history
	// backlog drains to zero once MongoDB holds everything.
	testenv.WaitFor(t, 10*time.Second, "/api/cluster counts the messages and an empty backlog", func() bool {
		v := clusterInfo(t, c)
		var sum int64
		for _, nd := range v.Nodes {
			sum += nd.Messages
		}
		return sum == 2*n && v.Backlog == 0
	})
}

// A message to a user who is offline is stored and reaches them through
// sync when they come back; a token from the gateway logs in.
func TestOfflineDeliveryAndTokenLogin(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitLeader(t)
	register(t, c, "carol", "dave")
	carol := connect(t, c.Node(0).WSURL, "carol")
	var sent []protocol.ChatReply
	for i := 0; i < 5; i++ {
		r, err := carol.conn.Chat(ctxT(t, 5*time.Second), "dave", text("carol", i), "")
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, r)
	}
	token, nodes, err := gw(c).Login(ctxT(t, 5*time.Second), "dave", password)
	if err != nil || token == "" || len(nodes) == 0 {
		t.Fatalf("gateway login: token %q, nodes %v, err %v", token, nodes, err)
	}
	conn, err := dialNode(t, c.Node(1).WSURL)
	if err != nil {
		t.Fatal(err)
	}
	r, err := conn.LoginToken(ctxT(t, 5*time.Second), token)
	if err != nil || r.Username != "dave" || r.Node != c.Node(1).ID || r.SessionID == "" {
		t.Fatalf("token login: %+v, %v", r, err)
	}
	sr, err := conn.Sync(ctxT(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := sr.Convs[protocol.DMConv("carol", "dave")]
	if sc.Latest != sent[len(sent)-1].Seq || len(sc.Messages) != len(sent) {
		t.Fatalf("sync: latest %d with %d messages, want %d with %d", sc.Latest, len(sc.Messages), sent[len(sent)-1].Seq, len(sent))
	}
	for i, m := range sc.Messages {
		if m.ID != sent[i].ID || m.Text != text("carol", i) {
			t.Fatalf("synced message %d is %+v, want id %s", i, m, sent[i].ID)
		}
	}
	// Sync from an offset returns only what is after it.
	sr, err = conn.Sync(ctxT(t, 5*time.Second), map[string]int64{protocol.DMConv("carol", "dave"): sent[2].Seq})
	if err != nil || len(sr.Convs[protocol.DMConv("carol", "dave")].Messages) != 2 {
		t.Fatalf("sync from offset: %+v, %v", sr, err)
	}
	// userInfo sees dave online on node 1.
	var info protocol.UserInfoReply
	if err := carol.conn.Do(ctxT(t, 5*time.Second), protocol.ActionUserInfo, protocol.UserInfoData{Username: "dave"}, &info); err != nil {
		t.Fatal(err)
	}
	if !info.Online || info.Node != c.Node(1).ID || info.LoginTime == 0 {
		t.Fatalf("userInfo dave = %+v, want online on %s", info, c.Node(1).ID)
	}
}

// A second login of the same user on another node kicks the first.
func TestSecondLoginKicksFirst(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitLeader(t)
	register(t, c, "erin", "frank")
	first := connect(t, c.Node(0).WSURL, "erin")
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	second := connect(t, c.Node(1).WSURL, "erin")
	select {
	case <-first.readDone:
	case <-time.After(10 * time.Second):
		t.Fatal("first connection was not closed after the second login")
	}
	kicked := false
	for _, p := range first.otherPushes() {
		kicked = kicked || p.Action == protocol.PushKicked
	}
	if !kicked {
		t.Fatalf("first connection got no kicked push; pushes: %v", first.otherPushes())
	}
	// The new session is the one that counts: messages reach it.
	frank := connect(t, c.Node(0).WSURL, "frank")
	if _, err := frank.conn.Chat(ctxT(t, 5*time.Second), "erin", "hi", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "message reaches the second login", func() bool { return len(second.received()) == 1 })
}

// Resending the same clientMsgId returns the first result.
func TestClientMsgIDIsIdempotent(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: fastEnv})
	c.WaitLeader(t)
	register(t, c, "gina", "hank")
	gina := connect(t, c.Node(0).WSURL, "gina")
	hank := connect(t, c.Node(0).WSURL, "hank")
	a, err := gina.conn.Chat(ctxT(t, 5*time.Second), "hank", "once", "m-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := gina.conn.Chat(ctxT(t, 5*time.Second), "hank", "once", "m-1")
	if err != nil || a != b {
		t.Fatalf("resend returned %+v, %v; want %+v", b, err, a)
	}
	if _, err := gina.conn.Chat(ctxT(t, 5*time.Second), "hank", "twice", "m-2"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "hank gets two messages", func() bool { return len(hank.received()) == 2 })
	if got := hank.received(); got[0].Seq != a.Seq || got[1].Text != "twice" {
		t.Fatalf("hank received %+v", got)
	}
}
