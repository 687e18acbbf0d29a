package node

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/chatlog"
	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// testJournal is the node's journal over the test's Redis and MongoDB,
// under a namespace of the test's own, with Redis marked fresh (a new
// deployment).
func testJournal(t *testing.T) (*journal, redis.UniversalClient, string) {
	t.Helper()
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := history.Open(ctx, testenv.Mongo(t), ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = store.Close(ctx)
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
	log := chatlog.New(rdb, prefix)
	if err := log.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	return &journal{log: log, store: store}, rdb, prefix
}

// fill appends to conv, from alice to bob, the messages of each part in
// turn: n plain ones for a number, the events given for a list. It returns
// what was stored, by seq from 1.
func fill(t *testing.T, j *journal, conv string, parts ...any) []protocol.Message {
	t.Helper()
	ctx := context.Background()
	var out []protocol.Message
	add := func(m protocol.Message) {
		n := len(out) + 1
		m.ID, m.Conv, m.From, m.To, m.TS = fmt.Sprintf("m%d", n), conv, "alice", "bob", int64(1000+n)
		if m.Kind == "" {
			m.Text = fmt.Sprintf("text %d", n)
		}
		st, err := j.Append(ctx, m, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Message)
	}
	for _, p := range parts {
		switch p := p.(type) {
		case int:
			for range p {
				add(protocol.Message{})
			}
		case []protocol.Message:
			for _, e := range p {
				add(e)
			}
		}
	}
	return out
}

// flush does what the history writer does with the entries at seqs: it
// writes them to MongoDB and then takes them out of the pending hash.
func flush(t *testing.T, j *journal, rdb redis.UniversalClient, prefix string, all []protocol.Message, seqs ...int64) {
	t.Helper()
	ctx := context.Background()
	var msgs []protocol.Message
	var fields []string
	for _, s := range seqs {
		msgs = append(msgs, all[s-1])
		fields = append(fields, strconv.FormatInt(s, 10))
	}
	if err := j.store.UpsertMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, history.PendingKey(prefix, all[0].Conv), fields...).Err(); err != nil {
		t.Fatal(err)
	}
}

