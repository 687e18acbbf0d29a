package e2e

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/chatlog"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// The server loses its newest messages (Redis restarted before the history
// writer reached MongoDB, simulated by deleting them from both): the
// conversation's counter is seeded from MongoDB plus chatlog.SeqGap, a
// client that still holds the lost messages is told to rebuild, uploads
// them into the gap, and afterwards every participant reads the same
// messages, with the next one numbered after the gap.
func TestRebuildAfterServerLostRecentMessages(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitLeader(t)
	register(t, c, "ria", "rob")
	ria := connect(t, c.Node(0).WSURL, "ria")
	rob := connect(t, c.Node(1).WSURL, "rob")
	conv := protocol.DMConv("ria", "rob")
	const n, kept = 10, 6
	for i := 0; i < n; i++ {
		if _, err := ria.conn.Chat(ctxT(t, 5*time.Second), "rob", text("ria", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "rob receives every message", func() bool { return len(rob.received()) == n })

	mdb := openMongo(t, testenv.Mongo(t), c.Namespace())
	count := func() int64 {
		cnt, err := mdb.count(conv)
		if err != nil {
			t.Fatal(err)
		}
		return cnt
	}
	testenv.WaitFor(t, 30*time.Second, "history writer stores the messages", func() bool { return count() == n })

	// The server loses seq 7..10.
	if lost, err := mdb.s.Forget(ctxT(t, 10*time.Second), conv, kept); err != nil || lost != n-kept {
		t.Fatalf("Forget: %d, %v; want %d messages forgotten", lost, err, n-kept)
	}
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	l := chatlog.New(rdb, c.Namespace()+":")
	if err := rdb.Del(ctxT(t, 5*time.Second), l.SeqKey(conv), l.RecentKey(conv), l.PendingKey(conv), l.MarkerKey(conv)).Err(); err != nil {
		t.Fatal(err)
	}

	sc, err := rob.conn.Sync(ctxT(t, 10*time.Second), map[string]int64{conv: n})
	if err != nil {
		t.Fatal(err)
	}
	top := int64(kept + chatlog.SeqGap)
	if got := sc.Convs[conv]; !got.Rebuild || got.Latest != top || got.Floor != kept || len(got.Messages) != 0 {
		t.Fatalf("sync of a client holding what the server lost: %+v, want rebuild with latest %d and floor %d", got, top, kept)
	}
	held := rob.received()
	rr, err := rob.conn.Rebuild(ctxT(t, 10*time.Second), conv, held)
	if err != nil || rr.Restored != n-kept || rr.Latest != top {
		t.Fatalf("rebuild: %+v, %v; want %d restored, latest %d", rr, err, n-kept, top)
	}
	if rr, err := rob.conn.Rebuild(ctxT(t, 10*time.Second), conv, held); err != nil || rr.Restored != 0 || rr.Latest != top {
		t.Fatalf("rebuild again: %+v, %v; want nothing restored", rr, err)
	}
	if sc, err := rob.conn.Sync(ctxT(t, 10*time.Second), map[string]int64{conv: n}); err != nil || sc.Convs[conv].Rebuild {
		t.Fatalf("sync after the rebuild: %+v, %v; want no rebuild", sc, err)
	}

	// Both sides agree: ria catches up from what she had before the loss
	// and gets rob's copies, and the conversation continues after them.
	// Until the gap has settled (node.SettleWindow after the seeding) she
	// is given nothing above the floor: other clients might still give
	// back messages there.
	var got map[string]protocol.SyncConv
	testenv.WaitFor(t, time.Minute, "the gap to settle", func() bool {
		var err error
		got, err = ria.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{conv: kept})
		if err != nil {
			t.Fatal(err)
		}
		if sc := got[conv]; sc.Settling && (len(sc.Messages) != 0 || sc.Floor != kept) {
			t.Fatalf("ria's sync while the gap settles: %+v, want nothing above floor %d", sc, kept)
		}
		return !got[conv].Settling
	})
	if sc := got[conv]; sc.Rebuild || sc.Latest != top || len(sc.Messages) != n-kept {
		t.Fatalf("ria's sync after the rebuild: %+v", sc)
	}
	for i, m := range got[conv].Messages {
		if want := held[kept+i]; m != want {
			t.Fatalf("seq %d after rebuild is %+v, want %+v", m.Seq, m, want)
		}
	}
	next, err := ria.conn.Chat(ctxT(t, 5*time.Second), "rob", "after the rebuild", "")
	if err != nil || next.Seq != top+1 {
		t.Fatalf("next message: %+v, %v; want seq %d", next, err, top+1)
	}
	testenv.WaitFor(t, 30*time.Second, "MongoDB holds every message once", func() bool { return count() == n+1 })
	if h := allHistory(t, rob, conv); len(h) != n+1 {
		t.Fatalf("history has %d messages, want %d", len(h), n+1)
	}
}
