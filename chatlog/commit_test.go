package chatlog

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Many senders at once: every append gets its own seq, the seqs of a
// conversation are exactly 1..n, and each caller's own appends come back
// in the order it made them, batched or not.
func TestConcurrentAppendsGetDistinctOrderedSeqs(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	const senders, each = 16, 60
	var wg sync.WaitGroup
	seqs := make([][]int64, senders)
	errs := make(chan error, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := "u" + strconv.Itoa(s)
			for i := range each {
				m := protocol.Message{ID: fmt.Sprint(s, "-", i), Conv: "room:busy", From: from, Text: "t", TS: int64(i)}
				got, dup, err := appended(l.Append(ctx, m, fmt.Sprint("c", i), nil))
				if err != nil || dup {
					errs <- fmt.Errorf("sender %d append %d: dup=%v err=%v", s, i, dup, err)
					return
				}
				seqs[s] = append(seqs[s], got.Seq)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for s, ss := range seqs {
		for i, q := range ss {
			if seen[q] {
				t.Fatalf("seq %d given twice", q)
			}
			seen[q] = true
			if i > 0 && q <= ss[i-1] {
				t.Fatalf("sender %d: seq %d after %d", s, q, ss[i-1])
			}
		}
	}
	for q := int64(1); q <= senders*each; q++ {
		if !seen[q] {
			t.Fatalf("seq %d never given (of %d)", q, senders*each)
		}
	}
}

// A sender's clientMsgIds are remembered for its last IdempotencyWindow
// messages, with nothing kept but what a resend is answered with.
func TestIdempotencyWindowIsBounded(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	send := func(cid string) (protocol.Message, bool) {
		t.Helper()
		got, dup, err := appended(l.Append(ctx, protocol.Message{ID: "id-" + cid, Conv: "dm:a:b", From: "a", To: "b", Text: "x", TS: 7}, cid, nil))
		if err != nil {
			t.Fatal(err)
		}
		return got, dup
	}
	first, _ := send("c0")
	for i := 1; i < IdempotencyWindow; i++ {
		send("c" + strconv.Itoa(i))
	}
	if _, dup := send("c0"); !dup {
		t.Fatal("a clientMsgId among the sender's last IdempotencyWindow was stored again")
	}
	for i := IdempotencyWindow; i < IdempotencyWindow+64; i++ {
		send("c" + strconv.Itoa(i))
	}
	if n := l.rdb.HLen(ctx, l.IdemKey("a", "dm:a:b")).Val(); n < IdempotencyWindow || n >= IdempotencyWindow+64 {
		t.Fatalf("%d clientMsgIds remembered, want the window of %d and fewer than 64 more", n, IdempotencyWindow)
	}
	if n := l.rdb.LLen(ctx, l.IdemOrderKey("a", "dm:a:b")).Val(); n != l.rdb.HLen(ctx, l.IdemKey("a", "dm:a:b")).Val() {
		t.Fatalf("order list of %d for a hash of %d", n, l.rdb.HLen(ctx, l.IdemKey("a", "dm:a:b")).Val())
	}
	if ttl := l.rdb.TTL(ctx, l.IdemKey("a", "dm:a:b")).Val(); ttl <= 0 || ttl > IdempotencyTTL {
		t.Fatalf("idempotency hash TTL %v", ttl)
	}
	if _, dup := send("c" + strconv.Itoa(IdempotencyWindow+10)); !dup {
		t.Fatal("a recent clientMsgId was stored again")
	}
	again, dup := send("c0")
	if dup || again.Seq == first.Seq {
		t.Fatalf("a clientMsgId past the window: dup=%v seq %d (first %d), want stored anew", dup, again.Seq, first.Seq)
	}
}

// A Redis that forgot its scripts (restarted) is given them again; the
// appends waiting meanwhile are not lost.
func TestAppendReloadsFlushedScripts(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := appended(l.Append(ctx, protocol.Message{ID: "a", Conv: "dm:a:b", From: "a", Text: "x"}, "", nil)); err != nil {
		t.Fatal(err)
	}
	if err := l.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	got, _, err := appended(l.Append(ctx, protocol.Message{ID: "b", Conv: "dm:a:b", From: "a", Text: "y"}, "", nil))
	if err != nil || got.Seq != 2 {
		t.Fatalf("append after SCRIPT FLUSH: %+v %v", got, err)
	}
}

// A caller whose context ended before its turn is answered with that
// error, and its message is not stored.
func TestAppendWithEndedContext(t *testing.T) {
	l := newLog(t)
	if err := l.MarkFresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := appended(l.Append(ctx, protocol.Message{ID: "a", Conv: "dm:a:b", From: "a", Text: "x"}, "", nil)); err == nil {
		t.Fatal("append with a cancelled context succeeded")
	}
	if n := l.rdb.Exists(context.Background(), l.SeqKey("dm:a:b")).Val(); n != 0 {
		t.Fatal("a cancelled append was stored")
	}
}

// BenchmarkAppend measures a direct message's append: one caller at a time
// (a round trip each), and many at once (group commit).
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	l := newLog(b)
	if err := l.MarkFresh(ctx); err != nil {
		b.Fatal(err)
	}
	msg := func(i int) protocol.Message {
		return protocol.Message{ID: strconv.Itoa(i), Conv: "dm:u" + strconv.Itoa(i%50) + ":v", From: "u" + strconv.Itoa(i%50), To: "v",
			Text: "a message of a typical length, some forty bytes", TS: 1733200000123}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			if _, _, err := appended(l.Append(ctx, msg(i), "s"+strconv.Itoa(i), []string{"u", "v"})); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32)
		var n sync.Mutex
		next := 0
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n.Lock()
				i := next
				next++
				n.Unlock()
				if _, _, err := appended(l.Append(ctx, msg(i), "p"+strconv.Itoa(i), []string{"u", "v"})); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// With replicas asked for and none there, a message is still stored and
// acknowledged once the wait is over, and the shortfall is reported.
func TestAppendWaitsForReplicasBounded(t *testing.T) {
	ctx := context.Background()
	base := newLog(t)
	var short []int
	l := New(base.rdb, base.prefix, WithReplicas(1, 20*time.Millisecond, func(got int) { short = append(short, got) }))
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	got, dup, err := appended(l.Append(ctx, protocol.Message{ID: "a", Conv: "dm:a:b", From: "a", To: "b", Text: "x", TS: 1}, "c1", nil))
	if err != nil || dup || got.Seq != 1 {
		t.Fatalf("append: %+v %v %v", got, dup, err)
	}
	if len(short) != 1 || short[0] != 0 {
		t.Fatalf("shortfalls reported %v, want [0] (a lone Redis has no replica)", short)
	}
}

// pipelineSizes records the number of commands of every pipeline a
// client sends.
type pipelineSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (p *pipelineSizes) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (p *pipelineSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (p *pipelineSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.mu.Lock()
		p.sizes = append(p.sizes, len(cmds))
		p.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (p *pipelineSizes) all() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.sizes...)
}

// lazyEcho doubles its argument and counts its calls in KEYS[1].
var lazyEcho = redis.NewScript(`return {tonumber(ARGV[1]) * 2, redis.call('INCR', KEYS[1])}`)

type lazyResult struct {
	res []any
	err error
}

// A lazy call sends nothing of its own while it may wait: it goes to
// Redis in the pipeline of the next append, and gets its own reply.
func TestLazyCallRidesWithTheNextAppend(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	l.commit.lazyWait = time.Hour // only an append can take it
	for _, sc := range []*redis.Script{appendScript, lazyEcho} {
		if err := sc.Load(ctx, l.rdb).Err(); err != nil {
			t.Fatal(err)
		}
	}
	sizes := &pipelineSizes{}
	l.rdb.AddHook(sizes)
	done := make(chan lazyResult, 1)
	go func() {
		res, err := l.RunLazy(ctx, lazyEcho, []string{l.prefix + "lazy"}, 21)
		done <- lazyResult{res, err}
	}()
	testenv.WaitFor(t, 30*time.Second, "the lazy call to queue", func() bool {
		l.commit.mu.Lock()
		defer l.commit.mu.Unlock()
		return len(l.commit.lazy) == 1
	})
	if got := sizes.all(); len(got) != 0 {
		t.Fatalf("pipelines sent before any append: %v", got)
	}
	if _, _, err := appended(l.Append(ctx, protocol.Message{ID: "a", Conv: "dm:a:b", From: "a", Text: "x"}, "", nil)); err != nil {
		t.Fatal(err)
	}
	var r lazyResult
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the lazy call did not return after the append")
	}
	if r.err != nil || len(r.res) != 2 || r.res[0] != int64(42) || r.res[1] != int64(1) {
		t.Fatalf("lazy call: %v %v, want [42 1]", r.res, r.err)
	}
	// The append's pipeline: its conversation-list adds (none), its
	// script, and the lazy call's.
	if got := sizes.all(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("pipelines sent: %v, want one of 2 commands, the append's and the lazy call's", got)
	}
}

// With no append to ride in, a lazy call goes by itself after its wait,
// also to a Redis that forgot the script.
func TestLazyCallAloneGoesAfterItsWait(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		res, err := l.RunLazy(ctx, lazyEcho, []string{l.prefix + "lazy"}, i)
		if err != nil || len(res) != 2 || res[0] != int64(2*i) || res[1] != int64(i+1) {
			t.Fatalf("lazy call %d: %v %v, want [%d %d]", i, res, err, 2*i, i+1)
		}
	}
}