func span(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// want checks the message at seq in page: its text and whether it reads
// back edited and recalled.
func want(t *testing.T, page []protocol.Message, seq int64, text string, edited, recalled bool) {
	t.Helper()
	for _, m := range page {
		if m.Seq != seq {
			continue
		}
		if m.Text != text || (m.Edited != 0) != edited || m.Recalled != recalled {
			t.Errorf("seq %d reads %+v; want text %q, edited %v, recalled %v", seq, m, text, edited, recalled)
		}
		return
	}
	t.Errorf("seq %d is not in the page %v", seq, pageSeqs(page))
}

func pageSeqs(page []protocol.Message) []int64 {
	out := make([]int64, len(page))
	for i, m := range page {
		out[i] = m.Seq
	}
	return out
}

// Range returns messages in their final state wherever their events are:
// in Redis, in MongoDB, or moved by the writer out of order (before the
// messages they change), and an edit of a recalled message outside the
// page reads back recalled.
func TestRangeAppliesEvents(t *testing.T) {
	j, rdb, prefix := testJournal(t)
	ctx := context.Background()
	const conv = "dm:alice:bob"
	// 1..100 messages; 101 edits 5, 102 recalls 7, 103 edits 60, 104 edits
	// 90, 105 recalls 60; 106..200 messages.
	all := fill(t, j, conv, 100, []protocol.Message{
		{Kind: protocol.KindEdit, Ref: 5, Text: "five, edited"},
		{Kind: protocol.KindRecall, Ref: 7},
		{Kind: protocol.KindEdit, Ref: 60, Text: "secret"},
		{Kind: protocol.KindEdit, Ref: 90, Text: "90, edited"},
		{Kind: protocol.KindRecall, Ref: 60},
	}, 95)
	check := func(stage string) {
		t.Helper()
		read := func(after, before int64, limit int, newest bool) []protocol.Message {
			t.Helper()
			page, err := j.Range(ctx, conv, after, before, limit, newest)
			if err != nil {
				t.Fatalf("%s: %v", stage, err)
			}
			return page
		}
		old := read(0, 51, 50, true)
		want(t, old, 5, "five, edited", true, false)
		want(t, old, 7, "", false, true)
		want(t, old, 6, "text 6", false, false)
		synced := read(50, 201, protocol.MaxSyncMessages, false)
		want(t, synced, 60, "", false, true)
		want(t, synced, 90, "90, edited", true, false)
		want(t, synced, 101, "five, edited", false, false) // the edit itself, as sent
		want(t, synced, 103, "", false, true)              // an edit of a recalled message
		if len(synced) != 150 {
			t.Errorf("%s: sync page %v", stage, pageSeqs(synced))
		}
		alone := read(102, 104, 10, false)
		want(t, alone, 103, "", false, true)
		if len(alone) != 1 {
			t.Errorf("%s: page of 103 alone is %v", stage, pageSeqs(alone))
		}
		if recent := read(0, 0, 50, true); len(recent) != 50 || recent[0].Seq != 151 {
			t.Errorf("%s: newest page %v", stage, pageSeqs(recent))
		}
	}
	check("all in Redis")
	// The writer moved the events before the messages they change (it
	// took over a dead writer's entries): they are older than the recent
	// list and in MongoDB only.
	flush(t, j, rdb, prefix, all, span(101, 105)...)
	check("events moved before their messages")
	flush(t, j, rdb, prefix, all, span(1, 100)...)
	check("messages and events in MongoDB")
	flush(t, j, rdb, prefix, all, span(106, 200)...)
	check("all in MongoDB")
	// Redis lost the recent list: nothing is known to be in Redis alone.
	if err := rdb.Del(ctx, j.log.RecentKey(conv)).Err(); err != nil {
		t.Fatal(err)
	}
	check("the recent list lost")
}

// While the history writer moves entries from Redis to MongoDB, every
// read shows the messages in their final state.
func TestRangeWhileTheWriterMoves(t *testing.T) {
	j, rdb, prefix := testJournal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const conv = "dm:alice:bob"
	var evs []protocol.Message
	for ref := int64(1); ref <= 300; ref += 3 {
		evs = append(evs, protocol.Message{Kind: protocol.KindEdit, Ref: ref, Text: fmt.Sprintf("edited %d", ref)},
			protocol.Message{Kind: protocol.KindRecall, Ref: ref + 1})
	}
	fill(t, j, conv, 300, evs)
	w, err := history.NewWriter(history.WriterConfig{Redis: rdb, Prefix: prefix, Store: j.store, Consumer: "n1",
		Batch: 64 * len(history.StreamKeys(prefix)), Block: 10 * time.Millisecond, Linger: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	defer func() { stop(); wg.Wait() }()
	check := func() {
		t.Helper()
		for before := int64(51); before <= 301; before += 50 {
			page, err := j.Range(ctx, conv, 0, before, 50, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range page {
				switch {
				case m.Seq%3 == 1 && (m.Text != fmt.Sprintf("edited %d", m.Seq) || m.Edited == 0):
					t.Fatalf("seq %d reads %+v, want it edited", m.Seq, m)
				case m.Seq%3 == 2 && (!m.Recalled || m.Text != ""):
					t.Fatalf("seq %d reads %+v, want it recalled", m.Seq, m)
				case m.Seq%3 == 0 && m.Text != fmt.Sprintf("text %d", m.Seq):
					t.Fatalf("seq %d reads %+v, want it as sent", m.Seq, m)
				}
			}
		}
	}
	for {
		check()
		n, err := rdb.HLen(ctx, history.PendingKey(prefix, conv)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the writer did not drain %d entries", n)
		}
	}
	check()
}

// Redis loses its data twice before the history writer stored anything
// numbered after the first loss: the second seeding starts above the
// first one's counter, so no seq acknowledged in between is given again,
// and the floor it reports, what is stored, lets clients give back what
// they hold above it.
func TestSeedingTwiceGivesNoSeqAgain(t *testing.T) {
	ctx := context.Background()
	j, rdb, prefix := testJournal(t)
	const conv = "cs:~visitor:1"
	lose := func() { t.Helper(); loseRedis(t, rdb, prefix) }
	send := func(n int) int64 {
		t.Helper()
		st, err := j.Append(ctx, protocol.Message{ID: fmt.Sprintf("m%d", n), Conv: conv, From: "~visitor", To: "agent", TS: int64(n), Text: "hi"}, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return st.Message.Seq
	}
	lose() // the conversation begins after a first loss
	if a, b := send(1), send(2); a != chatlog.SeqGap+1 || b != chatlog.SeqGap+2 {
		t.Fatalf("after the first loss: seqs %d and %d, want %d and %d", a, b, chatlog.SeqGap+1, chatlog.SeqGap+2)
	}
	lose() // and both messages go with the second one
	if got := send(3); got <= chatlog.SeqGap+2 {
		t.Fatalf("after the second loss the next message got seq %d, given before", got)
	} else if got != 2*chatlog.SeqGap+1 {
		t.Fatalf("after the second loss: seq %d, want %d", got, 2*chatlog.SeqGap+1)
	}
	floors, err := j.log.Reseeded(ctx, []string{conv})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := floors[conv]; !ok || f != 0 {
		t.Fatalf("floor after the second loss %d (%v), want 0: nothing of it is stored, and clients hold what was", f, ok)
	}
}

// loseRedis deletes every key of prefix, as a Redis restarted empty.
func loseRedis(t *testing.T, rdb redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// Redis loses messages 7 to 10 of a conversation (MongoDB holds 1 to 6),
// and the first message after the loss, numbered above the gap, reaches
// both users at once. Alice, at 6, must not be given it before bob, at
// 10, has given 7 to 10 back: her offset would pass numbers that are
// filled after it, and she would never see them. So for SettleWindow
// after the seeding her sync is given nothing above the floor; then
// everything, in order.
func TestSyncWaitsWhileLostMessagesComeBack(t *testing.T) {
	ctx := context.Background()
	j, rdb, prefix := testJournal(t)
	const conv = "dm:alice:bob"
	all := fill(t, j, conv, 10)
	flush(t, j, rdb, prefix, all, span(1, 6)...)
	loseRedis(t, rdb, prefix)
	seeded := time.Now()
	after, err := j.Append(ctx, protocol.Message{ID: "after", Conv: conv, From: "bob", To: "alice", TS: 5000, Text: "back"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(6 + chatlog.SeqGap + 1); after.Message.Seq != want {
		t.Fatalf("first message after the loss: seq %d, want %d", after.Message.Seq, want)
	}
	gaps, err := j.Unsure(ctx, map[string]int64{conv: 6})
	if err != nil {
		t.Fatal(err)
	}
	if g := gaps[conv]; time.Since(seeded) < SettleWindow && (!g.Settling || g.Rebuild || g.Floor != 6) {
		t.Fatalf("alice at 6 right after the seeding: %+v, want settling above floor 6", g)
	}
	gaps, err = j.Unsure(ctx, map[string]int64{conv: 10})
	if err != nil {
		t.Fatal(err)
	}
	if g := gaps[conv]; !g.Rebuild || g.Floor != 6 {
		t.Fatalf("bob at 10: %+v, want rebuild above floor 6", g)
	}
	// A conversation begun after the loss has nothing anyone could give
	// back: its first messages are not held back.
	const fresh = "dm:carol:dan"
	first, err := j.Append(ctx, protocol.Message{ID: "new", Conv: fresh, From: "carol", To: "dan", TS: 5001, Text: "hi"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if gaps, err := j.Unsure(ctx, map[string]int64{fresh: 0}); err != nil || gaps[fresh].Settling || gaps[fresh].Rebuild {
		t.Fatalf("dan at 0 in a conversation begun after the loss (first seq %d): %+v, %v; want nothing held back", first.Message.Seq, gaps[fresh], err)
	}
	if n, _, err := j.Restore(ctx, conv, all[6:], nil); err != nil || n != 4 {
		t.Fatalf("bob gives back 7 to 10: %d stored, %v; want 4", n, err)
	}
	testenv.WaitFor(t, time.Minute, "the gap to settle", func() bool {
		gaps, err := j.Unsure(ctx, map[string]int64{conv: 6})
		if err != nil {
			t.Fatal(err)
		}
		return !gaps[conv].Settling
	})
	if time.Since(seeded) < SettleWindow {
		t.Fatalf("settled %v after the seeding, before the window of %v", time.Since(seeded), SettleWindow)
	}
	page, err := j.Range(ctx, conv, 6, 0, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pageSeqs(page), append(span(7, 10), after.Message.Seq); !slices.Equal(got, want) {
		t.Fatalf("alice's sync from 6 after the window: seqs %v, want %v", got, want)
	}
}
