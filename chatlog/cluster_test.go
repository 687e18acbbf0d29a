package chatlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/history"
	"chatcluster/internal/keyspace"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// On a Redis Cluster of three masters every operation of the log works:
// no script or transaction spans two slots (Redis would refuse it with
// CROSSSLOT), the shards' keys land where keyspace says, and the scan for
// counters sees every master.
func TestLogOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rc := testenv.StartRedisCluster(t, false)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
	t.Cleanup(func() { rdb.Close() })
	l := New(rdb, testenv.Namespace(t)+":")

	// Redis hashes keys as keyspace does.
	for _, k := range []string{l.SeqKey("dm:a:b"), l.ConvsKey("alice"), "plain", "a{b}c{d}"} {
		if got, want := rc.KeySlot(t, k), keyspace.Slot(k); got != want {
			t.Fatalf("slot of %q: Redis says %d, keyspace %d", k, got, want)
		}
	}

	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	if fresh, err := l.Fresh(ctx); err != nil || !fresh {
		t.Fatalf("Fresh after MarkFresh = %v, %v", fresh, err)
	}
	const convs = 60
	names := make([]string, convs)
	for i := range convs {
		names[i] = fmt.Sprintf("dm:u%d:v%d", i, i)
		for j := 1; j <= 3; j++ {
			m := protocol.Message{ID: fmt.Sprintf("m%d.%d", i, j), Conv: names[i], From: fmt.Sprintf("u%d", i), To: fmt.Sprintf("v%d", i), Text: "x", TS: 1}
			got, dup, err := appended(l.Append(ctx, m, fmt.Sprintf("c%d", j), []string{m.From, m.To}))
			if err != nil || dup || got.Seq != int64(j) {
				t.Fatalf("append %s: seq %d dup=%v err=%v", m.ID, got.Seq, dup, err)
			}
		}
		// A resend is recognised in the conversation's shard.
		m := protocol.Message{ID: "again", Conv: names[i], From: fmt.Sprintf("u%d", i), Text: "x", TS: 2}
		if got, dup, err := appended(l.Append(ctx, m, "c2", nil)); err != nil || !dup || got.Seq != 2 {
			t.Fatalf("resend in %s: seq %d dup=%v err=%v", names[i], got.Seq, dup, err)
		}
	}
	// The conversations spread over every master.
	masters := map[string]bool{}
	for _, cv := range names {
		addr, err := rdb.MasterForKey(ctx, l.SeqKey(cv))
		if err != nil {
			t.Fatal(err)
		}
		masters[addr.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("%d conversations on %d masters, want all 3", convs, len(masters))
	}
	latest, err := l.Latest(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range names {
		if latest[cv] != 3 {
			t.Fatalf("latest of %s = %d, want 3", cv, latest[cv])
		}
	}
	if cs, err := l.Convs(ctx, "v7"); err != nil || len(cs) != 1 || cs[0] != "dm:u7:v7" {
		t.Fatalf("convs of v7 = %v, %v", cs, err)
	}
	if err := l.RestoreConvs(ctx, "w", names[:5]); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.ConvsRestored(ctx, "w"); err != nil || !ok {
		t.Fatalf("ConvsRestored = %v, %v", ok, err)
	}
	n, latestSeq, err := l.Restore(ctx, names[0], []protocol.Message{{ID: "r4", Conv: names[0], Seq: 4, From: "u0", Text: "back", TS: 3}}, []string{"u0", "v0"})
	if err != nil || n != 1 || latestSeq != 4 {
		t.Fatalf("restore: %d, %d, %v", n, latestSeq, err)
	}
	msgs, err := l.Unflushed(ctx, names[0])
	if err != nil || len(msgs) != 4 {
		t.Fatalf("unflushed of %s: %d messages, %v", names[0], len(msgs), err)
	}

	forgot, err := l.ForgetCounters(ctx)
	if err != nil || forgot != convs {
		t.Fatalf("ForgetCounters = %d, %v; want the %d counters of every master", forgot, err, convs)
	}
	if fresh, err := l.Fresh(ctx); err != nil || fresh {
		t.Fatalf("Fresh after ForgetCounters = %v, %v", fresh, err)
	}
	if err := l.Reseed(ctx, names[1], 3, 0, true); err != nil {
		t.Fatal(err)
	}
	floors, err := l.Reseeded(ctx, names[:3])
	if err != nil || len(floors) != 1 || floors[names[1]] != 3 {
		t.Fatalf("Reseeded = %v, %v", floors, err)
	}
	m := protocol.Message{ID: "after", Conv: names[1], From: "u1", Text: "x", TS: 4}
	if got, _, err := appended(l.Append(ctx, m, "", nil)); err != nil || got.Seq != 3+SeqGap+1 {
		t.Fatalf("append after reseed: seq %d, %v; want %d", got.Seq, err, 3+SeqGap+1)
	}
}

// With replicas to wait for, every master a pipeline wrote to is sent a
// WAIT on the connection that carried the writes: with every replica up
// none falls short; with one down, the messages of its master's slots
// still go through, counted short; after its master fails over to a
// replica, appends go on at the new master.
func TestLogWaitsForReplicasOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rc := testenv.StartRedisCluster(t, true)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
	t.Cleanup(func() { rdb.Close() })
	var mu sync.Mutex
	short := 0
	// A bound far above a loopback replica's lag, so that with every
	// replica up no WAIT falls short on a loaded machine.
	l := New(rdb, testenv.Namespace(t)+":", WithReplicas(1, 2*time.Second, func(int) {
		mu.Lock()
		short++
		mu.Unlock()
	}))
	shorts := func() int {
		mu.Lock()
		defer mu.Unlock()
		return short
	}
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	send := func(round int) error {
		var wg sync.WaitGroup
		errs := make([]error, 40)
		for i := range 40 {
			conv := fmt.Sprintf("dm:a%d:b%d", i, i)
			wg.Go(func() {
				m := protocol.Message{ID: fmt.Sprintf("r%d.%d", round, i), Conv: conv, From: fmt.Sprintf("a%d", i), Text: "x", TS: 1}
				_, errs[i] = l.Append(ctx, m, m.ID, []string{m.From})
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := send(0); err != nil {
		t.Fatal(err)
	}
	if n := shorts(); n != 0 {
		t.Fatalf("%d WAITs fell short with every replica in sync", n)
	}

	// One master's replica goes away.
	masters := rc.Masters()
	var replica string
	for _, a := range rc.Seeds() {
		if !slices.Contains(masters, a) {
			replica = a
			break
		}
	}
	rc.Server(replica).Kill(t)
	if err := send(1); err != nil {
		t.Fatalf("append with a replica down: %v", err)
	}
	if shorts() == 0 {
		t.Fatal("no WAIT fell short with a replica down")
	}
	rc.Server(replica).Start(t)
	testenv.WaitFor(t, 60*time.Second, "the replica back in sync", rc.Whole)

	// A master fails over: appends reach the promoted replica (a call may
	// fail while the slots move; a client sends it again).
	rc.FailOver(t, masters[0])
	testenv.WaitFor(t, 30*time.Second, "appends go through after the failover", func() bool {
		return send(2) == nil
	})
	latest, err := l.Latest(ctx, []string{"dm:a0:b0", "dm:a39:b39"})
	if err != nil || latest["dm:a0:b0"] < 3 || latest["dm:a39:b39"] < 3 {
		t.Fatalf("latest after failover = %v, %v", latest, err)
	}
}

// The history writer reads the streams and deletes the pending fields
// the log writes: both name them alike.
func TestKeysAgreeWithTheHistoryWriter(t *testing.T) {
	l := New(nil, "p:")
	for _, conv := range []string{"dm:a:b", "room:lobby", "dm:x:y"} {
		if got, want := l.StreamKey(conv), history.StreamKey("p:", conv); got != want {
			t.Errorf("stream of %s: log %s, writer %s", conv, got, want)
		}
		if got, want := l.PendingKey(conv), history.PendingKey("p:", conv); got != want {
			t.Errorf("pending hash of %s: log %s, writer %s", conv, got, want)
		}
	}
}
