package e2e

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/chatclient"
	"chatcluster/internal/keyspace"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Redis run with Sentinel: the master is killed while messages flow, the
// Sentinels promote the replica, and the nodes and the gateway follow
// without a restart. Every acknowledged message was on the replica before
// its acknowledgement (--redis-wait-replicas is 1 with Sentinels), so none
// is lost: after a sync the recipient holds each one exactly once, in
// order.
func TestRedisSentinelFailoverLosesNothing(t *testing.T) {
	sr := testenv.StartSentinelRedis(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv,
		RedisSentinels: sr.Sentinels(), RedisMaster: testenv.SentinelMaster})
	redisFailoverLosesNothing(t, c, func() {
		before := sr.CurrentMaster()
		killed := time.Now()
		sr.Master.Kill(t)
		testenv.WaitFor(t, 30*time.Second, "the Sentinels promote the replica", func() bool {
			return sr.CurrentMaster() == sr.Replica.Addr()
		})
		t.Logf("master %s killed; the Sentinels named %s after %v", before, sr.Replica.Addr(), time.Since(killed).Round(time.Millisecond))
	})
}

// A Redis Cluster of three masters with a replica each: the master that
// holds the conversation is killed while messages flow, the cluster
// promotes its replica, and the nodes and the gateway follow its slots
// without a restart. Every acknowledged message was on the replica before
// its acknowledgement (a WAIT on each master written to), so none is
// lost.
func TestRedisClusterFailoverLosesNothing(t *testing.T) {
	rc := testenv.StartRedisCluster(t, true)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv,
		RedisCluster: rc.Seeds(), RedisClusterReplicas: true})
	redisFailoverLosesNothing(t, c, func() {
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
		defer rdb.Close()
		// The conversation's keys are all under its shard's tag.
		key := keyspace.NewTags().Of(protocol.DMConv("sia", "sol"))
		master, err := rdb.MasterForKey(ctxT(t, 5*time.Second), key)
		if err != nil {
			t.Fatal(err)
		}
		addr := master.Options().Addr
		took := rc.FailOver(t, addr)
		t.Logf("master %s of the conversation killed; its replica promoted after %v", addr, took.Round(time.Millisecond))
	})
}

// redisFailoverLosesNothing runs a sender against a recipient on another
// node of c, has failOver take the Redis master away and return once a
// replica took its place, and checks that messages are acknowledged again
// and that every acknowledged one is held by the recipient exactly once,
// in order.
func redisFailoverLosesNothing(t *testing.T, c *testenv.Cluster, failOver func()) {
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "sia", "sol")
	sia := connect(t, c.Node(0).WSURL, "sia")
	sol := connect(t, c.Node(1).WSURL, "sol")

	type ack struct {
		at    time.Time
		reply protocol.ChatReply
	}
	var (
		mu    sync.Mutex
		acked []ack
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load() && i < 100000; i++ {
			// As a client does: the same clientMsgId until acknowledged,
			// so a message stored before a lost reply is stored once.
			cid := fmt.Sprintf("sia-%d", i)
			for try := 0; !stop.Load(); try++ {
				r, err := sia.conn.Chat(ctxT(t, 10*time.Second), "sol", text("sia", i), cid)
				if err == nil {
					mu.Lock()
					acked = append(acked, ack{time.Now(), r})
					mu.Unlock()
					break
				}
				if try > 2000 {
					t.Errorf("message %s refused for good: %v", cid, err)
					return
				}
				time.Sleep(5 * time.Millisecond) // a client's back-off between retries
			}
		}
	}()
	testenv.WaitFor(t, 15*time.Second, "traffic flows before the master is killed", func() bool { return len(sol.received()) >= 50 })

	killed := time.Now()
	failOver()
	promoted := time.Now()
	// Without a replica in sync, the new master makes every pipeline wait
	// out --redis-wait-timeout (100 ms) before it is acknowledged.
	testenv.WaitFor(t, 30*time.Second, "messages are acknowledged again, through the new master", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range acked {
			if a.at.After(promoted) {
				n++
			}
		}
		return n >= 20
	})
	t.Logf("20 messages acknowledged through the new master %v after the kill", time.Since(killed).Round(time.Millisecond))

	// The gateway follows too: a registration and a password login need
	// Redis (the name cache, the throttle, the token).
	testenv.WaitFor(t, 20*time.Second, "the gateway registers and logs in through the new master", func() bool {
		// 409: an earlier attempt registered it, its reply lost.
		var he *chatclient.HTTPError
		if err := gw(c).Register(ctxT(t, 5*time.Second), "sky", password); err != nil && !(errors.As(err, &he) && he.Status == 409) {
			return false
		}
		_, _, err := gw(c).Login(ctxT(t, 5*time.Second), "sky", password)
		return err == nil
	})
	sky := connect(t, c.Node(2).WSURL, "sky")
	if _, err := sky.conn.Chat(ctxT(t, 10*time.Second), "sol", "after the failover", "sky-1"); err != nil {
		t.Fatalf("a new user's message after the failover: %v", err)
	}

	stop.Store(true)
	wg.Wait()

	conv := protocol.DMConv("sia", "sol")
	var live []protocol.Message
	for _, m := range sol.received() {
		if m.Conv == conv {
			live = append(live, m)
		}
	}
	checkOrderOnce(t, "sol (live)", live)
	synced, err := sol.conn.SyncAll(ctxT(t, 30*time.Second), map[string]int64{conv: 0})
	if err != nil {
		t.Fatal(err)
	}
	bySeq := map[int64]string{}
	var seqs []int64
	for _, m := range synced[conv].Messages {
		if _, ok := bySeq[m.Seq]; ok {
			t.Fatalf("sync returned seq %d twice", m.Seq)
		}
		if len(seqs) > 0 && m.Seq <= seqs[len(seqs)-1] {
			t.Fatalf("sync returned seq %d after %d", m.Seq, seqs[len(seqs)-1])
		}
		bySeq[m.Seq] = m.ID
		seqs = append(seqs, m.Seq)
	}
	ids := map[string]bool{}
	for _, id := range bySeq {
		if ids[id] {
			t.Fatalf("message %s stored under two seqs", id)
		}
		ids[id] = true
	}
	for _, m := range live {
		if bySeq[m.Seq] != m.ID {
			t.Fatalf("seq %d was pushed as %s, sync has %q", m.Seq, m.ID, bySeq[m.Seq])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range acked {
		if bySeq[a.reply.Seq] != a.reply.ID {
			t.Fatalf("acknowledged message seq %d (%s) is missing after the failover (sync has %q)", a.reply.Seq, a.reply.ID, bySeq[a.reply.Seq])
		}
	}
	t.Logf("%d acknowledged (%d after the promotion), %d pushed live, all held once after sync", len(acked), countAfter(acked, promoted, func(a ack) time.Time { return a.at }), len(live))
}

func countAfter[T any](xs []T, t0 time.Time, at func(T) time.Time) int {
	n := 0
	for _, x := range xs {
		if at(x).After(t0) {
			n++
		}
	}
	return n
}
