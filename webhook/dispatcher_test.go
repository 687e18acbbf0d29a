package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/keyspace"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Every event reaches every endpoint that wants it, signed with that
// endpoint's secret, once; the queue is trimmed once all are done.
func TestDispatcherDelivers(t *testing.T) {
	prefix := testenv.Namespace(t) + ":"
	testDelivers(t, redisClient(t, prefix), prefix)
}

// The same on a Redis Cluster: every script and transaction keeps to one
// slot, and the shards' streams spread over the masters.
func TestDispatcherDeliversOnRedisCluster(t *testing.T) {
	rc := testenv.StartRedisCluster(t, false)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
	t.Cleanup(func() { rdb.Close() })
	testDelivers(t, rdb, testenv.Namespace(t)+":")
	masters := map[string]bool{}
	for _, st := range StreamKeys("x:") {
		masters[fmt.Sprint(rc.KeySlot(t, st)*3/16384)] = true
	}
	if len(masters) != 3 {
		t.Fatalf("the queue's streams are on %d of the 3 masters' slot ranges", len(masters))
	}
}

func testDelivers(t *testing.T, rdb redis.UniversalClient, prefix string) {
	all := newReceiver(t, testSecret)
	otherSecret := []byte("another-secret-0123456789")
	logins := newReceiver(t, otherSecret)
	cfg := fastConfig(
		Endpoint{Name: "all", URL: all.srv.URL, Secret: testSecret},
		Endpoint{Name: "logins", URL: logins.srv.URL, Secret: otherSecret, Events: []string{UserLogin}},
	)
	d, _ := runDispatcher(t, dispatcherConfig(rdb, prefix, "n1", &logBuf{}, cfg))

	msgs := messages(300, 40, "d")
	queueMessages(t, rdb, prefix, msgs...)
	em, err := NewEmitter(EmitterConfig{Redis: rdb, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go em.Run(ctx)
	em.Emit(UserLogin, "amy", 11, SessionData{User: "amy", Node: "n1", SessionID: "c1"})
	em.Emit(UserLogout, "amy", 12, SessionData{User: "amy", Node: "n1", SessionID: "c1"})

	testenv.WaitFor(t, 30*time.Second, "every event at both endpoints", func() bool {
		return len(all.events()) == len(msgs)+2 && len(logins.events()) == 1
	})
	got := all.events()
	for _, m := range msgs {
		ev, ok := got["m-"+m.ID]
		if !ok || ev.Type != MessageStored || ev.TS != m.TS {
			t.Fatalf("event of %s: %+v", m.ID, ev)
		}
		var data struct {
			Message protocol.Message `json:"message"`
		}
		if err := json.Unmarshal(ev.Data, &data); err != nil || data.Message != m {
			t.Fatalf("data of %s: %s (%v)", m.ID, ev.Data, err)
		}
	}
	for _, ev := range logins.events() {
		var s SessionData
		if err := json.Unmarshal(ev.Data, &s); err != nil || ev.Type != UserLogin || ev.TS != 11 || s != (SessionData{User: "amy", Node: "n1", SessionID: "c1"}) {
			t.Fatalf("login event %+v (%s): %v", ev, ev.Data, err)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "the queue trimmed", func() bool { return queueLen(t, rdb, prefix) == 0 })
	st := d.Stats()
	if st[0].Delivered != int64(len(msgs)+2) || st[1].Delivered != 1 || st[0].Failed != 0 || st[0].Dead != 0 || !st[0].Up {
		t.Fatalf("stats %+v", st)
	}
	if all.dups != 0 || logins.dups != 0 {
		t.Fatalf("events delivered twice: %d, %d", all.dups, logins.dups)
	}
	if b, err := d.Backlog(context.Background()); err != nil || b["all"] != 0 || b["logins"] != 0 {
		t.Fatalf("Backlog = %v, %v", b, err)
	}
}

// An endpoint that is down gets its events once it is up again, with the
// ones queued meanwhile; another endpoint is not held back; the outage is
// logged once as failing and once as recovered.
func TestDispatcherRetriesUntilTheEndpointIsBack(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	rdb := redisClient(t, prefix)
	down := newReceiver(t, testSecret)
	down.status.Store(http.StatusServiceUnavailable)
	up := newReceiver(t, testSecret)
	cfg := fastConfig(
		Endpoint{Name: "down", URL: down.srv.URL, Secret: testSecret},
		Endpoint{Name: "up", URL: up.srv.URL, Secret: testSecret},
	)
	cfg.Attempts, cfg.Held = 1000, 16
	log := &logBuf{}
	d, _ := runDispatcher(t, dispatcherConfig(rdb, prefix, "n1", log, cfg))

	first := messages(50, 5, "before")
	queueMessages(t, rdb, prefix, first...)
	testenv.WaitFor(t, 30*time.Second, "the healthy endpoint has every event", func() bool { return up.has(ids(first)...) })
	testenv.WaitFor(t, 30*time.Second, "the endpoint that is down tried again", func() bool { return d.Stats()[0].Retried >= 20 })
	if len(down.events()) != 0 {
		t.Fatal("an endpoint answering 503 was counted as having taken events")
	}
	b, err := d.Backlog(context.Background())
	if err != nil || b["down"] != int64(len(first)) {
		t.Fatalf("Backlog = %v, %v; want %d for down", b, err, len(first))
	}
	if s := d.Stats()[0]; s.Up || s.Delivered != 0 || s.Failed == 0 {
		t.Fatalf("stats of the endpoint that is down: %+v", s)
	}

	later := messages(50, 5, "during")
	queueMessages(t, rdb, prefix, later...)
	testenv.WaitFor(t, 30*time.Second, "the healthy endpoint has the later events", func() bool { return up.has(ids(later)...) })
	down.status.Store(http.StatusOK)
	testenv.WaitFor(t, 30*time.Second, "the endpoint that was down has every event", func() bool {
		return down.has(ids(first)...) && down.has(ids(later)...)
	})
	if n := log.count("webhook endpoint failing"); n != 1 {
		t.Errorf("%d lines say the endpoint is failing, want 1:\n%s", n, log)
	}
	testenv.WaitFor(t, 10*time.Second, "the recovery logged", func() bool { return log.count("webhook endpoint recovered") == 1 })
	if s := d.Stats()[0]; !s.Up || s.Delivered != int64(len(first)+len(later)) || s.Dead != 0 {
		t.Fatalf("stats after the recovery: %+v", s)
	}
	var retried bool
	for _, n := range down.attempts {
		retried = retried || n > 1
	}
	if !retried {
		t.Fatalf("no delivery says it is an attempt after the first: %v", down.attempts)
	}
}

// An event the endpoint never takes is dead-lettered after the attempts
// allowed, with a log line, and acknowledged.
func TestDispatcherDeadLetters(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, prefix)
	rcv := newReceiver(t, testSecret)
	rcv.status.Store(http.StatusBadRequest)
	cfg := fastConfig(Endpoint{Name: "picky", URL: rcv.srv.URL, Secret: testSecret})
	cfg.Attempts = 3
	log := &logBuf{}
	d, _ := runDispatcher(t, dispatcherConfig(rdb, prefix, "n1", log, cfg))
	msgs := messages(2, 2, "x")
	queueMessages(t, rdb, prefix, msgs...)

	testenv.WaitFor(t, 30*time.Second, "two dead letters", func() bool {
		n, err := rdb.XLen(ctx, DeadKey(prefix)).Result()
		return err == nil && n == 2
	})
	dead, err := rdb.XRange(ctx, DeadKey(prefix), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range dead {
		v := e.Values
		var ev Event
		if err := json.Unmarshal([]byte(v["event"].(string)), &ev); err != nil || v["id"] != ev.ID || v["type"] != MessageStored ||
			v["endpoint"] != "picky" || v["attempts"] != "3" || !strings.Contains(v["error"].(string), "400 Bad Request") ||
			strings.Contains(v["url"].(string), "?") {
			t.Fatalf("dead letter %v (%v)", v, err)
		}
	}
	if rcv.calls.Load() != 6 {
		t.Errorf("%d attempts, want 3 per event", rcv.calls.Load())
	}
	testenv.WaitFor(t, 10*time.Second, "both dead letters logged and counted", func() bool {
		return log.count("webhook event dead-lettered") == 2 && d.Stats()[0].Dead == 2
	})
	testenv.WaitFor(t, 10*time.Second, "nothing pending", func() bool {
		for _, st := range StreamKeys(prefix) {
			p, err := rdb.XPending(ctx, st, GroupName("picky")).Result()
			if err != nil || p.Count != 0 {
				return false
			}
		}
		return true
	})
	if s := d.Stats()[0]; s.Failed != 6 || s.Retried != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// One dispatcher at a time delivers; when it stops with events pending,
// the one standing by takes the lease and, once they are idle, the
// events.
func TestDispatcherFailover(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	rdb := redisClient(t, prefix)
	rcv := newReceiver(t, testSecret)
	rcv.status.Store(http.StatusServiceUnavailable)
	cfg := fastConfig(Endpoint{Name: "e", URL: rcv.srv.URL, Secret: testSecret})
	cfg.Attempts = 1000
	logA, logB := &logBuf{}, &logBuf{}
	a, stopA := runDispatcher(t, dispatcherConfig(rdb, prefix, "a", logA, cfg))
	testenv.WaitFor(t, 10*time.Second, "a active", a.Active)
	b, _ := runDispatcher(t, dispatcherConfig(rdb, prefix, "b", logB, cfg))
	testenv.WaitFor(t, 10*time.Second, "b standing by", func() bool { return logB.count("standing by") == 1 })

	msgs := messages(20, 4, "f")
	queueMessages(t, rdb, prefix, msgs...)
	testenv.WaitFor(t, 30*time.Second, "a holds every event", func() bool {
		n := int64(0)
		for _, st := range StreamKeys(prefix) {
			p, err := rdb.XPending(context.Background(), st, GroupName("e")).Result()
			if err != nil {
				return false
			}
			n += p.Consumers["a"]
		}
		return n == int64(len(msgs))
	})
	if b.Active() || b.Stats()[0].Failed != 0 {
		t.Fatal("the dispatcher standing by delivers")
	}
	stopA()
	rcv.status.Store(http.StatusOK)
	testenv.WaitFor(t, 30*time.Second, "b delivers what a held", func() bool { return rcv.has(ids(msgs)...) })
	if !b.Active() || a.Active() {
		t.Fatalf("active: a %v, b %v", a.Active(), b.Active())
	}
	if logB.count("took over webhook events") == 0 {
		t.Errorf("b did not log the take-over:\n%s", logB)
	}
}

// Run returns once its context ends, and leaves no goroutine behind, also
// with deliveries in flight.
func TestDispatcherStopsItsGoroutines(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	rdb := redisClient(t, prefix)
	hang := make(chan struct{})
	var started atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hang) }) // first: the server waits for its handlers
	cfg := fastConfig(Endpoint{Name: "slow", URL: srv.URL, Secret: testSecret}, Endpoint{Name: "slow2", URL: srv.URL, Secret: testSecret})
	cfg.Timeout = time.Minute
	d, stop := runDispatcher(t, dispatcherConfig(rdb, prefix, "n1", &logBuf{}, cfg))
	testenv.WaitFor(t, 10*time.Second, "active", d.Active)
	queueMessages(t, rdb, prefix, messages(20, 20, "g")...)
	testenv.WaitFor(t, 10*time.Second, "every worker has a delivery in flight", func() bool {
		return started.Load() == 2*DefaultConcurrency
	})
	start := time.Now()
	stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v to return", took)
	}
	testenv.WaitFor(t, 10*time.Second, "no goroutine of the dispatcher left", func() bool { return ownGoroutines() == 0 })
	if n, err := rdb.Exists(context.Background(), LeaseKey(prefix)).Result(); err != nil || n != 0 {
		t.Fatalf("the lease is still held after Run returned (%d, %v)", n, err)
	}
}

