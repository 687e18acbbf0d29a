package history_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// redisClient connects to the test's Redis at addr and deletes the keys
// under prefix afterwards.
func redisClient(t testing.TB, addr, prefix string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
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

// appendMessages does what a node does with each stored message: XADD it
// to the history stream and keep it in the conversation's pending hash.
func appendMessages(t testing.TB, rdb redis.UniversalClient, prefix string, msgs []protocol.Message) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(msgs); i += 1000 {
		chunk := msgs[i:min(i+1000, len(msgs))]
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, m := range chunk {
				b, err := json.Marshal(m)
				if err != nil {
					return err
				}
				p.HSet(ctx, history.PendingKey(prefix, m.Conv), strconv.FormatInt(m.Seq, 10), b)
				p.XAdd(ctx, &redis.XAddArgs{Stream: history.StreamKey(prefix, m.Conv), Values: []any{history.StreamField, b}})
			}
			return nil
		})
		if err != nil {
			t.Fatalf("append: %v", err)
		}
	}
}

// makeMessages returns n messages spread over convs conversations, seqs
// counting from 1 in each.
func makeMessages(n, convs int, tag string) []protocol.Message {
	out := make([]protocol.Message, n)
	for i := range out {
		c := i % convs
		seq := int64(i/convs + 1)
		out[i] = protocol.Message{
			ID:   fmt.Sprintf("%s-%d-%d", tag, c, seq),
			Conv: fmt.Sprintf("room:%s%d", tag, c), Seq: seq, From: "alice", Room: fmt.Sprintf("%s%d", tag, c),
			Text: fmt.Sprintf("message %d of %s", seq, tag), TS: 1700000000000 + int64(i),
		}
	}
	return out
}

