package cluster

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"chatcluster/internal/testenv"
)

func TestThreeMembersAgree(t *testing.T) {
	e := newEnv(t)
	n1 := e.started("n1", nil)
	n2 := e.started("n2", nil)
	n3 := e.started("n3", nil)

	l := waitAgreed(t, 3, n1, n2, n3)
	if l.ID != "n1" || l.Peer != "127.0.0.1:7000/n1" || l.Epoch <= 0 {
		t.Fatalf("leader = %+v, want n1 (first in the election) with its peer address and an epoch", l)
	}
	s := n3.State()
	want := []Member{
		{ID: "n1", WS: "ws://127.0.0.1:9000/n1", Peer: "127.0.0.1:7000/n1"},
		{ID: "n2", WS: "ws://127.0.0.1:9000/n2", Peer: "127.0.0.1:7000/n2"},
		{ID: "n3", WS: "ws://127.0.0.1:9000/n3", Peer: "127.0.0.1:7000/n3"},
	}
	if !slices.Equal(s.Members, want) {
		t.Fatalf("members = %+v, want %+v", s.Members, want)
	}
	if s.Session == 0 || s.Session == n1.State().Session {
		t.Fatalf("session ids: n1 %x, n3 %x", n1.State().Session, s.Session)
	}

	// The fresh read agrees with the followed state, from every node.
	for _, c := range []*Cluster{n1, n2, n3} {
		got, err := c.CurrentLeader(context.Background())
		if err != nil || got != l {
			t.Fatalf("%s: CurrentLeader = %+v, %v; want %+v", c.cfg.Self.ID, got, err, l)
		}
	}

	// Updates carries the same snapshots.
	var last State
	testenv.WaitFor(t, testTimeout, "n3's Updates shows the agreed state", func() bool {
		latest(n3.Updates(), &last)
		return last.Leader == l && len(last.Members) == 3 && last.Connected
	})
}

func TestOnlyPredecessorIsWatched(t *testing.T) {
	e := newEnv(t)
	nodes := []*Cluster{e.started("a", nil), e.started("b", nil), e.started("c", nil)}
	waitAgreed(t, 3, nodes...)

	conn := e.raw()
	defer conn.Close()
	names, _, err := conn.Children(e.root + "/election")
	if err != nil {
		t.Fatal(err)
	}
	line := sortElection(names)
	if len(line) != 3 {
		t.Fatalf("election = %v, want 3 znodes", names)
	}
	testenv.WaitFor(t, testTimeout, "each node watches its predecessor only", func() bool {
		for i, c := range nodes {
			own, watching := ownElection(c)
			want := ""
			if i > 0 {
				want = line[i-1]
			}
			if own != line[i] || watching != want {
				return false
			}
		}
		return true
	})

	// The middle one leaves: the last one now watches the first.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := nodes[1].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, testTimeout, "c watches a after b left", func() bool {
		_, watching := ownElection(nodes[2])
		return watching == line[0]
	})
	if l := waitAgreed(t, 2, nodes[0], nodes[2]); l.ID != "a" {
		t.Fatalf("leader = %+v, want a unchanged", l)
	}
}

