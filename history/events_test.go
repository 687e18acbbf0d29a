package history_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

func event(conv string, seq int64, kind string, ref int64, text string) protocol.Message {
	m := msg(conv, seq)
	m.ID, m.Kind, m.Ref, m.Text = m.ID+"-"+kind, kind, ref, text
	return m
}

// copiesOf counts, per event seq, the copies of events the chunks of conv
// hold, and fails if one is in a block other than its target's.
func copiesOf(t *testing.T, chunks []eventChunk) map[int64]int {
	t.Helper()
	out := map[int64]int{}
	for _, c := range chunks {
		for _, js := range c.Edits {
			var m protocol.Message
			if err := json.Unmarshal([]byte(js), &m); err != nil {
				t.Fatalf("chunk %s: %v", c.ID, err)
			}
			if m.Ref/history.BlockSize != c.Block {
				t.Fatalf("chunk %s (block %d) holds a copy of event %d for seq %d", c.ID, c.Block, m.Seq, m.Ref)
			}
			out[m.Seq]++
		}
	}
	return out
}

type eventChunk struct {
	ID    string   `bson:"_id"`
	Block int64    `bson:"block"`
	Edits []string `bson:"edits"`
}

func eventChunks(t *testing.T, dbName, conv string) []eventChunk {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, err := mongoClient(t).Database(dbName).Collection("message_chunks").Find(ctx, map[string]string{"conv": conv})
	if err != nil {
		t.Fatal(err)
	}
	var out []eventChunk
	if err := cur.All(ctx, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// An edit or recall is stored at its own seq and, once, as a copy in its
// target's block, however often and by however many Stores it is written;
// reading applies the copies, so a page of old messages shows their final
// state without reading the blocks of the events.
func TestEventsIndexedInTheirTargetsBlocks(t *testing.T) {
	uri, dbName := testenv.Mongo(t), testenv.Namespace(t)
	a := openStoreAt(t, uri, dbName)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const conv = "dm:alice:bob"
	var msgs []protocol.Message
	for seq := int64(1); seq <= 150; seq++ {
		msgs = append(msgs, msg(conv, seq))
	}
	events := []protocol.Message{
		event(conv, 151, protocol.KindEdit, 5, "five, edited"),
		event(conv, 152, protocol.KindRecall, 7, ""),
		event(conv, 153, protocol.KindEdit, 120, "edited 120"),
		event(conv, 154, protocol.KindEdit, 5, "five again"),
		event(conv, 155, protocol.KindEdit, 152, "an event is no target"),
		event(conv, 156, protocol.KindEdit, 7, "edit of a recalled one"),
	}
	all := append(slices.Clone(msgs), events...)
	if err := a.UpsertMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if err := a.UpsertMessages(ctx, events[:3]); err != nil {
		t.Fatal(err)
	}
	if err := a.UpsertMessages(ctx, events[3:]); err != nil {
		t.Fatal(err)
	}
	// Written again: through the Store that wrote it, and through one
	// that knows nothing yet.
	if err := a.UpsertMessages(ctx, all); err != nil {
		t.Fatal(err)
	}
	b := openStoreAt(t, uri, dbName)
	if err := b.UpsertMessages(ctx, all); err != nil {
		t.Fatal(err)
	}
	wantCopies := map[int64]int{151: 1, 152: 1, 153: 1, 154: 1, 155: 1, 156: 1}
	if got := copiesOf(t, eventChunks(t, dbName, conv)); !maps(got, wantCopies) {
		t.Fatalf("copies per event seq %v, want %v", got, wantCopies)
	}

	check := func(s *history.Store, full bool, last5 protocol.Message) {
		t.Helper()
		got, err := s.Messages(ctx, conv, 0, 0, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		bySeq := map[int64]protocol.Message{}
		for _, m := range got {
			bySeq[m.Seq] = m
		}
		if m := bySeq[5]; m.Text != last5.Text || m.Edited != last5.TS || m.Recalled {
			t.Errorf("seq 5 reads %+v, want text %q edited at %d", m, last5.Text, last5.TS)
		}
		if m := bySeq[7]; !m.Recalled || m.Text != "" || m.Edited != 0 {
			t.Errorf("seq 7 reads %+v, want recalled with no text", m)
		}
		if m := bySeq[120]; full != (m.Text == "edited 120" && m.Edited == events[2].TS) {
			t.Errorf("seq 120 reads %+v, edited %v", m, full)
		}
		if m := bySeq[6]; m != msg(conv, 6) {
			t.Errorf("seq 6 reads %+v, want it as stored", m)
		}
		if !full {
			return
		}
		if m := bySeq[155]; m.Text != "an event is no target" || m.Recalled {
			t.Errorf("the edit of an event reads %+v, want it as stored", m)
		}
		if m := bySeq[156]; m.Text != "" || !m.Recalled {
			t.Errorf("the edit of a recalled message reads %+v, want it recalled with no text", m)
		}
	}
	check(a, true, events[3])
	check(b, true, events[3])

	// A page of block 0 alone carries the copies of every change to it.
	page, evs, err := b.Page(ctx, conv, 0, 11, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(seqs(page), rangeSeqs(1, 10)) || !equalSeqs(seqs(evs), []int64{151, 152, 154, 156}) {
		t.Fatalf("page %v with events %v, want 1..10 with 151, 152, 154, 156", seqs(page), seqs(evs))
	}
	if page[4].Text != msg(conv, 5).Text {
		t.Errorf("Page applied an event: %+v", page[4])
	}
	got, err := b.Events(ctx, conv, []int64{120, 5, 5, 999})
	if err != nil || !equalSeqs(seqs(got), []int64{151, 153, 154}) {
		t.Fatalf("Events(120, 5) = %v, %v; want 151, 153, 154", seqs(got), err)
	}

	// Forgetting the newest writes takes their copies along; writing them
	// again, by two Stores at once, puts one copy back each.
	if n, err := a.Forget(ctx, conv, 152); err != nil || n != 4 {
		t.Fatalf("Forget after 152 = %d, %v; want 4", n, err)
	}
	if got := copiesOf(t, eventChunks(t, dbName, conv)); !maps(got, map[int64]int{151: 1, 152: 1}) {
		t.Fatalf("after Forget, copies per event seq %v", got)
	}
	check(a, false, events[0])
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*history.Store{a, b} {
		wg.Go(func() { errs[i] = s.UpsertMessages(ctx, events) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := copiesOf(t, eventChunks(t, dbName, conv)); !maps(got, wantCopies) {
		t.Fatalf("after writing again, copies per event seq %v, want %v", got, wantCopies)
	}
	check(b, true, events[3])
}

// An event whose seq holds another message is not stored, and neither is
// its copy: it changes nothing.
func TestConflictingEventLeavesNoCopy(t *testing.T) {
	dbName := testenv.Namespace(t)
	s := openStoreAt(t, testenv.Mongo(t), dbName)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const conv = "room:evconflict"
	if err := s.UpsertMessages(ctx, []protocol.Message{msg(conv, 1), msg(conv, 2)}); err != nil {
		t.Fatal(err)
	}
	ev := event(conv, 2, protocol.KindRecall, 1, "")
	if err := s.UpsertMessages(ctx, []protocol.Message{ev}); !errors.Is(err, history.ErrConflict) {
		t.Fatalf("an event at a taken seq: %v, want a conflict", err)
	}
	if got := copiesOf(t, eventChunks(t, dbName, conv)); len(got) != 0 {
		t.Fatalf("copies %v, want none", got)
	}
	got, err := s.Messages(ctx, conv, 0, 0, 0, false)
	if err != nil || len(got) != 2 || got[0] != msg(conv, 1) {
		t.Fatalf("messages %+v, %v; want 1 and 2 as stored", got, err)
	}
}

func maps(a, b map[int64]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The writer stores the edits and recalls it reads from the stream with
// their copies, and entries it reads a second time (a writer that crashed
// before acknowledging them) leave one copy each.
func TestWriterStoresEventsOnce(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)
	const conv = "dm:alice:bob"
	var msgs []protocol.Message
	for seq := int64(1); seq <= 120; seq++ {
		msgs = append(msgs, msg(conv, seq))
	}
	msgs = append(msgs, event(conv, 121, protocol.KindEdit, 3, "three, edited"), event(conv, 122, protocol.KindRecall, 110, ""))
	stream := history.StreamKey(prefix, conv)
	if err := rdb.XGroupCreateMkStream(ctx, stream, history.Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	appendMessages(t, rdb, prefix, msgs)
	for round := range 2 {
		_, stop := runWriter(t, history.WriterConfig{
			// 100 entries of each stream per batch: the events come in
			// a batch after their targets'.
			Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 100 * len(history.StreamKeys(prefix)),
			Block: 50 * time.Millisecond, Logger: zerolog.Nop(),
		})
		testenv.WaitFor(t, 30*time.Second, "stream drained", func() bool { return drained(t, rdb, prefix, []string{conv}) })
		stop()
		if round == 0 {
			// The same entries again, as a writer that wrote them and
			// crashed before acknowledging leaves them.
			appendMessages(t, rdb, prefix, msgs)
		}
	}
	if got := copiesOf(t, eventChunks(t, ns, conv)); !maps(got, map[int64]int{121: 1, 122: 1}) {
		t.Fatalf("copies per event seq %v, want one of 121 and 122", got)
	}
	got, err := s.Messages(ctx, conv, 0, 0, 0, false)
	if err != nil || len(got) != 122 {
		t.Fatalf("%d messages, %v", len(got), err)
	}
	if m := got[2]; m.Text != "three, edited" || m.Edited != msgs[120].TS {
		t.Errorf("seq 3 reads %+v", m)
	}
	if m := got[109]; !m.Recalled || m.Text != "" {
		t.Errorf("seq 110 reads %+v", m)
	}
}