// runWriter runs a Writer until the test ends (or stop is called) and
// checks that Run returns.
func runWriter(t testing.TB, cfg history.WriterConfig) (w *history.Writer, stop func()) {
	t.Helper()
	w, err := history.NewWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(cfg.Block + 10*time.Second):
				t.Errorf("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

// checkStored fails unless the store holds exactly want (in each of its
// conversations, by seq).
func checkStored(t testing.TB, s *history.Store, want []protocol.Message) {
	t.Helper()
	ctx := context.Background()
	byConv := map[string][]protocol.Message{}
	for _, m := range want {
		byConv[m.Conv] = append(byConv[m.Conv], m)
	}
	for conv, ms := range byConv {
		got, err := s.Messages(ctx, conv, 0, 0, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(ms) {
			t.Fatalf("%s holds %d messages, want %d", conv, len(got), len(ms))
		}
		for i := range ms {
			if got[i] != ms[i] {
				t.Fatalf("%s message %d = %+v, want %+v", conv, i, got[i], ms[i])
			}
		}
	}
}

// drained reports whether the stream is empty, nothing is pending in the
// group and no pending hash is left.
func drained(t testing.TB, rdb redis.UniversalClient, prefix string, convs []string) bool {
	t.Helper()
	ctx := context.Background()
	for _, st := range history.StreamKeys(prefix) {
		n, err := rdb.XLen(ctx, st).Result()
		if err != nil || n != 0 {
			return false
		}
		p, err := rdb.XPending(ctx, st, history.Group).Result()
		if err != nil || p.Count != 0 {
			return false
		}
	}
	for _, c := range convs {
		if n, err := rdb.HLen(ctx, history.PendingKey(prefix, c)).Result(); err != nil || n != 0 {
			return false
		}
	}
	return true
}

func convsOf(msgs []protocol.Message) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range msgs {
		if !seen[m.Conv] {
			seen[m.Conv] = true
			out = append(out, m.Conv)
		}
	}
	return out
}

func TestNewWriterValidates(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: deadAddr(t)})
	defer rdb.Close()
	s := &history.Store{}
	for _, cfg := range []history.WriterConfig{
		{Store: s, Consumer: "n1"},
		{Redis: rdb, Consumer: "n1"},
		{Redis: rdb, Store: s},
		{Redis: rdb, Store: s, Consumer: "n1", Batch: -1},
	} {
		if _, err := history.NewWriter(cfg); err == nil {
			t.Errorf("NewWriter(%+v) accepted a bad config", cfg)
		}
	}
	cfg := history.WriterConfig{Redis: rdb, Store: s, Consumer: "n1"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Batch != history.DefaultBatch || cfg.Block != history.DefaultBlock || cfg.ClaimIdle != history.DefaultClaimIdle {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

// TestWriterWritesOnce: two writers run on the stream; every message ends
// up in MongoDB exactly once and the stream and pending hashes are emptied.
func TestWriterWritesOnce(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)

	first := makeMessages(600, 6, "a")
	appendMessages(t, rdb, prefix, first[:300])
	log := &logBuf{}
	var ws []*history.Writer
	for _, name := range []string{"n1", "n2"} {
		w, _ := runWriter(t, history.WriterConfig{
			Redis: rdb, Prefix: prefix, Store: s, Consumer: name, Batch: 50,
			Block: 100 * time.Millisecond, Logger: zerolog.New(log),
		})
		ws = append(ws, w)
	}
	// More arrive while the writers run.
	appendMessages(t, rdb, prefix, first[300:])
	testenv.WaitFor(t, 30*time.Second, "stream and pending hashes drained", func() bool {
		return drained(t, rdb, prefix, convsOf(first))
	})
	if n, err := ws[0].Backlog(context.Background()); err != nil || n != 0 {
		t.Fatalf("Backlog = %d, %v", n, err)
	}
	checkStored(t, s, first)
	var written int64
	for _, w := range ws {
		st := w.Stats()
		written += st.Written
		if st.Malformed != 0 || st.Conflicts != 0 || st.Failures != 0 {
			t.Errorf("stats %+v", st)
		}
	}
	if written != int64(len(first)) {
		t.Errorf("writers wrote %d messages, want %d", written, len(first))
	}
	for _, c := range convsOf(first) {
		if n, err := s.LatestSeq(context.Background(), c); err != nil || n != 100 {
			t.Errorf("LatestSeq(%s) = %d, %v; want 100", c, n, err)
		}
	}
}

// TestWriterRedelivery: entries that a writer read (and maybe wrote) but
// never acknowledged are written again, by the same consumer when it
// restarts and by another once they are idle for ClaimIdle, with no
// duplicate in MongoDB.
func TestWriterRedelivery(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)
	// One conversation: its messages are in one stream.
	msgs := makeMessages(300, 1, "r")
	stream := history.StreamKey(prefix, msgs[0].Conv)
	if err := rdb.XGroupCreateMkStream(ctx, stream, history.Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Half were written before their writer crashed, so MongoDB has them.
	if err := s.UpsertMessages(ctx, msgs[:150]); err != nil {
		t.Fatal(err)
	}
	appendMessages(t, rdb, prefix, msgs)
	// "n1" and "dead" each read entries and crashed without acknowledging.
	for _, c := range []string{"n1", "dead"} {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: history.Group, Consumer: c, Streams: []string{stream, ">"}, Count: 100, Block: -1,
		}).Result()
		if err != nil || len(res[0].Messages) != 100 {
			t.Fatalf("XREADGROUP as %s: %v", c, err)
		}
	}

	// n1 restarts: it writes its own pending entries and the new ones, but
	// leaves dead's alone while they are not idle for ClaimIdle.
	log := &logBuf{}
	_, stop := runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 40,
		Block: 50 * time.Millisecond, ClaimIdle: time.Hour, Logger: zerolog.New(log),
	})
	testenv.WaitFor(t, 30*time.Second, "n1 drained all but dead's entries", func() bool {
		n, err := rdb.XLen(ctx, stream).Result()
		return err == nil && n == 100
	})
	p, err := rdb.XPending(ctx, stream, history.Group).Result()
	if err != nil || p.Count != 100 || p.Consumers["dead"] != 100 {
		t.Fatalf("pending = %+v, %v; want dead's 100", p, err)
	}
	stop()

	// n2 takes over dead's entries once they are idle.
	_, _ = runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n2", Batch: 40,
		Block: 50 * time.Millisecond, ClaimIdle: 100 * time.Millisecond, Logger: zerolog.New(log),
	})
	testenv.WaitFor(t, 30*time.Second, "dead's entries claimed and written", func() bool {
		return drained(t, rdb, prefix, convsOf(msgs))
	})
	checkStored(t, s, msgs)
	if len(log.Lines("took over entries")) == 0 {
		t.Errorf("no claim was logged:\n%s", log)
	}
}

