package history_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// chunk is a document of message_chunks as a test reads it.
type chunk struct {
	ID    string   `bson:"_id"`
	Conv  string   `bson:"conv"`
	Block int64    `bson:"block"`
	Msgs  []string `bson:"msgs"`
}

func chunksOf(t *testing.T, db *mongo.Database, conv string) []chunk {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, err := db.Collection("message_chunks").Find(ctx, bson.M{"conv": conv})
	if err != nil {
		t.Fatal(err)
	}
	var out []chunk
	if err := cur.All(ctx, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// One write stores one chunk per block it adds to, each message as its
// JSON, and a record of the newest block per conversation; a second
// write of the same block adds the next chunk.
func TestBlockLayout(t *testing.T) {
	dbName := testenv.Namespace(t)
	s := openStoreAt(t, testenv.Mongo(t), dbName)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const conv = "room:layout"
	var batch []protocol.Message
	for seq := int64(1); seq <= 250; seq++ {
		batch = append(batch, msg(conv, seq))
	}
	if err := s.UpsertMessages(ctx, batch[:230]); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertMessages(ctx, batch[230:]); err != nil {
		t.Fatal(err)
	}
	db := mongoClient(t).Database(dbName)
	got := map[string][]int64{}
	for _, c := range chunksOf(t, db, conv) {
		for _, js := range c.Msgs {
			var m protocol.Message
			if err := json.Unmarshal([]byte(js), &m); err != nil {
				t.Fatalf("chunk %s: %v", c.ID, err)
			}
			if m != msg(conv, m.Seq) || m.Seq/history.BlockSize != c.Block {
				t.Fatalf("chunk %s (block %d) holds %+v", c.ID, c.Block, m)
			}
			got[c.ID] = append(got[c.ID], m.Seq)
		}
	}
	want := map[string][]int64{
		conv + "/0/0": rangeSeqs(1, 99), conv + "/1/0": rangeSeqs(100, 199),
		conv + "/2/0": rangeSeqs(200, 230), conv + "/2/1": rangeSeqs(231, 250),
	}
	if len(got) != len(want) {
		t.Fatalf("chunks %v, want %v", got, want)
	}
	for id, seqs := range want {
		if !equalSeqs(got[id], seqs) {
			t.Fatalf("chunk %s holds %v, want %v", id, got[id], seqs)
		}
	}
	cur, err := db.Collection("message_tops").Find(ctx, bson.M{"conv": conv})
	if err != nil {
		t.Fatal(err)
	}
	var tops []struct {
		ID    string `bson:"_id"`
		Block int64  `bson:"block"`
	}
	if err := cur.All(ctx, &tops); err != nil {
		t.Fatal(err)
	}
	if len(tops) != 1 || tops[0].ID != conv+"/0" || tops[0].Block != 2 {
		t.Fatalf("newest-block records %+v, want one, %s/0 with block 2", tops, conv)
	}
	copies, err := s.StoredCopies(ctx, conv)
	if err != nil || len(copies) != 250 {
		t.Fatalf("StoredCopies holds %d seqs (%v), want 250", len(copies), err)
	}
}

// Writing again what is stored, through the Store that wrote it or a new
// one that knows nothing yet, and two Stores writing the same blocks at
// once, leave one copy of every message.
func TestUpsertNeverDuplicates(t *testing.T) {
	uri, dbName := testenv.Mongo(t), testenv.Namespace(t)
	a := openStoreAt(t, uri, dbName)
	b := openStoreAt(t, uri, dbName)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	convs := []string{"room:dupa", "room:dupb", "room:dupc"}
	var all []protocol.Message
	for seq := int64(1); seq <= 300; seq++ {
		for _, cv := range convs {
			all = append(all, msg(cv, seq))
		}
	}
	if err := a.UpsertMessages(ctx, all[:400]); err != nil {
		t.Fatal(err)
	}
	// b knows nothing of what a wrote; a writes overlapping batches again.
	if err := b.UpsertMessages(ctx, all[:500]); err != nil {
		t.Fatal(err)
	}
	if err := a.UpsertMessages(ctx, all[300:600]); err != nil {
		t.Fatal(err)
	}
	// Both write the rest at once, in batches that overlap.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, s := range []*history.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := 500 + 17*i; lo < len(all); lo += 60 {
				if err := s.UpsertMessages(ctx, all[lo:min(lo+90, len(all))]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := b.UpsertMessages(ctx, all); err != nil {
		t.Fatal(err)
	}
	for _, cv := range convs {
		copies, err := a.StoredCopies(ctx, cv)
		if err != nil {
			t.Fatal(err)
		}
		for seq := int64(1); seq <= 300; seq++ {
			if ids := copies[seq]; len(ids) != 1 || ids[0] != msg(cv, seq).ID {
				t.Fatalf("%s seq %d stored as %v, want once", cv, seq, ids)
			}
		}
		if len(copies) != 300 {
			t.Fatalf("%s holds %d seqs, want 300", cv, len(copies))
		}
		for _, s := range []*history.Store{a, b} {
			if top, err := s.LatestSeq(ctx, cv); err != nil || top != 300 {
				t.Fatalf("LatestSeq(%s) = %d, %v; want 300", cv, top, err)
			}
		}
	}
	checkStored(t, b, all)
}

// Forgotten messages are gone for every reader, and writing them again
// (as a client's rebuild does) stores them again, even through the Store
// that wrote them first.
func TestForgetThenWriteAgain(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const conv = "dm:amy:bob"
	var batch []protocol.Message
	for seq := int64(1); seq <= 130; seq++ {
		batch = append(batch, msg(conv, seq))
	}
	if err := s.UpsertMessages(ctx, batch); err != nil {
		t.Fatal(err)
	}
	n, err := s.Forget(ctx, conv, 95)
	if err != nil || n != 35 {
		t.Fatalf("Forget = %d, %v; want 35", n, err)
	}
	if top, err := s.LatestSeq(ctx, conv); err != nil || top != 95 {
		t.Fatalf("LatestSeq after Forget = %d, %v; want 95", top, err)
	}
	got, err := s.Messages(ctx, conv, 0, 0, 10, true)
	if err != nil || !equalSeqs(seqs(got), rangeSeqs(86, 95)) {
		t.Fatalf("newest after Forget = %v, %v", seqs(got), err)
	}
	if err := s.UpsertMessages(ctx, batch[90:]); err != nil {
		t.Fatal(err)
	}
	checkStored(t, s, batch)
	copies, err := s.StoredCopies(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	for seq, ids := range copies {
		if len(ids) != 1 {
			t.Fatalf("seq %d stored %d times", seq, len(ids))
		}
	}
}

// Conversations with gaps in their seqs (a counter seeded after a loss)
// and many blocks read right, also by a Store that knows nothing of them.
func TestGapsAndManyBlocks(t *testing.T) {
	uri, dbName := testenv.Mongo(t), testenv.Namespace(t)
	s := openStoreAt(t, uri, dbName)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const gappy, long = "room:gappy", "room:long"
	var want []protocol.Message
	for seq := int64(1); seq <= 50; seq++ {
		want = append(want, msg(gappy, seq))
	}
	for seq := int64(1051); seq <= 1100; seq++ {
		want = append(want, msg(gappy, seq))
	}
	if err := s.UpsertMessages(ctx, want); err != nil {
		t.Fatal(err)
	}
	// One write per block: a long log of newest blocks.
	for b := int64(0); b < 37; b++ {
		var batch []protocol.Message
		for seq := max(b*history.BlockSize, 1); seq < (b+1)*history.BlockSize; seq += 7 {
			batch = append(batch, msg(long, seq))
		}
		if err := s.UpsertMessages(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	fresh := openStoreAt(t, uri, dbName)
	for _, r := range []*history.Store{s, fresh} {
		if top, err := r.LatestSeq(ctx, gappy); err != nil || top != 1100 {
			t.Fatalf("LatestSeq(gappy) = %d, %v", top, err)
		}
		if top, err := r.LatestSeq(ctx, long); err != nil || top != 3698 {
			t.Fatalf("LatestSeq(long) = %d, %v; want 3698", top, err)
		}
		got, err := r.Messages(ctx, gappy, 0, 0, 60, true)
		if err != nil || !equalSeqs(seqs(got), append(rangeSeqs(41, 50), rangeSeqs(1051, 1100)...)) {
			t.Fatalf("newest 60 of gappy = %v, %v", seqs(got), err)
		}
		got, err = r.Messages(ctx, gappy, 45, 0, 10, false)
		if err != nil || !equalSeqs(seqs(got), append(rangeSeqs(46, 50), rangeSeqs(1051, 1055)...)) {
			t.Fatalf("10 after 45 of gappy = %v, %v", seqs(got), err)
		}
		got, err = r.Messages(ctx, gappy, 0, 1_000_000, 3, true)
		if err != nil || !equalSeqs(seqs(got), rangeSeqs(1098, 1100)) {
			t.Fatalf("3 before a far seq = %v, %v", seqs(got), err)
		}
		if got, err := r.Messages(ctx, gappy, 1100, 0, 10, false); err != nil || len(got) != 0 {
			t.Fatalf("after the newest = %v, %v", seqs(got), err)
		}
	}
}

// A store written by earlier builds keeps one document per message, in
// one "messages" collection or in 32 buckets "messages_NN": opening it
// moves them into blocks, logging its progress, and drops the old
// collections. A move cut short (some messages in blocks already) resumes
// without storing any twice; opening again changes nothing; a message at a
// seq that holds another one in blocks loses to it.
func TestOpenMovesTheOldLayouts(t *testing.T) {
	uri, dbName := testenv.Mongo(t), testenv.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	mc := mongoClient(t)
	db := mc.Database(dbName)
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	legacyDoc := func(cv string, seq int64, text string) bson.D {
		return bson.D{{Key: "_id", Value: fmt.Sprintf("%s-%d", cv, seq)}, {Key: "conv", Value: cv},
			{Key: "seq", Value: seq}, {Key: "from", Value: "amy"}, {Key: "text", Value: text}, {Key: "ts", Value: seq}}
	}
	old := protocol.DMConv("amy", "bob") // in the single collection
	// Bucketed conversations; their buckets are those of the earlier
	// layout, but any name of the set is moved.
	bucketed := []string{protocol.RoomConv("lobby"), protocol.RoomConv("dev"), protocol.DMConv("amy", "cid")}
	want := func(cv string, seq int64) protocol.Message {
		text := "bucketed"
		if cv == old {
			text = "old"
		}
		return protocol.Message{ID: fmt.Sprintf("%s-%d", cv, seq), Conv: cv, Seq: seq, From: "amy", Text: text, TS: seq}
	}
	// A move cut short: part of lobby is in blocks already, and a writer
	// stored another message at dev's seq 7.
	pre, err := history.Open(ctx, uri, dbName, history.WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close(ctx)
	var part []protocol.Message
	for seq := int64(100); seq <= 260; seq++ {
		part = append(part, want(bucketed[0], seq))
	}
	if err := pre.UpsertMessages(ctx, part); err != nil {
		t.Fatal(err)
	}
	other := protocol.Message{ID: "new-7", Conv: bucketed[1], Seq: 7, From: "zed", Text: "won", TS: 7}
	if err := pre.UpsertMessages(ctx, []protocol.Message{other}); err != nil {
		t.Fatal(err)
	}
	var docs []any
	for seq := int64(1); seq <= 1200; seq++ {
		docs = append(docs, legacyDoc(old, seq, "old"))
	}
	if _, err := db.Collection("messages").InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	for i, cv := range bucketed {
		docs = docs[:0]
		for seq := int64(1); seq <= 450; seq++ {
			docs = append(docs, legacyDoc(cv, seq, "bucketed"))
		}
		if _, err := db.Collection(fmt.Sprintf("messages_%02d", 3*i+1)).InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
	}

	for round := range 2 {
		log := &logBuf{}
		s, err := history.Open(ctx, uri, dbName, history.WithLogger(zerolog.New(log)))
		if err != nil {
			t.Fatal(err)
		}
		for _, cv := range append([]string{old}, bucketed...) {
			got, err := s.Messages(ctx, cv, 0, 0, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			n := int64(450)
			if cv == old {
				n = 1200
			}
			if int64(len(got)) != n {
				t.Fatalf("round %d: %s has %d messages, want %d", round, cv, len(got), n)
			}
			for i, m := range got {
				w := want(cv, int64(i+1))
				if cv == other.Conv && m.Seq == other.Seq {
					w = other
				}
				if m != w {
					t.Fatalf("round %d: %s message %d = %+v, want %+v", round, cv, i, m, w)
				}
			}
			copies, err := s.StoredCopies(ctx, cv)
			if err != nil {
				t.Fatal(err)
			}
			for seq, ids := range copies {
				if len(ids) != 1 {
					t.Fatalf("round %d: %s seq %d stored %d times", round, cv, seq, len(ids))
				}
			}
		}
		if empty, err := s.Empty(ctx); err != nil || empty {
			t.Fatalf("Empty = %v, %v; want false", empty, err)
		}
		names, err := db.ListCollectionNames(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if n == "messages" || len(n) == len("messages_00") && n[:9] == "messages_" {
				t.Fatalf("round %d: old collection %s is still there", round, n)
			}
		}
		switch round {
		case 0:
			for _, l := range [][]string{
				{"moving messages of the old layout into blocks", `"collections":4`},
				{"moving a collection of the old layout", `"collection":"messages"`, `"messages":1200`},
				{"collection of the old layout moved and dropped", `"collection":"messages_04"`, `"moved":450`},
				{"collection of the old layout moved and dropped", `"collection":"messages"`, `"moved":1200`},
				{"old layout moved into blocks", `"messages":2550`, `"conflicts":1`},
			} {
				if len(log.Lines(l...)) != 1 {
					t.Errorf("no log line with %q:\n%s", l, log)
				}
			}
		case 1:
			if log.String() != "" {
				t.Errorf("second Open logged:\n%s", log)
			}
		}
		s.Close(ctx)
	}
}

func mongoClient(t *testing.T) *mongo.Client {
	t.Helper()
	mc, err := mongo.Connect(options.Client().ApplyURI(testenv.Mongo(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	return mc
}

// BenchmarkRangeRead measures one range read of a conversation (what a
// sync does when Redis does not cover it) in a store holding 32,000
// messages over 64 conversations.
func BenchmarkRangeRead(b *testing.B) {
	s := openStore(b)
	ctx := context.Background()
	const convs, per = 64, 500
	batch := make([]protocol.Message, 0, 4000)
	for c := range convs {
		for seq := int64(1); seq <= per; seq++ {
			batch = append(batch, msg(fmt.Sprintf("room:bench%02d", c), seq))
			if len(batch) == cap(batch) {
				if err := s.UpsertMessages(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		got, err := s.Messages(ctx, fmt.Sprintf("room:bench%02d", i%convs), 200, 251, 0, false)
		if err != nil || len(got) != 50 {
			b.Fatalf("read %d messages (%v), want 50", len(got), err)
		}
	}
}

// Held tells which uploaded seqs and ids the store holds for a
// conversation, and nothing of other conversations.
func TestHeld(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conv, other := protocol.DMConv("amy", "bob"), protocol.DMConv("amy", "cid")
	var stored []protocol.Message
	for seq := int64(1); seq <= 10; seq++ {
		stored = append(stored, msg(conv, seq), msg(other, seq))
	}
	if err := s.UpsertMessages(ctx, stored); err != nil {
		t.Fatal(err)
	}
	up := []protocol.Message{
		msg(conv, 3),                               // held: same id, same seq
		{ID: "new-5", Conv: conv, Seq: 5},          // seq held by another message
		{ID: "new-20", Conv: conv, Seq: 20},        // new
		{ID: msg(other, 4).ID, Conv: conv, Seq: 4}, // another conversation's id
		{ID: "new-250", Conv: conv, Seq: 250},      // beyond the newest block
	}
	seqs, ids, err := s.Held(ctx, conv, up)
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 3 || !seqs[3] || !seqs[5] || !seqs[4] {
		t.Fatalf("held seqs %v, want 3, 4 and 5", seqs)
	}
	if len(ids) != 1 || !ids[msg(conv, 3).ID] {
		t.Fatalf("held ids %v, want only %s", ids, msg(conv, 3).ID)
	}
	if seqs, ids, err := s.Held(ctx, conv, nil); err != nil || len(seqs)+len(ids) != 0 {
		t.Fatalf("Held of nothing = %v %v %v", seqs, ids, err)
	}
}