func TestLeaderCloseFailover(t *testing.T) {
	e := newEnv(t)
	n1, n2, n3 := e.started("n1", nil), e.started("n2", nil), e.started("n3", nil)
	old := waitAgreed(t, 3, n1, n2, n3)
	if old.ID != "n1" {
		t.Fatalf("leader = %+v, want n1", old)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	start := time.Now()
	if err := n1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// n3 is not n1's successor: it must learn of the new leader too.
	var seen State
	testenv.WaitFor(t, testTimeout, "n3's Updates shows n2 leading", func() bool {
		latest(n3.Updates(), &seen)
		return seen.Leader.ID == "n2"
	})
	l := waitAgreed(t, 2, n2, n3)
	t.Logf("leader Close → new leader seen by all: %s (session timeout 1s)", time.Since(start).Round(time.Millisecond))
	if l.ID != "n2" || l.Epoch <= old.Epoch || seen.Leader != l {
		t.Fatalf("new leader = %+v (n3 saw %+v), want n2 with an epoch above %d", l, seen.Leader, old.Epoch)
	}

	// The closed node's Updates ends with a stepped-down snapshot.
	var final State
	for s := range n1.Updates() {
		final = s
	}
	if final.IsLeader || final.Connected {
		t.Fatalf("last snapshot of the closed leader = %+v, want not leading, not connected", final)
	}
	if got, err := n2.CurrentLeader(ctx); err != nil || got != l {
		t.Fatalf("CurrentLeader = %+v, %v; want %+v", got, err, l)
	}
}

// TestLeaderKilled cuts the leader off ZooKeeper for good, as when its
// process is killed: its session expires and the next node leads.
func TestLeaderKilled(t *testing.T) {
	e := newEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	n1 := e.started("n1", viaProxy(p))
	n2, n3 := e.started("n2", nil), e.started("n3", nil)
	old := waitAgreed(t, 3, n1, n2, n3)

	start := time.Now()
	p.Cut()
	testenv.WaitFor(t, testTimeout, "killed leader stops leading", func() bool {
		s := n1.State()
		return !s.Connected && !s.IsLeader
	})
	l := waitAgreed(t, 2, n2, n3)
	t.Logf("leader killed → new leader seen by all: %s (session timeout 1s)", time.Since(start).Round(time.Millisecond))
	if l.ID != "n2" || l.Epoch <= old.Epoch {
		t.Fatalf("new leader = %+v, want n2 with an epoch above %d", l, old.Epoch)
	}

	// Close is bounded while ZooKeeper is unreachable.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start = time.Now()
	if err := n1.Close(ctx); err != nil {
		t.Fatalf("close with ZooKeeper unreachable: %v", err)
	}
	t.Logf("Close with ZooKeeper unreachable took %s", time.Since(start))
}

// TestClosePartitioned: Close stays bounded when ZooKeeper hangs (the link
// is open but nothing answers), even with a request in flight.
func TestClosePartitioned(t *testing.T) {
	e := newEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	n1 := e.started("n1", viaProxy(p))
	waitAgreed(t, 1, n1)
	base := runtime.NumGoroutine()

	p.Blackhole()
	errc := make(chan error, 1)
	go func() { // a fencing read that will not get an answer
		_, err := n1.CurrentLeader(context.Background())
		errc <- err
	}()
	testenv.WaitFor(t, testTimeout, "n1 notices the dead link", func() bool { return !n1.State().Connected })
	// The client now hangs in the handshake of a new connection.
	testenv.WaitFor(t, testTimeout, "n1 reconnects into the hanging link", func() bool { return p.Held() > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := n1.Close(ctx); err != nil {
		t.Fatalf("close with ZooKeeper hanging: %v", err)
	}
	t.Logf("Close with ZooKeeper hanging took %s", time.Since(start))
	if err := <-errc; err == nil {
		t.Fatal("CurrentLeader succeeded through a dead link")
	}
	testenv.WaitFor(t, testTimeout, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

// TestPartitionedLeader blackholes the leader's link: it must stop leading
// before the others elect a new leader, then come back after the heal with
// a new session, registered again and in the election behind the others.
func TestPartitionedLeader(t *testing.T) {
	e := newEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	n1 := e.started("n1", viaProxy(p))
	n2, n3 := e.started("n2", nil), e.started("n3", nil)
	old := waitAgreed(t, 3, n1, n2, n3)
	oldSession := n1.State().Session
	oldOwn, _ := ownElection(n1)

	start := time.Now()
	p.Blackhole()
	var paused time.Duration
	testenv.WaitFor(t, testTimeout, "others elect a new leader", func() bool {
		if s := n1.State(); paused == 0 && !s.IsLeader {
			paused = time.Since(start)
		}
		_, ok := agreed(2, n2, n3)
		if ok && paused == 0 {
			t.Fatalf("a new leader was elected while the partitioned one still had IsLeader set")
		}
		return ok
	})
	newLeader := waitAgreed(t, 2, n2, n3)
	t.Logf("leader partitioned: paused after %s, new leader seen by all after %s (session timeout 1s)",
		paused.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if newLeader.ID != "n2" || newLeader.Epoch <= old.Epoch {
		t.Fatalf("new leader = %+v, want n2 with an epoch above %d", newLeader, old.Epoch)
	}

	p.Restore()
	waitAgreed(t, 3, n1, n2, n3)
	s := n1.State()
	own, watching := ownElection(n1)
	n3own, _ := ownElection(n3)
	if s.Session == oldSession || s.IsLeader || s.Leader != newLeader {
		t.Fatalf("after heal n1 = %+v; want a new session (old %x), following %+v", s, oldSession, newLeader)
	}
	if own == "" || own == oldOwn || watching != n3own {
		t.Fatalf("after heal n1 election znode %q (was %q) watching %q; want a new one behind n3 (%q)", own, oldOwn, watching, n3own)
	}
	// The fencing read agrees.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if got, err := n1.CurrentLeader(ctx); err != nil || got != newLeader {
		t.Fatalf("CurrentLeader = %+v, %v; want %+v", got, err, newLeader)
	}
}

// TestDisconnectKeepsSession: a short outage pauses the leader, which
// resumes with the same session, znodes and epoch.
func TestDisconnectKeepsSession(t *testing.T) {
	e := newEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	// A longer session than the client's ~1s reconnect delay.
	n1 := e.started("n1", func(c *Config) { viaProxy(p)(c); c.SessionTimeout = 4 * time.Second })
	n2 := e.started("n2", nil)
	old := waitAgreed(t, 2, n1, n2)
	before := n1.State()
	ownBefore, _ := ownElection(n1)

	p.Cut()
	testenv.WaitFor(t, testTimeout, "n1 paused", func() bool {
		s := n1.State()
		return !s.Connected && !s.IsLeader
	})
	p.Restore()
	testenv.WaitFor(t, testTimeout, "n1 leads again", func() bool {
		s := n1.State()
		return s.Connected && s.IsLeader
	})
	after := n1.State()
	own, _ := ownElection(n1)
	if after.Session != before.Session || after.Leader != old || own != ownBefore {
		t.Fatalf("after reconnect: %+v znode %q; want session %x, leader %+v, znode %q", after, own, before.Session, old, ownBefore)
	}
	if l := waitAgreed(t, 2, n1, n2); l != old {
		t.Fatalf("leader = %+v, want %+v unchanged", l, old)
	}
}

func TestDuplicateIDFailsStart(t *testing.T) {
	e := newEnv(t)
	a := e.started("n1", nil)
	waitAgreed(t, 1, a)

	dup := e.node("n1", func(c *Config) { c.StaleWait = 300 * time.Millisecond; c.Self.WS = "ws://elsewhere" })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	err := dup.Start(ctx)
	if !errors.Is(err, ErrDuplicateID) {
		t.Fatalf("Start of a duplicate id = %v, want ErrDuplicateID", err)
	}
	t.Logf("duplicate start: %v", err)
	if err := dup.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	if err := dup.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The first one is untouched.
	conn := e.raw()
	defer conn.Close()
	data, stat, err := conn.Get(e.root + "/nodes/n1")
	if err != nil || stat.EphemeralOwner != a.State().Session || string(data) != string(a.selfData) {
		t.Fatalf("nodes/n1 = %q owner %x, %v; want the first node's", data, stat.EphemeralOwner, err)
	}
	names, _, err := conn.Children(e.root + "/election")
	if err != nil || len(names) != 1 {
		t.Fatalf("election = %v, %v; want only the first node", names, err)
	}
	if s := a.State(); !s.IsLeader || len(s.Members) != 1 {
		t.Fatalf("first node = %+v, want the only member, leading", s)
	}
}

// TestRestartAfterCrash: a node restarted at once after a crash waits for
// its old session to expire instead of failing as a duplicate.
func TestRestartAfterCrash(t *testing.T) {
	e := newEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	old := e.started("n1", viaProxy(p))
	other := e.started("n2", nil)
	waitAgreed(t, 2, old, other)

	p.Cut() // the old process is gone; its session lingers for up to 1s
	start := time.Now()
	restarted := e.started("n1", func(c *Config) { c.StaleWait = 5 * time.Second })
	t.Logf("restart waited %s for the old session to expire", time.Since(start).Round(time.Millisecond))
	l := waitAgreed(t, 2, restarted, other)
	if l.ID != "n2" {
		t.Fatalf("leader = %+v, want n2", l)
	}
}

func TestCloseIdempotentNoLeak(t *testing.T) {
	e := newEnv(t)
	base := runtime.NumGoroutine()

	a, b := e.started("a", nil), e.started("b", nil)
	waitAgreed(t, 2, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := a.Close(ctx); err != nil {
				t.Errorf("concurrent Close: %v", err)
			}
		})
	}
	wg.Wait()
	for _, c := range []*Cluster{a, b, b} {
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range a.Updates() {
	}
	if _, ok := <-b.Updates(); ok {
		// one snapshot may still be buffered
		if _, ok := <-b.Updates(); ok {
			t.Fatal("Updates not closed after Close")
		}
	}
	if err := a.Start(ctx); !isClosed(err) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	if _, err := a.CurrentLeader(ctx); !isClosed(err) {
		t.Fatalf("CurrentLeader after Close = %v, want ErrClosed", err)
	}

	// Close without Start.
	c := e.node("c", nil)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-c.Updates(); ok {
		t.Fatal("Updates not closed")
	}

	testenv.WaitFor(t, testTimeout, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

func TestStartGivesUpWithContext(t *testing.T) {
	e := newEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	p.Cut() // nothing answers
	base := runtime.NumGoroutine()
	c := e.node("n1", viaProxy(p))

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Start(ctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want DeadlineExceeded", err)
	}
	if took > time.Second {
		t.Fatalf("Start returned %s after its 300ms deadline", took)
	}
	if _, err := c.CurrentLeader(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("CurrentLeader = %v, want ErrNotConnected", err)
	}
	closeCtx, cancel2 := context.WithTimeout(context.Background(), testTimeout)
	defer cancel2()
	if err := c.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, testTimeout, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}