// Events an endpoint had not read when the queue's cap went past them are
// counted as lost, and the rest is delivered.
func TestDispatcherCountsWhatTheCapDropped(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, prefix)
	rcv := newReceiver(t, testSecret)
	rcv.status.Store(http.StatusServiceUnavailable)
	cfg := fastConfig(Endpoint{Name: "late", URL: rcv.srv.URL, Secret: testSecret})
	cfg.Held, cfg.Attempts = 5, 1000
	log := &logBuf{}
	d, _ := runDispatcher(t, dispatcherConfig(rdb, prefix, "n1", log, cfg))
	// One conversation: one stream, 100 events.
	msgs := messages(100, 1, "c")
	queueMessages(t, rdb, prefix, msgs...)
	stream := StreamKeys(prefix)[keyspace.Shard(msgs[0].Conv)]
	testenv.WaitFor(t, 30*time.Second, "the endpoint that is down holds 5", func() bool {
		p, err := rdb.XPending(ctx, stream, GroupName("late")).Result()
		return err == nil && p.Count == 5
	})
	// The cap keeps the last 10: 85 events the endpoint had not read go.
	if err := rdb.XTrimMaxLen(ctx, stream, 10).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the loss counted", func() bool { return d.Stats()[0].Dropped == 85 })
	if b, err := d.Backlog(ctx); err != nil || b["late"] != 15 {
		t.Fatalf("Backlog = %v, %v; want the 5 held and the 10 left", b, err)
	}
	rcv.status.Store(http.StatusOK)
	testenv.WaitFor(t, 30*time.Second, "the held 5 and the last 10 delivered", func() bool {
		return rcv.has(ids(msgs[:5])...) && rcv.has(ids(msgs[90:])...)
	})
	testenv.WaitFor(t, 10*time.Second, "nothing left", func() bool { return queueLen(t, rdb, prefix) == 0 })
	if n := len(rcv.events()); n != 15 {
		t.Fatalf("%d events delivered, want 15", n)
	}
	if n := log.count("events this endpoint had not read were dropped"); n != 1 {
		t.Fatalf("the loss is logged %d times, want once:\n%s", n, log)
	}
}

