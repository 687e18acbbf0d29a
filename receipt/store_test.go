package receipt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/chatlog"
	"chatcluster/history"
	"chatcluster/internal/keyspace"
	"chatcluster/internal/testenv"
)

type posKey struct{ conv, user string }

// fakeDurable is a durable copy in memory that counts its lookups and can
// be made to fail.
type fakeDurable struct {
	mu      sync.Mutex
	stored  map[posKey]int64
	lookups int
	writes  [][]Position
	tries   int // writes asked for, failed ones included
	fail    error
}

func newFake() *fakeDurable { return &fakeDurable{stored: map[posKey]int64{}} }

func (f *fakeDurable) ReadPositions(_ context.Context, ps []Position) ([]Position, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups += len(ps)
	if f.fail != nil {
		return nil, f.fail
	}
	out := make([]Position, len(ps))
	for i, p := range ps {
		out[i] = Position{Conv: p.Conv, User: p.User, Seq: f.stored[posKey{p.Conv, p.User}]}
	}
	return out, nil
}

func (f *fakeDurable) SaveReadPositions(_ context.Context, ps []Position) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries++
	if f.fail != nil {
		return f.fail
	}
	f.writes = append(f.writes, append([]Position(nil), ps...))
	for _, p := range ps {
		k := posKey{p.Conv, p.User}
		f.stored[k] = max(f.stored[k], p.Seq)
	}
	return nil
}

func (f *fakeDurable) get(conv, user string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stored[posKey{conv, user}]
}

func (f *fakeDurable) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func (f *fakeDurable) counts() (lookups, writes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups, len(f.writes)
}

