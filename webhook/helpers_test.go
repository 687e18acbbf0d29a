package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/internal/keyspace"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// redisClient connects to the test's Redis and deletes the keys under
// prefix afterwards.
func redisClient(t testing.TB, prefix string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t), MaxRetries: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var keys []string
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb
}

// logBuf collects log lines; safe for concurrent writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many lines hold s.
func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// receiver is a webhook endpoint that checks every delivery's signature
// and headers, answers status (200 unless set), and keeps each event once
// by id.
type receiver struct {
	t      testing.TB
	secret []byte
	srv    *httptest.Server
	status atomic.Int32
	calls  atomic.Int64 // every request

	mu       sync.Mutex
	got      map[string]Event // taken (2xx), by id
	order    []string         // ids, in the order first taken
	attempts map[string]int   // highest X-Chat-Attempt seen, by id
	dups     int              // events taken again (a redelivery)
}

func newReceiver(t testing.TB, secret []byte) *receiver {
	r := &receiver{t: t, secret: secret, got: map[string]Event{}, attempts: map[string]int{}}
	r.status.Store(http.StatusOK)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.calls.Add(1)
	body, _ := io.ReadAll(req.Body)
	if err := Verify(r.secret, req.Header.Get(HeaderSignature), body, DefaultTolerance, time.Now()); err != nil {
		r.t.Errorf("delivery with a bad signature: %v", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.Type == "" {
		r.t.Errorf("delivery %s: %v", body, err)
	}
	if req.Header.Get(HeaderEventID) != ev.ID || req.Header.Get(HeaderEventType) != ev.Type || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("delivery of %s has headers %v", ev.ID, req.Header)
	}
	n, _ := strconv.Atoi(req.Header.Get(HeaderAttempt))
	status := int(r.status.Load())
	r.mu.Lock()
	r.attempts[ev.ID] = max(r.attempts[ev.ID], n)
	if status/100 == 2 {
		if _, ok := r.got[ev.ID]; ok {
			r.dups++
		} else {
			r.got[ev.ID] = ev
			r.order = append(r.order, ev.ID)
		}
	}
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *receiver) events() map[string]Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Event, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

func (r *receiver) has(ids ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.got[id]; !ok {
			return false
		}
	}
	return true
}

// queueMessages adds messages to the queue as the history writer forwards
// them, each to its conversation's shard, to streams that exist.
func queueMessages(t testing.TB, rdb redis.UniversalClient, prefix string, msgs ...protocol.Message) {
	t.Helper()
	keys := StreamKeys(prefix)
	ctx := context.Background()
	for _, m := range msgs {
		b, _ := json.Marshal(m)
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys[keyspace.Shard(m.Conv)], NoMkStream: true, Values: []any{fieldMessage, b}}).Err(); err != nil {
			t.Fatalf("queue %s: %v", m.ID, err)
		}
	}
}

// messages returns n messages over convs room conversations.
func messages(n, convs int, tag string) []protocol.Message {
	out := make([]protocol.Message, n)
	for i := range out {
		room := tag + strconv.Itoa(i%convs)
		out[i] = protocol.Message{ID: tag + "-" + strconv.Itoa(i), Conv: protocol.RoomConv(room), Seq: int64(i/convs + 1),
			From: "amy", Room: room, Text: "hello " + strconv.Itoa(i), TS: 1767225600000 + int64(i)}
	}
	return out
}

func ids(msgs []protocol.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = "m-" + m.ID
	}
	return out
}

// fastConfig is a Config with short waits, for tests.
func fastConfig(eps ...Endpoint) Config {
	return Config{
		Endpoints: eps, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, Timeout: 2 * time.Second,
		Poll: 20 * time.Millisecond, Lease: time.Second, ClaimIdle: 500 * time.Millisecond,
	}
}

// runDispatcher prepares and runs a Dispatcher until the test ends (or
// stop is called), and checks that Run returns.
func runDispatcher(t testing.TB, cfg DispatcherConfig) (d *Dispatcher, stop func()) {
	t.Helper()
	d, err := NewDispatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return within 15s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return d, stop
}

func dispatcherConfig(rdb redis.UniversalClient, prefix, consumer string, log io.Writer, c Config) DispatcherConfig {
	return DispatcherConfig{Config: c, Redis: rdb, Prefix: prefix, Consumer: consumer, Logger: zerolog.New(log)}
}

// queueLen returns the entries left in the queue streams.
func queueLen(t testing.TB, rdb redis.UniversalClient, prefix string) int64 {
	t.Helper()
	var n int64
	for _, st := range StreamKeys(prefix) {
		k, err := rdb.XLen(context.Background(), st).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	return n
}

// shardOfUser is the shard the events of user go to.
func shardOfUser(user string) int { return keyspace.Shard("user:" + user) }

// ownGoroutines counts the goroutines running code of the dispatcher or
// the emitter.
func ownGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "chatcluster/webhook.(*") || strings.Contains(g, "chatcluster/webhook.send") {
			if !strings.Contains(g, "ownGoroutines") && !strings.Contains(g, "webhook.(*receiver)") {
				n++
			}
		}
	}
	return n
}
