package chatlog

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

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
