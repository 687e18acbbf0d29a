package history

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/protocol"
)

// Earlier builds stored one document per message,
//
//	{_id: message id, conv, seq, from, to?, room?, text, ts}
//
// first in one "messages" collection, later spread over 32 buckets
// "messages_00".."messages_31" by a hash of the conversation. Open moves
// what such collections hold into the block layout and drops each one
// once it is moved.
//
// Moving is idempotent: a message already in the block layout (moved
// before a stop, or written by a writer since) is left as it is, and a
// message whose seq holds another one there loses to it (counted as a
// conflict). So a move cut short resumes with the collections still there,
// and nodes opening the store at once are harmless: they go through the
// collections in their own random order, and whoever finishes one drops it.
const legacyBuckets = 32

// legacyCollections returns the names of the collections of earlier
// layouts.
func legacyCollections() []string {
	names := []string{"messages"}
	for i := range legacyBuckets {
		names = append(names, fmt.Sprintf("messages_%02d", i))
	}
	return names
}

// legacyDoc is a message as earlier builds stored it.
type legacyDoc struct {
	ID   string `bson:"_id"`
	Conv string `bson:"conv"`
	Seq  int64  `bson:"seq"`
	From string `bson:"from"`
	To   string `bson:"to,omitempty"`
	Room string `bson:"room,omitempty"`
	Text string `bson:"text"`
	TS   int64  `bson:"ts"`
}

func (d legacyDoc) message() protocol.Message {
	return protocol.Message{ID: d.ID, Conv: d.Conv, Seq: d.Seq, From: d.From, To: d.To, Room: d.Room, Text: d.Text, TS: d.TS}
}

// Bounds of one move: blocks are written once they are complete (all their
// seqs read), in writes of migrateWrite messages, and everything read is
// written once migrateBuffer messages wait, so that most blocks get one
// chunk while memory stays bounded.
const (
	migrateWrite    = 5000
	migrateBuffer   = 50000
	migrateLogEvery = 10 * time.Second
)

// migrate moves the messages of every collection of an earlier layout that
// exists into the block layout.
func (s *Store) migrate(ctx context.Context) error {
	present, err := s.collectionNames(ctx)
	if err != nil {
		return fmt.Errorf("list collections: %w", err)
	}
	var todo []string
	for _, name := range legacyCollections() {
		if present[name] {
			todo = append(todo, name)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	rand.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })
	start := time.Now()
	s.log.Info().Int("collections", len(todo)).Msg("moving messages of the old layout into blocks")
	var moved, conflicts int
	for i, name := range todo {
		n, c, err := s.moveCollection(ctx, name, i+1, len(todo))
		moved, conflicts = moved+n, conflicts+c
		if err != nil {
			return fmt.Errorf("move messages of %s into blocks: %w", name, err)
		}
	}
	s.log.Info().Int("messages", moved).Int("conflicts", conflicts).Dur("took", time.Since(start)).
		Msg("old layout moved into blocks")
	return nil
}

// collectionNames returns the names of the database's collections.
func (s *Store) collectionNames(ctx context.Context) (map[string]bool, error) {
	names, err := s.db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// moveCollection moves the messages of the legacy collection name (the
// nth of the move) into blocks, drops it, and returns how many messages it
// read and how many of them lost to another message at their seq.
func (s *Store) moveCollection(ctx context.Context, name string, nth, of int) (moved, conflicts int, err error) {
	coll := s.db.Collection(name)
	log := s.log.With().Str("collection", name).Int("nth", nth).Int("of", of).Logger()
	total, err := coll.EstimatedDocumentCount(ctx)
	if err != nil {
		return 0, 0, err
	}
	start, lastLog := time.Now(), time.Now()
	log.Info().Int64("messages", total).Msg("moving a collection of the old layout")

	buf := map[blockKey][]item{}
	var ready []blockKey // complete blocks in buf
	buffered, readyItems := 0, 0
	write := func(keys []blockKey) error {
		var items []item
		for _, k := range keys {
			items = append(items, buf[k]...)
			delete(buf, k)
		}
		buffered -= len(items)
		err := s.upsert(ctx, items)
		var ce *ConflictError
		if errors.As(err, &ce) {
			conflicts += len(ce.IDs)
			log.Warn().Int("conflicts", len(ce.IDs)).Msg("old messages lost to other messages at their seqs")
			err = nil
		}
		moved += len(items)
		return err
	}

	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000))
	if err != nil {
		return 0, 0, err
	}
	defer cur.Close(context.WithoutCancel(ctx))
	skipped := 0
	for cur.Next(ctx) {
		var d legacyDoc
		if err := cur.Decode(&d); err != nil {
			return moved, conflicts, err
		}
		m := d.message()
		if checkMessage(m) != nil {
			skipped++
			continue
		}
		it, err := newItem(m, "")
		if err != nil {
			return moved, conflicts, err
		}
		k := blockKey{m.Conv, blockOf(m.Seq)}
		buf[k] = append(buf[k], it)
		buffered++
		full := BlockSize
		if k.block == 0 {
			full-- // seqs start at 1
		}
		if len(buf[k]) == full {
			ready = append(ready, k)
			readyItems += full
		}
		switch {
		case buffered >= migrateBuffer:
			if err := write(keysOf(buf)); err != nil {
				return moved, conflicts, err
			}
			ready, readyItems = ready[:0], 0
		case readyItems >= migrateWrite:
			if err := write(ready); err != nil {
				return moved, conflicts, err
			}
			ready, readyItems = ready[:0], 0
		}
		if time.Since(lastLog) >= migrateLogEvery {
			lastLog = time.Now()
			log.Info().Int("moved", moved).Int64("messages", total).Dur("took", time.Since(start)).Msg("moving a collection of the old layout")
		}
	}
	if err := cur.Err(); err != nil {
		if present, lerr := s.collectionNames(ctx); lerr == nil && !present[name] {
			// Another node moved and dropped it meanwhile.
			log.Info().Msg("collection of the old layout moved by another node")
			return moved, conflicts, nil
		}
		return moved, conflicts, err
	}
	if err := write(keysOf(buf)); err != nil {
		return moved, conflicts, err
	}
	if err := coll.Drop(ctx); err != nil {
		return moved, conflicts, fmt.Errorf("drop: %w", err)
	}
	ev := log.Info().Int("moved", moved).Dur("took", time.Since(start))
	if skipped > 0 {
		ev = ev.Int("skipped", skipped)
	}
	ev.Msg("collection of the old layout moved and dropped")
	return moved, conflicts, nil
}

// keysOf returns the keys of buf in a stable order.
func keysOf(buf map[blockKey][]item) []blockKey {
	keys := make([]blockKey, 0, len(buf))
	for k := range buf {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b blockKey) int {
		return cmp.Or(strings.Compare(a.conv, b.conv), cmp.Compare(a.block, b.block))
	})
	return keys
}