// TestWriterMongoDown: while MongoDB is unreachable nothing is acknowledged
// or deleted; once it is back everything is written, and the outage is
// logged once, not once per attempt.
func TestWriterMongoDown(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	// The writer reaches MongoDB through a proxy the test can cut; the
	// check store talks to it directly.
	uri := testenv.Mongo(t)
	check := openStoreAt(t, uri, ns)
	px := testenv.NewProxy(t, hostPort(t, uri))
	s := openStoreAt(t, "mongodb://"+px.Addr()+"/", ns)

	log := &logBuf{}
	w, _ := runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 100,
		Block: 50 * time.Millisecond, Logger: zerolog.New(log),
	})
	before := makeMessages(20, 2, "b")
	appendMessages(t, rdb, prefix, before)
	testenv.WaitFor(t, 30*time.Second, "first messages written", func() bool {
		return drained(t, rdb, prefix, convsOf(before))
	})

	px.Cut()
	during := makeMessages(50, 5, "d")
	appendMessages(t, rdb, prefix, during)
	testenv.WaitFor(t, 60*time.Second, "three failed write attempts", func() bool {
		return w.Stats().Failures >= 3
	})
	// Nothing was acknowledged, deleted or written.
	if n, err := w.Backlog(ctx); err != nil || n != 50 {
		t.Fatalf("Backlog while MongoDB is down = %d, %v; want 50", n, err)
	}
	// The batch being retried is delivered but not acknowledged (it may be
	// only the first entry: a blocked read returns as soon as one arrives).
	var pending int64
	for _, st := range history.StreamKeys(prefix) {
		p, err := rdb.XPending(ctx, st, history.Group).Result()
		if err != nil {
			t.Fatal(err)
		}
		pending += p.Count
	}
	if pending < 1 || pending > 50 {
		t.Fatalf("pending while MongoDB is down = %d; want 1 to 50", pending)
	}
	for _, c := range convsOf(during) {
		if n, _ := rdb.HLen(ctx, history.PendingKey(prefix, c)).Result(); n != 10 {
			t.Fatalf("pending hash of %s has %d fields, want 10", c, n)
		}
		if got, _ := check.Messages(ctx, c, 0, 0, 0, false); len(got) != 0 {
			t.Fatalf("%s was written while MongoDB was unreachable", c)
		}
	}

	px.Restore()
	testenv.WaitFor(t, 60*time.Second, "backlog written after MongoDB came back", func() bool {
		return drained(t, rdb, prefix, convsOf(during))
	})
	checkStored(t, check, append(before, during...))
	if n := len(log.Lines("MongoDB write failed")); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, log)
	}
	if l := log.Lines("MongoDB write is back", `"written":`); len(l) != 1 {
		t.Errorf("want one recovery line with the count written:\n%s", log)
	}
}

