package leader

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type placed map[string]string

func (p placed) place(u string) []string {
	if n, ok := p[u]; ok {
		return []string{n}
	}
	return nil
}

type pushLog []string

func (l *pushLog) push(node, user string, p parkedPush) {
	*l = append(*l, node+"/"+user+"/"+p.conv+"/"+string(p.push))
}

// A push for a user the leader can place goes at once; one for a user it
// cannot is parked and delivered, in order and before what follows, when
// the user appears.
func TestParkingDeliversWhenTheUserAppears(t *testing.T) {
	k := NewParking(prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
	where := placed{"bob": "n2"}
	var got pushLog
	k.route("bob", parkedPush{conv: "dm:a:b", push: []byte("1")}, where.place, got.push)
	k.route("carol", parkedPush{conv: "dm:a:c", push: []byte("2")}, where.place, got.push)
	k.route("carol", parkedPush{conv: "dm:a:c", push: []byte("3")}, where.place, got.push)
	if len(got) != 1 || got[0] != "n2/bob/dm:a:b/1" {
		t.Fatalf("pushed %v, want only bob's", got)
	}
	k.appeared("carol", where.place, got.push) // not placed yet: stays parked
	if len(got) != 1 || k.n.Load() != 2 {
		t.Fatalf("pushed %v with %d parked, want carol's 2 parked", got, k.n.Load())
	}
	where["carol"] = "n3"
	k.route("carol", parkedPush{conv: "dm:a:c", push: []byte("4")}, where.place, got.push)
	want := []string{"n2/bob/dm:a:b/1", "n3/carol/dm:a:c/2", "n3/carol/dm:a:c/3", "n3/carol/dm:a:c/4"}
	if len(got) != len(want) {
		t.Fatalf("pushed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pushed %v, want %v", got, want)
		}
	}
	if k.n.Load() != 0 || len(k.users) != 0 {
		t.Fatalf("%d still parked", k.n.Load())
	}
}

// What is parked for a user who does not appear expires (they get it by
// sync), counted; parking is bounded.
func TestParkingExpiresAndIsBounded(t *testing.T) {
	expired := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	k := NewParking(expired)
	none := placed{}
	var got pushLog
	for range parkMax + 5 {
		k.route("dave", parkedPush{conv: "dm:a:d", push: []byte("x")}, none.place, got.push)
	}
	if n := k.n.Load(); n != parkMax {
		t.Fatalf("%d parked, want the bound %d", n, parkMax)
	}
	if n := testutil.ToFloat64(expired); n != 5 {
		t.Fatalf("%v counted as not parked, want 5", n)
	}
	k.expire(time.Now())
	if k.n.Load() != parkMax {
		t.Fatal("pushes expired before their time")
	}
	k.expire(time.Now().Add(parkFor + time.Millisecond))
	if k.n.Load() != 0 || len(k.users) != 0 || testutil.ToFloat64(expired) != parkMax+5 {
		t.Fatalf("after expiry %d parked, %v expired", k.n.Load(), testutil.ToFloat64(expired))
	}
	k.appeared("dave", placed{"dave": "n1"}.place, got.push)
	if len(got) != 0 {
		t.Fatalf("expired pushes delivered: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k.ExpireLoop(ctx) // returns once its context ends
}

// What is parked for a user goes out before anything routed to them while
// it is being handed over: a push routed meanwhile waits for the lock
// instead of overtaking (a connection drops a push below one it already
// got as a repeat).
func TestParkingKeepsOrderWhileFlushing(t *testing.T) {
	k := NewParking(prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
	var mu sync.Mutex
	var placed atomic.Bool
	place := func(string) []string {
		if placed.Load() {
			return []string{"n2"}
		}
		return nil
	}
	var got []int64
	flushing := make(chan struct{})
	push := func(_, _ string, p parkedPush) {
		mu.Lock()
		got = append(got, p.seq)
		if len(got) == 1 {
			close(flushing)
		}
		mu.Unlock()
		runtime.Gosched()
	}
	const parked, more = 200, 200
	for i := range parked {
		k.route("lu", parkedPush{conv: "dm:kai:lu", seq: int64(i + 1)}, place, push)
	}
	placed.Store(true)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); k.appeared("lu", place, push) }()
	go func() {
		defer wg.Done()
		<-flushing
		for i := range more {
			k.route("lu", parkedPush{conv: "dm:kai:lu", seq: int64(parked + i + 1)}, place, push)
		}
	}()
	wg.Wait()
	if len(got) != parked+more {
		t.Fatalf("%d pushes, want %d", len(got), parked+more)
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatalf("seq %d pushed after %d", got[i], got[i-1])
		}
	}
}