// Without Prepare (no dispatcher ever ran) the nodes queue nothing.
func TestEmitterQueuesOnlyForEndpoints(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, prefix)
	em, err := NewEmitter(EmitterConfig{Redis: rdb, Prefix: prefix, Buffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: the buffer of 4 fills, the rest is dropped.
	for range 6 {
		em.Emit(UserLogin, "amy", 1, SessionData{User: "amy"})
	}
	if s := em.Stats(); s.Dropped != 2 {
		t.Fatalf("stats %+v, want 2 dropped", s)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); em.Run(rctx) }()
	testenv.WaitFor(t, 10*time.Second, "the buffer sent", func() bool { return em.Stats().Queued == 4 })
	if n := queueLen(t, rdb, prefix); n != 0 {
		t.Fatalf("%d events queued with no endpoint anywhere", n)
	}
	for _, st := range StreamKeys(prefix) {
		if n, _ := rdb.Exists(ctx, st).Result(); n != 0 {
			t.Fatalf("%s was created", st)
		}
	}
	// Once a dispatcher prepared the queue, events go to the user's shard.
	d, err := NewDispatcher(dispatcherConfig(rdb, prefix, "n1", &logBuf{}, fastConfig(Endpoint{URL: "http://127.0.0.1:1/", Secret: testSecret})))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	em.Emit(UserLogout, "amy", 2, SessionData{User: "amy"})
	testenv.WaitFor(t, 10*time.Second, "the logout queued", func() bool { return queueLen(t, rdb, prefix) == 1 })
	cancel()
	<-done
	// After Run: Flush sends what came since.
	em.Emit(UserLogout, "amy", 3, SessionData{User: "amy"})
	em.Flush(ctx)
	if n := queueLen(t, rdb, prefix); n != 2 {
		t.Fatalf("%d queued after Flush, want 2", n)
	}
	res, err := rdb.XRevRangeN(ctx, StreamKeys(prefix)[shardOfUser("amy")], "+", "-", 1).Result()
	if err != nil || len(res) != 1 {
		t.Fatalf("the user's shard holds %v, %v", res, err)
	}
	var ev Event
	if err := json.Unmarshal([]byte(res[0].Values[fieldEvent].(string)), &ev); err != nil || ev.Type != UserLogout || ev.TS != 3 || !strings.HasPrefix(ev.ID, "e-") {
		t.Fatalf("queued %v: %v", res[0].Values, err)
	}
}