// TestWriterRedisTrouble: dropped Redis connections and a Redis that lost
// the stream and its group (as after a restart without persistence) do
// not stop the writer.
func TestWriterRedisTrouble(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	direct := redisClient(t, testenv.Redis(t), prefix)
	px := testenv.NewProxy(t, testenv.Redis(t))
	rdb := redis.NewClient(&redis.Options{Addr: px.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	s := openStore(t)

	log := &logBuf{}
	runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 100,
		Block: 50 * time.Millisecond, Logger: zerolog.New(log),
	})
	one := makeMessages(30, 3, "x")
	appendMessages(t, direct, prefix, one)
	testenv.WaitFor(t, 30*time.Second, "first batch written", func() bool {
		return drained(t, direct, prefix, convsOf(one))
	})

	// Redis goes away for a while.
	px.Cut()
	testenv.WaitFor(t, 30*time.Second, "the writer noticed Redis is gone", func() bool {
		return len(log.Lines("Redis failed")) > 0
	})
	two := makeMessages(30, 3, "y")
	appendMessages(t, direct, prefix, two)
	px.Restore()
	testenv.WaitFor(t, 30*time.Second, "written after Redis came back", func() bool {
		return drained(t, direct, prefix, convsOf(two))
	})
	if len(log.Lines("Redis is back")) == 0 {
		t.Errorf("recovery not logged:\n%s", log)
	}

	// The stream and its group vanish.
	for _, st := range history.StreamKeys(prefix) {
		if err := direct.Del(ctx, st).Err(); err != nil {
			t.Fatal(err)
		}
	}
	three := makeMessages(30, 3, "z")
	appendMessages(t, direct, prefix, three)
	testenv.WaitFor(t, 30*time.Second, "written after the group was recreated", func() bool {
		return drained(t, direct, prefix, convsOf(three))
	})
	checkStored(t, s, append(append(one, two...), three...))
}

// TestWriterMalformed: entries that are not messages are dropped (and
// logged) without holding up the good ones.
func TestWriterMalformed(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)
	good := makeMessages(10, 1, "g")
	stream := history.StreamKey(prefix, good[0].Conv)
	appendMessages(t, rdb, prefix, good[:5])
	for _, vals := range [][]any{
		{history.StreamField, "{not json"},
		{"other", "field"},
		{history.StreamField, `{"conv":"room:g0","seq":99,"text":"no id"}`},
		{history.StreamField, `{"id":"x","conv":"room:g0","seq":0}`},
	} {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: vals}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	appendMessages(t, rdb, prefix, good[5:])

	log := &logBuf{}
	w, _ := runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 3,
		Block: 50 * time.Millisecond, Logger: zerolog.New(log),
	})
	testenv.WaitFor(t, 30*time.Second, "all entries consumed", func() bool {
		return drained(t, rdb, prefix, convsOf(good))
	})
	checkStored(t, s, good)
	if st := w.Stats(); st.Malformed != 4 || st.Written != 10 {
		t.Errorf("stats = %+v, want 4 malformed, 10 written", st)
	}
	if n := len(log.Lines("malformed")); n != 4 {
		t.Errorf("%d malformed entries logged, want 4:\n%s", n, log)
	}
}

// TestWriterLease: of two writers, the one holding the lease writes
// everything while the other stands by; a writer that stops gives the
// lease up and the other takes over at once; a lease held by a writer that
// died passes on once it lapses.
func TestWriterLease(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)
	log := &logBuf{}
	cfg := func(name string) history.WriterConfig {
		return history.WriterConfig{
			Redis: rdb, Prefix: prefix, Store: s, Consumer: name, Batch: 50,
			Block: 50 * time.Millisecond, Lease: 2 * time.Second, Logger: zerolog.New(log),
		}
	}
	msgs := makeMessages(300, 4, "l")
	w1, stop1 := runWriter(t, cfg("n1"))
	testenv.WaitFor(t, 10*time.Second, "n1 holds the lease", w1.Active)
	w2, _ := runWriter(t, cfg("n2"))
	appendMessages(t, rdb, prefix, msgs[:100])
	testenv.WaitFor(t, 30*time.Second, "first messages written", func() bool {
		return drained(t, rdb, prefix, convsOf(msgs))
	})
	testenv.WaitFor(t, 10*time.Second, "n2 stands by", func() bool {
		return len(log.Lines(`"consumer":"n2"`, "standing by")) == 1
	})
	if st := w2.Stats(); st.Written != 0 || w2.Active() {
		t.Fatalf("the writer without the lease wrote %d messages (active %v)", st.Written, w2.Active())
	}

	stop1()
	if n, err := rdb.Exists(ctx, history.LeaseKey(prefix)).Result(); err != nil || n != 0 {
		t.Fatalf("n1 stopped but its lease is still there (%d, %v)", n, err)
	}
	testenv.WaitFor(t, 5*time.Second, "n2 takes over the lease n1 gave up", w2.Active)
	appendMessages(t, rdb, prefix, msgs[100:200])
	testenv.WaitFor(t, 30*time.Second, "messages written by n2", func() bool {
		return drained(t, rdb, prefix, convsOf(msgs))
	})

	// Another writer takes the lease and dies with it.
	if err := rdb.Set(ctx, history.LeaseKey(prefix), "ghost", 1500*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "n2 notices it lost the lease", func() bool { return !w2.Active() })
	appendMessages(t, rdb, prefix, msgs[200:])
	testenv.WaitFor(t, 30*time.Second, "n2 takes the lapsed lease and writes the rest", func() bool {
		return w2.Active() && drained(t, rdb, prefix, convsOf(msgs))
	})
	checkStored(t, s, msgs)
	if st := w1.Stats(); st.Written != 100 {
		t.Errorf("n1 wrote %d messages, want 100", st.Written)
	}
	if st := w2.Stats(); st.Written != 200 {
		t.Errorf("n2 wrote %d messages, want 200", st.Written)
	}
	if n := len(log.Lines(`"consumer":"n2"`, "history writer active")); n != 2 {
		t.Errorf("n2 logged becoming active %d times, want 2:\n%s", n, log)
	}
}