func redisClient(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func newStore(t testing.TB, rdb redis.UniversalClient, d Durable, marker func(string) string, queue int) *Store {
	return New(Config{Redis: rdb, Prefix: testenv.Namespace(t) + ":", Durable: d, Marker: marker, Queue: queue, Log: zerolog.Nop()})
}

func mark(t *testing.T, s *Store, conv, user string, seq int64) (int64, bool) {
	t.Helper()
	got, raised, err := s.Mark(context.Background(), conv, user, seq, false)
	if err != nil {
		t.Fatalf("mark %s %s %d: %v", conv, user, seq, err)
	}
	return got, raised
}

// A checked mark compares seq with the conversation's counter in the same
// script: above it nothing changes, without one the caller is told.
func TestMarkChecksTheCounter(t *testing.T) {
	forEachWay(t, testMarkChecksTheCounter)
}

// forEachWay runs test with a Store whose marks are round trips of their
// own and with one whose marks ride with a chat log's appends.
func forEachWay(t *testing.T, test func(t *testing.T, beside bool)) {
	t.Run("alone", func(t *testing.T) { test(t, false) })
	t.Run("beside", func(t *testing.T) { test(t, true) })
}

// besideFor is the Beside of a Store over rdb, or nil.
func besideFor(rdb *redis.Client, prefix string, beside bool) func(context.Context, *redis.Script, []string, ...any) ([]any, error) {
	if !beside {
		return nil
	}
	return chatlog.New(rdb, prefix).RunLazy
}

func testMarkChecksTheCounter(t *testing.T, beside bool) {
	ctx := context.Background()
	rdb := redisClient(t)
	prefix := testenv.Namespace(t) + ":"
	st := New(Config{Redis: rdb, Prefix: prefix, Log: zerolog.Nop(), Beside: besideFor(rdb, prefix, beside),
		Marker:  func(conv string) string { return prefix + keyspace.NewTags().Of(conv) + "marker" },
		Counter: func(conv string) string { return prefix + keyspace.NewTags().Of(conv) + "seq:" + conv }})
	const conv = "dm:amy:bob"
	if err := rdb.Set(ctx, prefix+keyspace.NewTags().Of(conv)+"marker", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Mark(ctx, conv, "amy", 1, true); !errors.Is(err, ErrNoCounter) {
		t.Fatalf("mark without a counter: %v, want ErrNoCounter", err)
	}
	if err := rdb.Set(ctx, prefix+keyspace.NewTags().Of(conv)+"seq:"+conv, "4", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var above *AboveLatestError
	if _, _, err := st.Mark(ctx, conv, "amy", 5, true); !errors.As(err, &above) || above.Latest != 4 {
		t.Fatalf("mark above the latest: %v, want AboveLatestError{4}", err)
	}
	if pos, raised, err := st.Mark(ctx, conv, "amy", 4, true); err != nil || !raised || pos != 4 {
		t.Fatalf("mark of the latest: %d %v %v", pos, raised, err)
	}
	if pos, raised, err := st.Mark(ctx, conv, "amy", 2, true); err != nil || raised || pos != 4 {
		t.Fatalf("a lower mark: %d %v %v, want 4 unchanged", pos, raised, err)
	}
	// Unchecked, the caller has checked.
	if pos, raised, err := st.Mark(ctx, conv, "bob", 9, false); err != nil || !raised || pos != 9 {
		t.Fatalf("unchecked mark: %d %v %v", pos, raised, err)
	}
}

// A position only rises; where Redis has none, the durable one is the
// floor, read once and then kept in Redis.
func TestMarkRisesOnly(t *testing.T) { forEachWay(t, testMarkRisesOnly) }

func testMarkRisesOnly(t *testing.T, beside bool) {
	d := newFake()
	d.stored[posKey{"dm:a:b", "a"}] = 4
	rdb := redisClient(t)
	prefix := testenv.Namespace(t) + ":"
	s := New(Config{Redis: rdb, Prefix: prefix, Durable: d, Beside: besideFor(rdb, prefix, beside), Log: zerolog.Nop()})
	steps := []struct {
		seq    int64
		stored int64
		raised bool
	}{
		{2, 4, false}, // below what MongoDB holds
		{6, 6, true},
		{5, 6, false},
		{6, 6, false},
		{0, 6, false},
		{9, 9, true},
	}
	for i, st := range steps {
		got, raised := mark(t, s, "dm:a:b", "a", st.seq)
		if got != st.stored || raised != st.raised {
			t.Fatalf("step %d: mark %d = %d raised=%v, want %d raised=%v", i, st.seq, got, raised, st.stored, st.raised)
		}
	}
	if lookups, _ := d.counts(); lookups != 1 {
		t.Fatalf("%d durable lookups, want 1 (then Redis holds the position)", lookups)
	}
	// The other user of the conversation has a position of their own.
	if got, raised := mark(t, s, "dm:a:b", "b", 1); got != 1 || !raised {
		t.Fatalf("b's first mark = %d raised=%v", got, raised)
	}
	// Only positions that rose wait to be made durable, the highest one.
	if n := queueLen(t, s); n != 2 {
		t.Fatalf("%d positions queued, want 2 (a at 9, b at 1)", n)
	}
}

// Where the shard's marker says Redis has held everything, a missing
// position is 0 and MongoDB is not asked.
func TestMarkerSparesDurableLookups(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	d := newFake()
	d.stored[posKey{"room:x", "a"}] = 7 // not looked at while the marker is there
	log := chatlog.New(rdb, testenv.Namespace(t)+":")
	s := newStore(t, rdb, d, log.MarkerKey, 0)
	if err := log.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, raised := mark(t, s, "room:x", "a", 3); got != 3 || !raised {
		t.Fatalf("mark under the marker = %d raised=%v, want 3 raised", got, raised)
	}
	pos, err := s.Positions(ctx, map[string][]string{"room:x": {"a", "b"}})
	if err != nil || pos["room:x"]["a"] != 3 || pos["room:x"]["b"] != 0 {
		t.Fatalf("positions = %v, %v", pos, err)
	}
	if lookups, _ := d.counts(); lookups != 0 {
		t.Fatalf("%d durable lookups under the marker, want 0", lookups)
	}
	// Redis loses the shard: the marker and the hash go.
	if err := rdb.Del(ctx, log.MarkerKey("room:x"), s.Key("room:x")).Err(); err != nil {
		t.Fatal(err)
	}
	if got, raised := mark(t, s, "room:x", "a", 5); got != 7 || raised {
		t.Fatalf("mark after the loss = %d raised=%v, want MongoDB's 7, not raised", got, raised)
	}
}

// Positions reads Redis, falls back to the durable copy for what Redis
// lacks, and puts that back in Redis, 0s included, so the next read asks
// nothing. A durable copy that fails counts as 0 and is asked again.
func TestPositionsFallBack(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	d := newFake()
	d.stored[posKey{"dm:a:b", "b"}] = 8
	d.stored[posKey{"room:r", "a"}] = 2
	s := newStore(t, rdb, d, nil, 0)
	mark(t, s, "dm:a:b", "a", 5)
	_, _ = d.counts()
	want := map[string][]string{"dm:a:b": {"a", "b"}, "room:r": {"a"}, "room:empty": {"a"}, "room:none": nil}

	d.setFail(errors.New("down"))
	pos, err := s.Positions(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pos); got != "map[dm:a:b:map[a:5 b:0] room:empty:map[a:0] room:r:map[a:0]]" {
		t.Fatalf("positions with MongoDB down = %s", got)
	}
	if n, _ := rdb.HLen(ctx, s.Key("room:r")).Result(); n != 0 {
		t.Fatalf("a failed lookup put %d positions in Redis", n)
	}
	d.setFail(nil)
	before, _ := d.counts()
	pos, err = s.Positions(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pos); got != "map[dm:a:b:map[a:5 b:8] room:empty:map[a:0] room:r:map[a:2]]" {
		t.Fatalf("positions = %s", got)
	}
	after, _ := d.counts()
	if after-before != 3 {
		t.Fatalf("%d durable lookups, want 3 (dm b, room:r a, room:empty a)", after-before)
	}
	if v, _ := rdb.HGet(ctx, s.Key("dm:a:b"), "b").Result(); v != "8" {
		t.Fatalf("Redis holds %q for b, want MongoDB's 8 put back", v)
	}
	if _, err := s.Positions(ctx, want); err != nil {
		t.Fatal(err)
	}
	if again, _ := d.counts(); again != after {
		t.Fatalf("%d more durable lookups once Redis holds every position, want 0", again-after)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, what, cond)
}

// queueLen is how many positions wait in the Store's queues.
func queueLen(t *testing.T, s *Store) int {
	t.Helper()
	n, err := s.Queued(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sameShard returns n rooms whose positions share one shard's queue.
func sameShard(n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		if room := fmt.Sprintf("room:%d", i); keyspace.Shard(room) == keyspace.Shard("room:0") {
			out = append(out, room)
		}
	}
	return out
}

// Run writes what rose, the highest per user and conversation, retries
// while the durable copy fails, and writes what is left when it stops.
// The queue is bounded.
// A position made durable is raised in Redis where Redis holds a lower
// one (filled from MongoDB after Redis lost its data, before the write
// reached MongoDB); one Redis does not hold stays missing.
func TestWriteBehindHealsRedis(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	d := newFake()
	s := newStore(t, rdb, d, nil, 100)
	mark(t, s, "dm:a:b", "a", 7)
	mark(t, s, "dm:a:c", "a", 5)
	// Redis loses both (not their queue); a read of the first filled it
	// from MongoDB, which has nothing yet. Then the writer runs.
	if err := rdb.Del(ctx, s.Key("dm:a:b"), s.Key("dm:a:c")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, s.Key("dm:a:b"), "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the positions are durable", func() bool { return d.get("dm:a:b", "a") == 7 && d.get("dm:a:c", "a") == 5 })
	waitFor(t, "Redis holds the durable position again", func() bool {
		v, err := rdb.HGet(ctx, s.Key("dm:a:b"), "a").Int64()
		return err == nil && v == 7
	})
	if n, err := rdb.HLen(ctx, s.Key("dm:a:c")).Result(); err != nil || n != 0 {
		t.Fatalf("a position Redis did not hold was put back (%d, %v): the next read must ask MongoDB", n, err)
	}
}

func TestWriteBehind(t *testing.T) {
	d := newFake()
	s := newStore(t, redisClient(t), d, nil, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	for seq := int64(1); seq <= 20; seq++ {
		mark(t, s, "dm:a:b", "a", seq)
	}
	waitFor(t, "the position is durable", func() bool { return d.get("dm:a:b", "a") == 20 && queueLen(t, s) == 0 })
	if _, writes := d.counts(); writes > 5 {
		t.Errorf("%d writes for 20 reads in a row, want them gathered", writes)
	}

	// The bound is per shard: four rooms of one shard, and one of another.
	rooms := sameShard(4)
	other := "room:x"
	for keyspace.Shard(other) == keyspace.Shard(rooms[0]) {
		other += "x"
	}
	d.setFail(errors.New("down"))
	for _, r := range rooms[:3] {
		mark(t, s, r, "a", 1)
	}
	if _, raised := mark(t, s, rooms[3], "a", 1); !raised {
		t.Fatal("a read past the queue's bound was not stored in Redis")
	}
	mark(t, s, other, "a", 1)
	if n := queueLen(t, s); n != 4 {
		t.Fatalf("%d positions queued, want the bound 3 of one shard and 1 of another", n)
	}
	mark(t, s, rooms[0], "a", 4) // a queued position still rises
	d.setFail(nil)
	waitFor(t, "what was queued is durable once the copy answers", func() bool {
		return d.get(rooms[0], "a") == 4 && d.get(other, "a") == 1 && queueLen(t, s) == 0
	})
	if d.get(rooms[3], "a") != 0 {
		t.Fatal("the position past the bound was made durable")
	}

	// Stopping writes what is queued.
	d.setFail(errors.New("down"))
	d.mu.Lock()
	tried := d.tries
	d.mu.Unlock()
	mark(t, s, "room:5", "a", 9)
	waitFor(t, "a write was tried and failed", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.tries > tried
	})
	d.setFail(nil)
	cancel()
	<-done
	if d.get("room:5", "a") != 9 || queueLen(t, s) != 0 {
		t.Fatalf("after stopping: durable %d, %d queued; want 9 and 0", d.get("room:5", "a"), queueLen(t, s))
	}
}

// The queue is in Redis: a read taken by a node that dies before writing
// it is made durable by another, and then survives Redis losing it.
func TestQueueOutlivesItsNode(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	d := newFake()
	prefix := testenv.Namespace(t) + ":"
	dead := New(Config{Redis: rdb, Prefix: prefix, Durable: d, Holder: "n1", Log: zerolog.Nop()})
	mark(t, dead, "dm:a:b", "a", 6) // n1 never runs its writer: killed
	mark(t, dead, "room:r", "b", 2)

	live := New(Config{Redis: rdb, Prefix: prefix, Durable: d, Holder: "n2", Log: zerolog.Nop()})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); live.Run(rctx) }()
	defer func() { stop(); <-done }()
	waitFor(t, "the other node made the dead one's reads durable", func() bool {
		return d.get("dm:a:b", "a") == 6 && d.get("room:r", "b") == 2 && queueLen(t, live) == 0
	})
	if err := rdb.Del(ctx, live.Key("dm:a:b"), live.Key("room:r")).Err(); err != nil {
		t.Fatal(err)
	}
	pos, err := live.Positions(ctx, map[string][]string{"dm:a:b": {"a"}, "room:r": {"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pos); got != "map[dm:a:b:map[a:6] room:r:map[b:2]]" {
		t.Fatalf("positions after Redis lost them = %s", got)
	}
}

// countingDurable is a writer's view of a shared durable copy: it counts
// the writes that went through it.
type countingDurable struct {
	*fakeDurable
	mu     sync.Mutex
	writes int
}

func (c *countingDurable) SaveReadPositions(ctx context.Context, ps []Position) error {
	err := c.fakeDurable.SaveReadPositions(ctx, ps)
	if err == nil {
		c.mu.Lock()
		c.writes++
		c.mu.Unlock()
	}
	return err
}

func (c *countingDurable) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Of the writers that run, the one holding the lease writes; when it
// stops, another takes over.
func TestOneWriterAtATime(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	d := newFake()
	prefix := testenv.Namespace(t) + ":"
	type writer struct {
		s    *Store
		d    *countingDurable
		stop context.CancelFunc
		done chan struct{}
	}
	ws := make([]*writer, 2)
	for i := range ws {
		cd := &countingDurable{fakeDurable: d}
		w := &writer{d: cd, done: make(chan struct{}),
			s: New(Config{Redis: rdb, Prefix: prefix, Durable: cd, Holder: fmt.Sprintf("n%d", i), Log: zerolog.Nop()})}
		var rctx context.Context
		rctx, w.stop = context.WithCancel(ctx)
		go func() { defer close(w.done); w.s.Run(rctx) }()
		ws[i] = w
		defer func() { w.stop(); <-w.done }()
	}
	for i := range 4 {
		conv := fmt.Sprintf("dm:a:%d", i)
		mark(t, ws[i%2].s, conv, "a", int64(i+1))
		waitFor(t, conv+" is durable", func() bool { return d.get(conv, "a") == int64(i+1) })
	}
	first := 0
	if ws[1].d.count() > 0 {
		first = 1
	}
	if n := ws[1-first].d.count(); n != 0 {
		t.Fatalf("both writers wrote (%d and %d writes)", ws[first].d.count(), n)
	}
	ws[first].stop()
	<-ws[first].done
	mark(t, ws[first].s, "dm:b:c", "b", 3)
	waitFor(t, "the other writer takes over", func() bool { return d.get("dm:b:c", "b") == 3 })
	if ws[1-first].d.count() == 0 {
		t.Fatal("the position was written, but not by the writer left")
	}
}

// The whole way on the real stores: a position is made durable in
// MongoDB, Redis loses it, and it comes back from MongoDB.
func TestPositionsSurviveRedisLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hs, err := history.Open(ctx, testenv.Mongo(t), testenv.Namespace(t), history.WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Close(ctx)
	})
	rdb := redisClient(t)
	s := newStore(t, rdb, mongoReads{hs}, nil, 0)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(rctx) }()
	defer func() { stop(); <-done }()

	mark(t, s, "dm:amy:bob", "amy", 12)
	mark(t, s, "dm:amy:bob", "bob", 10)
	mark(t, s, "room:lobby", "amy", 3)
	waitFor(t, "the positions are in MongoDB", func() bool {
		got, err := hs.ReadPositions(ctx, []history.ReadPosition{{Conv: "dm:amy:bob", User: "amy"}, {Conv: "room:lobby", User: "amy"}})
		return err == nil && got[0].Seq == 12 && got[1].Seq == 3
	})
	if err := rdb.Del(ctx, s.Key("dm:amy:bob"), s.Key("room:lobby")).Err(); err != nil {
		t.Fatal(err)
	}
	pos, err := s.Positions(ctx, map[string][]string{"dm:amy:bob": {"amy", "bob"}, "room:lobby": {"amy"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pos); got != "map[dm:amy:bob:map[amy:12 bob:10] room:lobby:map[amy:3]]" {
		t.Fatalf("positions after Redis lost them = %s", got)
	}
	if got, raised := mark(t, s, "dm:amy:bob", "amy", 11); got != 12 || raised {
		t.Fatalf("a lower read after the loss = %d raised=%v, want 12 unchanged", got, raised)
	}
}

// mongoReads is history.Store as a Durable.
type mongoReads struct{ s *history.Store }

func (m mongoReads) ReadPositions(ctx context.Context, ps []Position) ([]Position, error) {
	in := make([]history.ReadPosition, len(ps))
	for i, p := range ps {
		in[i] = history.ReadPosition(p)
	}
	got, err := m.s.ReadPositions(ctx, in)
	out := make([]Position, len(got))
	for i, p := range got {
		out[i] = Position(p)
	}
	return out, err
}

func (m mongoReads) SaveReadPositions(ctx context.Context, ps []Position) error {
	in := make([]history.ReadPosition, len(ps))
	for i, p := range ps {
		in[i] = history.ReadPosition(p)
	}
	return m.s.SaveReadPositions(ctx, in)
}

// On a Redis Cluster of three masters every operation works (no script
// spans two slots), a conversation's positions share its counter's slot,
// and they spread over the masters.
func TestOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rc := testenv.StartRedisCluster(t, false)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
	t.Cleanup(func() { rdb.Close() })
	log := chatlog.New(rdb, testenv.Namespace(t)+":")
	d := newFake()
	s := newStore(t, rdb, d, log.MarkerKey, 0)

	const convs = 40
	want := map[string][]string{}
	masters := map[string]bool{}
	for i := range convs {
		conv := fmt.Sprintf("dm:u%d:v%d", i, i)
		if got, want := keyspace.Slot(s.Key(conv)), keyspace.Slot(log.SeqKey(conv)); got != want {
			t.Fatalf("%s: positions in slot %d, counter in %d", conv, got, want)
		}
		if got, want := rc.KeySlot(t, s.Key(conv)), keyspace.Slot(s.Key(conv)); got != want {
			t.Fatalf("slot of %s: Redis says %d, keyspace %d", s.Key(conv), got, want)
		}
		d.stored[posKey{conv, fmt.Sprintf("v%d", i)}] = 2
		if got, raised := mark(t, s, conv, fmt.Sprintf("u%d", i), int64(i+1)); got != int64(i+1) || !raised {
			t.Fatalf("mark %s = %d raised=%v", conv, got, raised)
		}
		want[conv] = []string{fmt.Sprintf("u%d", i), fmt.Sprintf("v%d", i)}
		addr, err := rdb.MasterForKey(ctx, s.Key(conv))
		if err != nil {
			t.Fatal(err)
		}
		masters[addr.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("%d conversations' positions on %d masters, want all 3", convs, len(masters))
	}
	pos, err := s.Positions(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	for i := range convs {
		conv := fmt.Sprintf("dm:u%d:v%d", i, i)
		if u, v := pos[conv][fmt.Sprintf("u%d", i)], pos[conv][fmt.Sprintf("v%d", i)]; u != int64(i+1) || v != 2 {
			t.Fatalf("%s: positions %d and %d, want %d and 2", conv, u, v, i+1)
		}
	}
	// Put back on every master: asked again, nothing is looked up.
	before, _ := d.counts()
	if _, err := s.Positions(ctx, want); err != nil {
		t.Fatal(err)
	}
	if after, _ := d.counts(); after != before {
		t.Fatalf("%d more lookups once the positions were put back", after-before)
	}
}
