package hotwords

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// newCounter returns a Counter under a fresh key prefix, and the client.
func newCounter(t *testing.T) (*Counter, *redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	prefix := testenv.Namespace(t) + ":"
	return New(rdb, prefix), rdb, prefix
}

func add(t *testing.T, c *Counter, texts ...string) {
	t.Helper()
	for _, text := range texts {
		if err := c.Add(context.Background(), text); err != nil {
			t.Fatal(err)
		}
	}
}

func top(t *testing.T, c *Counter, n int) []protocol.WordCount {
	t.Helper()
	got, err := c.Top(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestAddAndTop(t *testing.T) {
	c, _, _ := newCounter(t)
	add(t, c,
		"Redis is fast, redis is REDIS", // redis once: distinct per message
		"redis and mongo",
		"Mongo, zookeeper",
		"zookeeper ＲＥＤＩＳ 今天天气",
		"今天 ok",
		"*** the and 1234", // nothing to count
		"",
	)
	want := []protocol.WordCount{
		{Word: "redis", Count: 3},
		{Word: "mongo", Count: 2},
		{Word: "zookeeper", Count: 2},
		{Word: "今天", Count: 2},
		{Word: "fast", Count: 1},
		{Word: "ok", Count: 1},
		{Word: "天天", Count: 1},
		{Word: "天气", Count: 1},
	}
	if got := top(t, c, 100); !slices.Equal(got, want) {
		t.Fatalf("Top(100) = %v\nwant      %v", got, want)
	}
	if got := top(t, c, 3); !slices.Equal(got, want[:3]) {
		t.Fatalf("Top(3) = %v, want %v", got, want[:3])
	}
}

func TestTopBreaksTiesByWord(t *testing.T) {
	c, _, _ := newCounter(t)
	// Seven words counted equally, added in an order unlike theirs.
	add(t, c, "golf echo alpha", "delta charlie", "foxtrot bravo", "hotel hotel")
	add(t, c, "hotel")
	for n := 1; n <= 8; n++ {
		got := top(t, c, n)
		want := []protocol.WordCount{{Word: "hotel", Count: 2}}
		for _, w := range []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"} {
			want = append(want, protocol.WordCount{Word: w, Count: 1})
		}
		want = want[:n]
		if !slices.Equal(got, want) {
			t.Fatalf("Top(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestTopBounds(t *testing.T) {
	c, _, _ := newCounter(t)
	if got := top(t, c, 10); len(got) != 0 {
		t.Fatalf("Top of nothing = %v", got)
	}
	add(t, c, "one two three")
	for _, n := range []int{-1, 0} {
		if got := top(t, c, n); len(got) != 0 {
			t.Fatalf("Top(%d) = %v, want nothing", n, got)
		}
	}
	if got := top(t, c, 1); len(got) != 1 || got[0] != (protocol.WordCount{Word: "one", Count: 1}) {
		t.Fatalf("Top(1) = %v", got)
	}
	if got := top(t, c, 3); len(got) != 3 {
		t.Fatalf("Top(3) = %v", got)
	}
	if got := top(t, c, protocol.MaxPopular); len(got) != 3 {
		t.Fatalf("Top(%d) = %v, want the 3 words there are", protocol.MaxPopular, got)
	}
}

func TestResetClearsAndRecords(t *testing.T) {
	ctx := context.Background()
	c, _, _ := newCounter(t)
	if last, err := c.LastReset(ctx); err != nil || last != (ResetInfo{}) {
		t.Fatalf("LastReset before any = %+v, %v; want zero", last, err)
	}
	add(t, c, "counted words here")
	at := time.UnixMilli(1_700_000_000_123)
	done, err := c.Reset(ctx, "n1", 4, at)
	if err != nil || !done {
		t.Fatalf("Reset = %v, %v", done, err)
	}
	if got := top(t, c, 10); len(got) != 0 {
		t.Fatalf("Top after reset = %v", got)
	}
	last, err := c.LastReset(ctx)
	if err != nil || last.Node != "n1" || last.Epoch != 4 || !last.At.Equal(at) {
		t.Fatalf("LastReset = %+v, %v", last, err)
	}
	add(t, c, "fresh start")
	if got := top(t, c, 10); len(got) != 2 {
		t.Fatalf("Top after counting again = %v", got)
	}
}

func TestResetFencedByEpoch(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		stored  string // <prefix>{cluster}:epoch; "" for none
		epoch   int64
		allowed bool
	}{
		{"no epoch published", "", 3, true},
		{"same epoch", "7", 7, true},
		{"older epoch published", "6", 7, true},
		{"newer epoch published", "8", 7, false},
		{"much newer", "1000000", 7, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rdb, prefix := newCounter(t)
			if tc.stored != "" {
				if err := rdb.Set(ctx, prefix+"{cluster}:epoch", tc.stored, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			add(t, c, "survives unless reset")
			done, err := c.Reset(ctx, "n1", tc.epoch, time.Now())
			if err != nil || done != tc.allowed {
				t.Fatalf("Reset = %v, %v; want %v", done, err, tc.allowed)
			}
			words, last := top(t, c, 10), lastReset(t, c)
			if tc.allowed {
				if len(words) != 0 || last.Epoch != tc.epoch {
					t.Fatalf("allowed reset left %v, recorded %+v", words, last)
				}
				return
			}
			if len(words) != 3 || last != (ResetInfo{}) {
				t.Fatalf("fenced reset changed things: words %v, recorded %+v", words, last)
			}
		})
	}
}

func TestResetRejectsCorruptEpoch(t *testing.T) {
	ctx := context.Background()
	c, rdb, prefix := newCounter(t)
	if err := rdb.Set(ctx, prefix+"{cluster}:epoch", "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if done, err := c.Reset(ctx, "n1", 1, time.Now()); err == nil || done {
		t.Fatalf("Reset over a corrupt epoch = %v, %v; want an error", done, err)
	}
}

func TestLastResetCorrupt(t *testing.T) {
	ctx := context.Background()
	c, rdb, prefix := newCounter(t)
	if err := rdb.Set(ctx, prefix+"{cluster}:hotwords:reset", "{", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LastReset(ctx); err == nil {
		t.Fatal("LastReset of a corrupt record: no error")
	}
}

func lastReset(t *testing.T, c *Counter) ResetInfo {
	t.Helper()
	last, err := c.LastReset(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func TestDue(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	day := 24 * time.Hour
	at := func(d time.Duration) ResetInfo { return ResetInfo{Node: "n1", Epoch: 1, At: now.Add(d)} }
	tests := []struct {
		name  string
		last  ResetInfo
		every time.Duration
		want  bool
	}{
		{"never reset: the schedule is begun, not due", ResetInfo{}, day, false},
		{"resets off", ResetInfo{}, 0, false},
		{"resets off, negative", at(-2 * day), -time.Second, false},
		{"just reset", at(0), day, false},
		{"not yet", at(-day + time.Millisecond), day, false},
		{"exactly due", at(-day), day, true},
		{"overdue", at(-3 * day), day, true},
		{"slightly ahead clock", at(time.Minute), day, false},
		{"absurdly ahead clock", at(day + time.Minute), day, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Due(tc.last, tc.every, now); got != tc.want {
				t.Fatalf("Due(%v, %s) = %v, want %v", tc.last.At, tc.every, got, tc.want)
			}
		})
	}
}

// TestScheduleSurvivesLeaderChange walks the schedule through a leader
// change: the new leader reads the last reset from Redis and waits out the
// rest of the interval rather than resetting at once or starting over.
func TestScheduleSurvivesLeaderChange(t *testing.T) {
	ctx := context.Background()
	c, rdb, prefix := newCounter(t)
	every := time.Hour
	t0 := time.UnixMilli(1_800_000_000_000)

	// Leader n1 (epoch 1) starts the schedule.
	if Due(lastReset(t, c), every, t0) {
		t.Fatal("a reset is due before the schedule began")
	}
	if done, err := c.Begin(ctx, "n1", 1, t0); err != nil || !done {
		t.Fatalf("n1 begins: %v %v", done, err)
	}
	// n1 dies 40 minutes later; n2 wins with epoch 2 and publishes.
	if err := rdb.Set(ctx, prefix+"{cluster}:epoch", 2, 0).Err(); err != nil {
		t.Fatal(err)
	}
	last := lastReset(t, c)
	if Due(last, every, t0.Add(40*time.Minute)) {
		t.Fatal("n2 would reset early")
	}
	// n1, paused rather than dead, wakes up at the hour: fenced.
	if done, err := c.Reset(ctx, "n1", 1, t0.Add(every)); err != nil || done {
		t.Fatalf("deposed n1 reset: %v %v", done, err)
	}
	// n2 resets at the hour after n1's reset, not an hour after it took over.
	if !Due(last, every, t0.Add(every)) {
		t.Fatal("n2 does not continue the schedule")
	}
	if done, err := c.Reset(ctx, "n2", 2, t0.Add(every)); err != nil || !done {
		t.Fatalf("n2 reset: %v %v", done, err)
	}
	if got := lastReset(t, c); got.Node != "n2" || got.Epoch != 2 || !got.At.Equal(t0.Add(every)) {
		t.Fatalf("LastReset = %+v", got)
	}
}

func ExampleTokens() {
	fmt.Println(Tokens("The NEW release of go-redis is out! 今天天气不错"))
	// Output: [new release go redis out 今天 天天 天气 气不 不错]
}

func TestBeginStartsTheScheduleWithoutClearing(t *testing.T) {
	ctx := context.Background()
	c, _, _ := newCounter(t)
	if err := c.Add(ctx, "kept words"); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1767225600000)
	if ok, err := c.Begin(ctx, "n1", 3, now); err != nil || !ok {
		t.Fatalf("Begin: %v, %v", ok, err)
	}
	if ok, err := c.Begin(ctx, "n2", 4, now.Add(time.Hour)); err != nil || ok {
		t.Fatalf("second Begin: %v, %v; want false", ok, err)
	}
	last, err := c.LastReset(ctx)
	if err != nil || last.Node != "n1" || !last.At.Equal(now) {
		t.Fatalf("LastReset after Begin: %+v, %v", last, err)
	}
	if words, err := c.Top(ctx, 10); err != nil || len(words) != 2 {
		t.Fatalf("Begin cleared the ranking: %v, %v", words, err)
	}
}

// Counts gathered from many texts in memory rank as the texts added one
// by one would.
func TestAddCountsMatchesAdd(t *testing.T) {
	texts := []string{"Redis is fast, redis is REDIS", "redis and mongo", "Mongo, zookeeper", "zookeeper ＲＥＤＩＳ 今天天气", "今天 ok"}
	one, _, _ := newCounter(t)
	add(t, one, texts...)
	many, _, _ := newCounter(t)
	counts := map[string]int64{}
	for _, text := range texts {
		for _, tok := range Tokens(text) {
			counts[tok]++
		}
	}
	if err := many.AddCounts(context.Background(), counts); err != nil {
		t.Fatal(err)
	}
	if err := many.AddCounts(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if a, b := top(t, one, 100), top(t, many, 100); !slices.Equal(a, b) || len(a) == 0 {
		t.Fatalf("AddCounts ranks %v, Add %v", b, a)
	}
}