// TestWriterStoresEntryJSON: the writer stores the JSON of each entry as
// the node wrote it, unless it is not valid UTF-8 (a BSON string must be):
// then the decoded message, encoded again.
func TestWriterStoresEntryJSON(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)
	const conv = "room:raw"
	raws := []string{
		`{"id":"r1","conv":"room:raw","seq":1,"from":"amy","room":"raw","text":"hi","ts":5,"later":"a field of a later build"}`,
		"{\"id\":\"r2\",\"conv\":\"room:raw\",\"seq\":2,\"from\":\"amy\",\"room\":\"raw\",\"text\":\"bad \xff byte\",\"ts\":6}",
	}
	for _, r := range raws {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: history.StreamKey(prefix, conv), Values: []any{history.StreamField, r}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	runWriter(t, history.WriterConfig{Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Block: 50 * time.Millisecond, Logger: zerolog.Nop()})
	testenv.WaitFor(t, 30*time.Second, "entries written", func() bool { return drained(t, rdb, prefix, []string{conv}) })
	got, err := s.Messages(ctx, conv, 0, 0, 0, false)
	if err != nil || len(got) != 2 || got[0].Text != "hi" || got[1].Text != "bad \uFFFD byte" {
		t.Fatalf("Messages = %+v, %v", got, err)
	}
	chunks := chunksOf(t, mongoClient(t).Database(ns), conv)
	if len(chunks) != 1 || len(chunks[0].Msgs) != 2 || chunks[0].Msgs[0] != raws[0] || !utf8.ValidString(chunks[0].Msgs[1]) {
		t.Fatalf("stored %+v", chunks)
	}
}

// On a Redis Cluster the writer drains every shard's stream, wherever
// its master is, and removes the pending fields from their slots.
func TestWriterOnRedisCluster(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rc := testenv.StartRedisCluster(t, false)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
	t.Cleanup(func() { rdb.Close() })
	s := openStoreAt(t, testenv.Mongo(t), ns)

	msgs := makeMessages(2000, 97, "k")
	appendMessages(t, rdb, prefix, msgs)
	used := map[string]bool{}
	for _, st := range history.StreamKeys(prefix) {
		if n, err := rdb.XLen(ctx, st).Result(); err == nil && n > 0 {
			used[st] = true
		}
	}
	if len(used) < len(history.StreamKeys(prefix))/2 {
		t.Fatalf("97 conversations went to %d streams only", len(used))
	}
	w, _ := runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 500,
		Block: 20 * time.Millisecond, Logger: zerolog.Nop(),
	})
	testenv.WaitFor(t, 60*time.Second, "every stream drained", func() bool {
		return drained(t, rdb, prefix, convsOf(msgs))
	})
	checkStored(t, s, msgs)
	if n, err := w.Backlog(ctx); err != nil || n != 0 {
		t.Fatalf("Backlog = %d, %v", n, err)
	}
}
