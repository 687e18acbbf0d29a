package history

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/protocol"
)

// The message layout (see doc.go for the whole picture).
//
// A conversation's seqs are cut into blocks of BlockSize: block b holds
// seqs b*BlockSize .. b*BlockSize+BlockSize-1. A block is stored as chunks,
// documents that are written once and never changed by the writer:
//
//	message_chunks {_id: "<conv>/<block>/<k>", conv, block, msgs: [json, ...], edits?: [json, ...]}
//
// with k = 0, 1, 2, ... without a hole, and msgs the block's messages the
// chunk added, each as its protocol.Message JSON, in seq order. edits are
// the edit and recall events, stored under their own seqs in their own
// blocks, that target messages of this block (their Ref): a copy of each
// such event is added to the target's block as well, so that reading a
// block gives its messages and every change made to them since, and a
// page of history needs no read beyond its own blocks. A write
// inserts the next chunk of every block it adds messages to, all in one
// insert; two writers that pick the same k collide on _id, so the loser
// reads what the winner stored and tries the next k. Reading a block is
// reading its chunks by _id until the first that is missing.
//
// Which block is a conversation's newest is kept in a log of the same kind:
//
//	message_tops {_id: "<conv>/<k>", conv, block}
//
// k = 0, 1, 2, ... without a hole and block rising with k: before a write
// adds the first messages above a conversation's newest block, it appends
// a record with the new block (a separate insert, before the chunks, so a
// chunk is never stored above the last record). The last record is found
// by looking records up by _id (exponentially, then by halves).
//
// Only inserts and lookups by _id: every MongoDB-wire server makes those
// atomic and cheap, where a single-document update of the embedded
// SQLite-backed server is a read and a replace that a concurrent update can
// undo.
const (
	chunksColl = "message_chunks"
	topsColl   = "message_tops"
)

// BlockSize is how many seqs of a conversation one block spans. It is part
// of the store's layout.
const BlockSize = 100

// maxRounds bounds how often one write retries after losing a race for a
// chunk or top record to another writer.
const maxRounds = 8

// Bounds of the Store's memory of blocks and newest blocks (each of the two
// generations of a cache2).
const (
	maxBlocksCached = 4096
	maxTopsCached   = 16384
)

func blockOf(seq int64) int64 { return seq / BlockSize }

func chunkID(conv string, block int64, k int) string {
	return conv + "/" + strconv.FormatInt(block, 10) + "/" + strconv.Itoa(k)
}

func topID(conv string, k int) string { return conv + "/" + strconv.Itoa(k) }

// chunkDoc is a chunk as stored.
type chunkDoc struct {
	ID    string   `bson:"_id"`
	Conv  string   `bson:"conv"`
	Block int64    `bson:"block"`
	Msgs  []string `bson:"msgs"`
	// Edits are copies of edit and recall events whose targets are in
	// this block (the events themselves are in msgs of their own block).
	Edits []string `bson:"edits,omitempty"`
}

// topDoc is a record of the log of a conversation's newest block.
type topDoc struct {
	ID    string `bson:"_id"`
	Conv  string `bson:"conv"`
	Block int64  `bson:"block"`
}

// blockKey names one block.
type blockKey struct {
	conv  string
	block int64
}

// blockState is what a Store knows of a block it wrote or read for a write:
// chunks 0..chunks-1 exist, and ids holds, per slot (seq - first seq of
// the block), a hash of the id of the message those chunks stored there,
// 0 for none. A slot can only have been emptied since (Forget), so a slot
// found empty is empty, and one found set is checked before a message is
// skipped for it.
type blockState struct {
	chunks int
	ids    [BlockSize]uint64
	// events holds, by event seq, a hash of the id of each edit or recall
	// whose copy those chunks store (chunkDoc.Edits); nil for none.
	events map[int64]uint64
}

// topState is what a Store knows of a conversation's log of newest
// blocks: records 0..records-1 exist and the last holds block.
type topState struct {
	records int
	block   int64
}

// idHash returns a hash of a message id that is never 0.
func idHash(id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return h.Sum64() | 1
}

// cache2 is a bounded map that forgets its least recently used entries in
// bulk: entries move between two generations of at most max entries, and
// when the current one is full the older one is dropped. Not safe for
// concurrent use.
type cache2[K comparable, V any] struct {
	max      int
	cur, old map[K]V
}

func newCache2[K comparable, V any](max int) *cache2[K, V] {
	return &cache2[K, V]{max: max, cur: map[K]V{}, old: map[K]V{}}
}

func (c *cache2[K, V]) get(k K) (V, bool) {
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.old[k]
	if ok {
		delete(c.old, k)
		c.put(k, v)
	}
	return v, ok
}

func (c *cache2[K, V]) put(k K, v V) {
	if _, ok := c.cur[k]; !ok && len(c.cur) >= c.max {
		c.old, c.cur = c.cur, make(map[K]V, c.max)
	}
	c.cur[k] = v
}

func (c *cache2[K, V]) del(k K) {
	delete(c.cur, k)
	delete(c.old, k)
}

// item is a message to store with its JSON as it will be stored.
type item struct {
	m    protocol.Message
	json string
}

// newItem pairs m with raw, its JSON as the nodes wrote it, if raw is valid
// UTF-8 (what a BSON string must be); otherwise, or without raw, with m
// encoded afresh.
func newItem(m protocol.Message, raw string) (item, error) {
	if raw != "" && utf8.ValidString(raw) {
		return item{m: m, json: raw}, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return item{}, fmt.Errorf("history: encode message %s: %w", m.ID, err)
	}
	return item{m: m, json: string(b)}, nil
}

// UpsertMessages stores msgs so that writing the same messages again
// changes nothing: a message whose (conv, seq) holds it already is left as
// it is (messages are immutable once they have an id and a seq). Messages
// without an id, a conversation or a seq > 0 are rejected before anything
// is written.
//
// If some messages could not be stored because their (conv, seq) already
// holds a message with another id, the rest are stored and the error is a
// *ConflictError (errors.Is ErrConflict) that names them; the stored
// messages win. Any other error means the call may have stored some, all or
// none of msgs, and calling it again with the same messages is safe.
//
// In the common case it costs two inserts, whatever the number of messages:
// one record for each conversation that reaches a new newest block, and one
// chunk for each block that gets messages. Calls are serialised.
func (s *Store) UpsertMessages(ctx context.Context, msgs []protocol.Message) error {
	items := make([]item, 0, len(msgs))
	for _, m := range msgs {
		if err := checkMessage(m); err != nil {
			return err
		}
		it, err := newItem(m, "")
		if err != nil {
			return err
		}
		items = append(items, it)
	}
	return s.upsert(ctx, items)
}

func checkMessage(m protocol.Message) error {
	if m.ID == "" || m.Conv == "" || m.Seq <= 0 {
		return fmt.Errorf("history: upsert: message %q of %s/%d lacks an id, a conversation or a seq > 0", m.ID, m.Conv, m.Seq)
	}
	return nil
}

// group is the messages of one write that fall in one block, or (edits)
// the copies of the edits and recalls of one write whose targets do.
type group struct {
	key   blockKey
	edits bool   // items are copies of events for chunkDoc.Edits
	items []item // sorted by seq, one per seq
	st    *blockState
	fresh bool   // st was read from the server during this write
	add   []item // what the next chunk would add
}

// upsert is UpsertMessages for checked items.
//
// It writes in two steps: the messages (events among them) in their own
// blocks, then the copies of the edits and recalls among them in their
// targets' blocks, only for events the first step stored (an event whose
// seq holds another message changes nothing). A reader never misses an
// event for it: the writer removes an entry from Redis only once both
// steps are done, and readers read Redis before MongoDB.
func (s *Store) upsert(ctx context.Context, items []item) error {
	if len(items) == 0 {
		return nil
	}
	// One message per (conv, seq): the first wins, another id is a conflict.
	var conflicts []string
	bySeq := make(map[blockKey]map[int64]string)
	groups := map[blockKey]*group{}
	var order []*group
	msgs := make([]protocol.Message, 0, len(items))
	var changes []item
	for _, it := range items {
		k := blockKey{it.m.Conv, blockOf(it.m.Seq)}
		g := groups[k]
		if g == nil {
			g = &group{key: k}
			groups[k] = g
			order = append(order, g)
			bySeq[k] = map[int64]string{}
		}
		if id, ok := bySeq[k][it.m.Seq]; ok {
			if id != it.m.ID {
				conflicts = append(conflicts, it.m.ID)
			}
			continue
		}
		bySeq[k][it.m.Seq] = it.m.ID
		g.items = append(g.items, it)
		msgs = append(msgs, it.m)
		if it.m.Changes() && it.m.Ref > 0 && it.m.Ref < it.m.Seq {
			changes = append(changes, it)
		}
	}
	for _, g := range order {
		slices.SortFunc(g.items, func(a, b item) int { return cmp.Compare(a.m.Seq, b.m.Seq) })
	}

	// The index of direct conversations first: a message is never stored
	// without its conversation being findable by user (DirectConvs).
	if err := s.addPairs(ctx, msgs); err != nil {
		return err
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.prepare(ctx, order); err != nil {
		return err
	}
	if err := s.rounds(ctx, order, &conflicts); err != nil {
		return err
	}

	if len(changes) > 0 {
		lost := make(map[string]bool, len(conflicts))
		for _, id := range conflicts {
			lost[id] = true
		}
		byTarget := map[blockKey]*group{}
		var targets []*group
		for _, it := range changes {
			if lost[it.m.ID] {
				continue
			}
			k := blockKey{it.m.Conv, blockOf(it.m.Ref)}
			g := byTarget[k]
			if g == nil {
				g = &group{key: k, edits: true}
				byTarget[k] = g
				targets = append(targets, g)
			}
			g.items = append(g.items, it) // one per seq, as changes are
		}
		for _, g := range targets {
			slices.SortFunc(g.items, func(a, b item) int { return cmp.Compare(a.m.Seq, b.m.Seq) })
		}
		if err := s.prepare(ctx, targets); err != nil {
			return err
		}
		if err := s.rounds(ctx, targets, nil); err != nil {
			return err
		}
	}
	if len(conflicts) > 0 {
		return &ConflictError{IDs: conflicts}
	}
	return nil
}

// prepare finds the state of every group's block, from memory or the
// server. s.writeMu must be held.
func (s *Store) prepare(ctx context.Context, groups []*group) error {
	for _, g := range groups {
		st, ok := s.blocks.get(g.key)
		if !ok {
			// A block above the newest one recorded holds nothing (no chunk
			// is stored above the last record); if another writer started
			// it meanwhile, the insert of chunk 0 says so.
			t, _, err := s.top(ctx, g.key.conv, false)
			if err != nil {
				return err
			}
			if t.records > 0 && g.key.block <= t.block {
				if st, err = s.loadBlock(ctx, g.key); err != nil {
					return err
				}
				g.fresh = true
			} else {
				st = &blockState{}
			}
			s.blocks.put(g.key, st)
		}
		g.st = st
		// A message whose slot looks taken is checked against the server
		// before it is skipped: the slot may have been emptied since.
		if !g.fresh && slices.ContainsFunc(g.items, func(it item) bool { return g.held(it) != 0 }) {
			if err := s.reloadBlock(ctx, g); err != nil {
				return err
			}
		}
	}
	return nil
}

// held is the hash of the id g's block holds where it would store it: 0
// for none.
func (g *group) held(it item) uint64 {
	if g.edits {
		return g.st.events[it.m.Seq]
	}
	return g.st.ids[it.m.Seq%BlockSize]
}

// rounds inserts the next chunk of every group with something new for its
// block, reading on and trying again where another writer took the chunk
// first. Messages whose seq holds another id are added to conflicts (nil
// for groups of event copies, where such a copy is just not stored).
// s.writeMu must be held.
func (s *Store) rounds(ctx context.Context, pending []*group, conflicts *[]string) error {
	for round := 0; ; round++ {
		// Sort each group's messages into new ones, redeliveries and
		// conflicts, against what is known of its block now.
		var write []*group
		tops := map[string]int64{}
		for _, g := range pending {
			g.add = make([]item, 0, len(g.items))
			for _, it := range g.items {
				switch h := g.held(it); {
				case h == 0:
					g.add = append(g.add, it)
				case h != idHash(it.m.ID) && conflicts != nil:
					*conflicts = append(*conflicts, it.m.ID)
				}
			}
			g.items = g.add
			if len(g.add) > 0 {
				write = append(write, g)
				tops[g.key.conv] = max(tops[g.key.conv], g.key.block)
			}
		}
		if len(write) == 0 {
			return nil
		}
		if round == maxRounds {
			return fmt.Errorf("history: upsert: lost the race for %d chunks %d times; retry", len(write), maxRounds)
		}
		if err := s.raiseTops(ctx, tops); err != nil {
			return err
		}
		lost, err := s.insertChunks(ctx, write)
		if err != nil {
			return err
		}
		// Another writer stored a chunk where these wanted theirs: learn
		// what it stored and try again with what is left.
		for _, g := range lost {
			if err := s.readForward(ctx, g); err != nil {
				return err
			}
		}
		pending = lost
	}
}

// insertChunks inserts the next chunk of every group in one unordered
// insert and records the stored ones in their block states. It returns the
// groups whose chunk _id was taken.
func (s *Store) insertChunks(ctx context.Context, write []*group) (lost []*group, err error) {
	docs := make([]any, len(write))
	for i, g := range write {
		js := make([]string, len(g.add))
		for j, it := range g.add {
			js[j] = it.json
		}
		d := chunkDoc{ID: chunkID(g.key.conv, g.key.block, g.st.chunks), Conv: g.key.conv, Block: g.key.block, Msgs: js}
		if g.edits {
			d.Msgs, d.Edits = []string{}, js
		}
		docs[i] = d
	}
	taken, err := insertMany(ctx, s.chunks, docs)
	if err != nil {
		return nil, fmt.Errorf("history: upsert %d chunks: %w", len(docs), err)
	}
	for i, g := range write {
		if taken[i] {
			lost = append(lost, g)
			continue
		}
		g.st.chunks++
		for _, it := range g.add {
			if g.edits {
				g.st.setEvent(it.m.Seq, idHash(it.m.ID))
			} else {
				g.st.ids[it.m.Seq%BlockSize] = idHash(it.m.ID)
			}
		}
		g.add, g.items = nil, nil
	}
	return lost, nil
}

// setEvent records the copy of event seq in st, unless one is recorded.
func (st *blockState) setEvent(seq int64, h uint64) {
	if st.events == nil {
		st.events = map[int64]uint64{}
	}
	if _, ok := st.events[seq]; !ok {
		st.events[seq] = h
	}
}

// insertMany inserts docs unordered and reports which of them were refused
// because their _id is taken. Any other failure is an error.
func insertMany(ctx context.Context, coll *mongo.Collection, docs []any) (taken []bool, err error) {
	taken = make([]bool, len(docs))
	_, err = coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		return taken, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return nil, err
	}
	for _, we := range bwe.WriteErrors {
		if !isDuplicateKey(we.Code) || we.Index < 0 || we.Index >= len(docs) {
			return nil, err
		}
		taken[we.Index] = true
	}
	return taken, nil
}

// raiseTops makes sure the log of each conversation in want (conv → block)
// ends at that block or a higher one.
func (s *Store) raiseTops(ctx context.Context, want map[string]int64) error {
	for round := 0; len(want) > 0; round++ {
		if round == maxRounds {
			return fmt.Errorf("history: upsert: lost the race for %d newest-block records %d times; retry", len(want), maxRounds)
		}
		var docs []any
		var convs []string
		var states []topState
		for conv, b := range want {
			t, _, err := s.top(ctx, conv, false)
			if err != nil {
				return err
			}
			if t.records > 0 && t.block >= b {
				delete(want, conv)
				continue
			}
			docs = append(docs, topDoc{ID: topID(conv, t.records), Conv: conv, Block: b})
			convs = append(convs, conv)
			states = append(states, t)
		}
		if len(docs) == 0 {
			return nil
		}
		taken, err := insertMany(ctx, s.tops, docs)
		if err != nil {
			return fmt.Errorf("history: upsert: record newest blocks of %d conversations: %w", len(docs), err)
		}
		for i, conv := range convs {
			if taken[i] {
				// Another writer appended first: read on from there.
				if _, _, err := s.top(ctx, conv, true); err != nil {
					return err
				}
				continue
			}
			s.setTop(conv, topState{records: states[i].records + 1, block: want[conv]})
			delete(want, conv)
		}
	}
	return nil
}

// top returns what is known of conv's log of newest blocks: from memory,
// or read from the server when it is not there; with fresh, also after
// looking for records appended since it was read. It reports whether it
// read the log just now (the answer is then fresh).
func (s *Store) top(ctx context.Context, conv string, fresh bool) (t topState, read bool, err error) {
	s.topsMu.Lock()
	t, ok := s.topsC.get(conv)
	s.topsMu.Unlock()
	switch {
	case ok && !fresh:
		return t, false, nil
	case !ok:
		if t, err = s.readTops(ctx, conv); err != nil {
			return topState{}, false, err
		}
	default:
		for {
			d, found, err := s.findTop(ctx, conv, t.records)
			if err != nil {
				return topState{}, false, err
			}
			if !found {
				break
			}
			t = topState{records: t.records + 1, block: d.Block}
		}
	}
	s.setTop(conv, t)
	return t, true, nil
}

// setTop remembers t for conv unless what is remembered is further along.
func (s *Store) setTop(conv string, t topState) {
	s.topsMu.Lock()
	defer s.topsMu.Unlock()
	if old, ok := s.topsC.get(conv); ok && old.records > t.records {
		return
	}
	s.topsC.put(conv, t)
}

// readTops reads conv's log of newest blocks: it finds how many records
// it holds (the first missing k) by looking records up exponentially and
// then by halves, and the block of the last.
func (s *Store) readTops(ctx context.Context, conv string) (topState, error) {
	var last topDoc // the highest record seen
	exists := func(k int) (bool, error) {
		d, found, err := s.findTop(ctx, conv, k)
		if found && (last.ID == "" || d.Block > last.Block) {
			last = d
		}
		return found, err
	}
	ok, err := exists(0)
	if err != nil || !ok {
		return topState{}, err
	}
	lo, hi := 0, 1 // lo exists; hi is to look at
	for {
		ok, err := exists(hi)
		if err != nil {
			return topState{}, err
		}
		if !ok {
			break
		}
		lo, hi = hi, 2*hi
	}
	for hi-lo > 1 { // lo exists, hi does not
		mid := lo + (hi-lo)/2
		ok, err := exists(mid)
		if err != nil {
			return topState{}, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	// Blocks rise with k: the highest seen is record lo's, unless records
	// were appended while looking, which a fresh look finds.
	return topState{records: hi, block: last.Block}, nil
}

func (s *Store) findTop(ctx context.Context, conv string, k int) (topDoc, bool, error) {
	var d topDoc
	err := s.tops.FindOne(ctx, bson.D{{Key: "_id", Value: topID(conv, k)}}).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return d, false, nil
	case err != nil:
		return d, false, fmt.Errorf("history: newest block of %s: %w", conv, err)
	}
	return d, true, nil
}

// readChunks returns the chunks of block from k on, up to the first that
// is missing.
func (s *Store) readChunks(ctx context.Context, key blockKey, k int) ([]chunkDoc, error) {
	var out []chunkDoc
	for ; ; k++ {
		var d chunkDoc
		err := s.chunks.FindOne(ctx, bson.D{{Key: "_id", Value: chunkID(key.conv, key.block, k)}}).Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("history: read %s block %d: %w", key.conv, key.block, err)
		}
		out = append(out, d)
	}
}

// decodeChunk returns the messages of d that belong to its block, in the
// order stored.
func decodeChunk(d chunkDoc, key blockKey) ([]protocol.Message, error) {
	out := make([]protocol.Message, 0, len(d.Msgs))
	for _, js := range d.Msgs {
		var m protocol.Message
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			return nil, fmt.Errorf("history: chunk %s: bad message JSON: %w", d.ID, err)
		}
		if m.Conv != key.conv || blockOf(m.Seq) != key.block || m.Seq <= 0 {
			return nil, fmt.Errorf("history: chunk %s holds %s/%d, of another block", d.ID, m.Conv, m.Seq)
		}
		out = append(out, m)
	}
	return out, nil
}

// decodeEdits returns the copies of events in d whose targets belong to
// its block, in the order stored.
func decodeEdits(d chunkDoc, key blockKey) ([]protocol.Message, error) {
	if len(d.Edits) == 0 {
		return nil, nil
	}
	out := make([]protocol.Message, 0, len(d.Edits))
	for _, js := range d.Edits {
		var m protocol.Message
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			return nil, fmt.Errorf("history: chunk %s: bad event JSON: %w", d.ID, err)
		}
		if m.Conv != key.conv || !m.Changes() || m.Ref <= 0 || blockOf(m.Ref) != key.block || m.Seq <= m.Ref {
			return nil, fmt.Errorf("history: chunk %s holds event %s/%d for seq %d, of another block", d.ID, m.Conv, m.Seq, m.Ref)
		}
		out = append(out, m)
	}
	return out, nil
}

// apply records the messages and event copies of chunks in st, which knew
// the chunks before them; a slot keeps the first message stored in it, an
// event seq the first copy.
func apply(st *blockState, key blockKey, chunks []chunkDoc) error {
	for _, d := range chunks {
		ms, err := decodeChunk(d, key)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if slot := m.Seq % BlockSize; st.ids[slot] == 0 {
				st.ids[slot] = idHash(m.ID)
			}
		}
		evs, err := decodeEdits(d, key)
		if err != nil {
			return err
		}
		for _, e := range evs {
			st.setEvent(e.Seq, idHash(e.ID))
		}
		st.chunks++
	}
	return nil
}

// loadBlock reads the state of a block from the server.
func (s *Store) loadBlock(ctx context.Context, key blockKey) (*blockState, error) {
	chunks, err := s.readChunks(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	st := &blockState{}
	if err := apply(st, key, chunks); err != nil {
		return nil, err
	}
	return st, nil
}

// reloadBlock replaces g's block state with one read from the server.
func (s *Store) reloadBlock(ctx context.Context, g *group) error {
	st, err := s.loadBlock(ctx, g.key)
	if err != nil {
		return err
	}
	*g.st = *st
	g.fresh = true
	return nil
}

// readForward adds to g's block state the chunks stored after those it
// knows.
func (s *Store) readForward(ctx context.Context, g *group) error {
	chunks, err := s.readChunks(ctx, g.key, g.st.chunks)
	if err != nil {
		return err
	}
	return apply(g.st, g.key, chunks)
}

// readBlock returns the messages stored in a block, one per seq (the first
// stored), sorted by seq.
func (s *Store) readBlock(ctx context.Context, key blockKey) ([]protocol.Message, error) {
	msgs, _, err := s.readBlockEvents(ctx, key)
	return msgs, err
}

// readBlockEvents returns the messages stored in a block, as readBlock
// does, and the copies of the edits and recalls of them, one per event seq,
// sorted by seq.
func (s *Store) readBlockEvents(ctx context.Context, key blockKey) (msgs, events []protocol.Message, err error) {
	chunks, err := s.readChunks(ctx, key, 0)
	if err != nil {
		return nil, nil, err
	}
	seen := map[int64]bool{}
	seenEv := map[int64]bool{}
	for _, d := range chunks {
		ms, err := decodeChunk(d, key)
		if err != nil {
			return nil, nil, err
		}
		for _, m := range ms {
			if !seen[m.Seq] {
				seen[m.Seq] = true
				msgs = append(msgs, m)
			}
		}
		evs, err := decodeEdits(d, key)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range evs {
			if !seenEv[e.Seq] {
				seenEv[e.Seq] = true
				events = append(events, e)
			}
		}
	}
	bySeq := func(a, b protocol.Message) int { return cmp.Compare(a.Seq, b.Seq) }
	slices.SortFunc(msgs, bySeq)
	slices.SortFunc(events, bySeq)
	return msgs, events, nil
}

// Messages returns the messages of conv with afterSeq < seq < beforeSeq
// (beforeSeq <= 0: no upper bound), oldest first, in their final state
// under the edits and recalls this store holds for them (see Page). With
// newest it returns the last limit messages of that range, otherwise the
// first limit; limit <= 0 means no limit. It reads the blocks of the range
// by _id, from the end it starts at, until it has limit messages.
func (s *Store) Messages(ctx context.Context, conv string, afterSeq, beforeSeq int64, limit int, newest bool) ([]protocol.Message, error) {
	msgs, events, err := s.Page(ctx, conv, afterSeq, beforeSeq, limit, newest)
	if err != nil {
		return nil, err
	}
	protocol.ApplyEvents(msgs, events)
	return msgs, nil
}

// Page is Messages as stored, events not applied, with the edits and
// recalls stored for messages of the blocks it read: every one that
// targets a returned message, and more. Events are stored as messages of
// their own seqs, so the page holds those of its range too.
func (s *Store) Page(ctx context.Context, conv string, afterSeq, beforeSeq int64, limit int, newest bool) (msgs, events []protocol.Message, err error) {
	afterSeq = max(afterSeq, 0)
	if beforeSeq > 0 && beforeSeq <= afterSeq+1 {
		return []protocol.Message{}, nil, nil
	}
	// The newest block bounds the range; a range that ends below the
	// newest block known needs no look for newer ones.
	t, read, err := s.top(ctx, conv, false)
	if err != nil {
		return nil, nil, fmt.Errorf("history: messages %s: %w", conv, err)
	}
	if !read && (beforeSeq <= 0 || t.records == 0 || blockOf(beforeSeq-1) > t.block) {
		if t, _, err = s.top(ctx, conv, true); err != nil {
			return nil, nil, fmt.Errorf("history: messages %s: %w", conv, err)
		}
	}
	out := []protocol.Message{}
	if t.records == 0 {
		return out, nil, nil
	}
	hi := t.block*BlockSize + BlockSize - 1
	if beforeSeq > 0 {
		hi = min(hi, beforeSeq-1)
	}
	lo := afterSeq + 1
	if lo > hi {
		return out, nil, nil
	}
	inRange := func(m protocol.Message) bool { return m.Seq >= lo && m.Seq <= hi }
	if newest {
		var parts [][]protocol.Message // newest block first
		n := 0
		for b := blockOf(hi); b >= blockOf(lo) && (limit <= 0 || n < limit); b-- {
			ms, evs, err := s.readBlockEvents(ctx, blockKey{conv, b})
			if err != nil {
				return nil, nil, err
			}
			ms = slices.DeleteFunc(ms, func(m protocol.Message) bool { return !inRange(m) })
			parts = append(parts, ms)
			events = append(events, evs...)
			n += len(ms)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			out = append(out, parts[i]...)
		}
		if limit > 0 && len(out) > limit {
			out = out[len(out)-limit:]
		}
		return out, events, nil
	}
	for b := blockOf(lo); b <= blockOf(hi) && (limit <= 0 || len(out) < limit); b++ {
		ms, evs, err := s.readBlockEvents(ctx, blockKey{conv, b})
		if err != nil {
			return nil, nil, err
		}
		for _, m := range ms {
			if inRange(m) {
				out = append(out, m)
			}
		}
		events = append(events, evs...)
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, events, nil
}

// Events returns the edits and recalls stored for the messages of conv at
// targets (their Ref), sorted by seq: it reads the blocks of those seqs.
func (s *Store) Events(ctx context.Context, conv string, targets []int64) ([]protocol.Message, error) {
	want := make(map[int64]bool, len(targets))
	var blocks []int64
	for _, t := range targets {
		if t > 0 && !want[t] {
			want[t] = true
			blocks = append(blocks, blockOf(t))
		}
	}
	if len(blocks) == 0 {
		return nil, nil
	}
	slices.Sort(blocks)
	blocks = slices.Compact(blocks)
	top, _, err := s.top(ctx, conv, false)
	if err != nil {
		return nil, fmt.Errorf("history: events %s: %w", conv, err)
	}
	if top.records == 0 || blocks[len(blocks)-1] > top.block {
		if top, _, err = s.top(ctx, conv, true); err != nil {
			return nil, fmt.Errorf("history: events %s: %w", conv, err)
		}
	}
	var out []protocol.Message
	for _, b := range blocks {
		if top.records == 0 || b > top.block {
			break
		}
		_, evs, err := s.readBlockEvents(ctx, blockKey{conv, b})
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if want[e.Ref] {
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b protocol.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// LatestSeq returns the highest seq stored for conv, or 0 if it has none.
func (s *Store) LatestSeq(ctx context.Context, conv string) (int64, error) {
	t, _, err := s.top(ctx, conv, true)
	if err != nil {
		return 0, fmt.Errorf("history: latest seq %s: %w", conv, err)
	}
	if t.records == 0 {
		return 0, nil
	}
	// The newest block holds messages unless a write stopped between its
	// record and its chunk, or they were forgotten: then look below it.
	for b := t.block; b >= 0; b-- {
		ms, err := s.readBlock(ctx, blockKey{conv, b})
		if err != nil {
			return 0, fmt.Errorf("history: latest seq %s: %w", conv, err)
		}
		if len(ms) > 0 {
			return ms[len(ms)-1].Seq, nil
		}
	}
	return 0, nil
}

// Held returns which of msgs' seqs in conv, and which of their ids,
// MongoDB already holds for conv. A genuine message id belongs to one
// conversation and one seq, so looking for it in conv's messages in the seq
// range msgs span is enough: it reads the blocks of that range (up to the
// newest block).
func (s *Store) Held(ctx context.Context, conv string, msgs []protocol.Message) (seqs map[int64]bool, ids map[string]bool, err error) {
	seqs, ids = map[int64]bool{}, map[string]bool{}
	if len(msgs) == 0 {
		return seqs, ids, nil
	}
	lo, hi := msgs[0].Seq, msgs[0].Seq
	want := make(map[string]bool, len(msgs))
	wantSeq := make(map[int64]bool, len(msgs))
	for _, m := range msgs {
		lo, hi = min(lo, m.Seq), max(hi, m.Seq)
		want[m.ID], wantSeq[m.Seq] = true, true
	}
	t, _, err := s.top(ctx, conv, true)
	if err != nil {
		return nil, nil, fmt.Errorf("history: held %s: %w", conv, err)
	}
	if t.records == 0 || hi < 1 {
		return seqs, ids, nil
	}
	for b := blockOf(max(lo, 1)); b <= min(blockOf(hi), t.block); b++ {
		ms, err := s.readBlock(ctx, blockKey{conv, b})
		if err != nil {
			return nil, nil, fmt.Errorf("history: held %s: %w", conv, err)
		}
		for _, m := range ms {
			if m.Seq < lo || m.Seq > hi {
				continue
			}
			if wantSeq[m.Seq] {
				seqs[m.Seq] = true
			}
			if want[m.ID] {
				ids[m.ID] = true
			}
		}
	}
	return seqs, ids, nil
}

// StoredCopies returns, for every seq of conv the store holds a message
// at, the ids of every copy it holds there, in the order stored: one in a
// sound store. It reads all of conv's blocks; it is meant for checks and
// repairs.
func (s *Store) StoredCopies(ctx context.Context, conv string) (map[int64][]string, error) {
	out := map[int64][]string{}
	t, _, err := s.top(ctx, conv, true)
	if err != nil || t.records == 0 {
		return out, err
	}
	for b := int64(0); b <= t.block; b++ {
		key := blockKey{conv, b}
		chunks, err := s.readChunks(ctx, key, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range chunks {
			ms, err := decodeChunk(d, key)
			if err != nil {
				return nil, err
			}
			for _, m := range ms {
				out[m.Seq] = append(out[m.Seq], m.ID)
			}
		}
	}
	return out, nil
}

// Forget removes conv's stored messages with seq > afterSeq, as a store
// that lost its newest writes would have, and returns how many it removed;
// the copies of edits and recalls with seq > afterSeq go with them (they
// are not counted). It rewrites the chunks that hold them (the chunks stay,
// possibly empty, so that no k goes missing) and is meant for tests and
// repairs: it reads every block of conv, and a writer that stores such a
// message again afterwards (a client gave it back) checks the server before
// it takes it for one already stored.
func (s *Store) Forget(ctx context.Context, conv string, afterSeq int64) (int, error) {
	t, _, err := s.top(ctx, conv, true)
	if err != nil || t.records == 0 {
		return 0, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	removed := 0
	// From block 0: a copy of an event sits in its target's block, below
	// the event's own.
	for b := int64(0); b <= t.block; b++ {
		key := blockKey{conv, b}
		s.blocks.del(key)
		chunks, err := s.readChunks(ctx, key, 0)
		if err != nil {
			return removed, err
		}
		for _, d := range chunks {
			ms, err := decodeChunk(d, key)
			if err != nil {
				return removed, err
			}
			evs, err := decodeEdits(d, key)
			if err != nil {
				return removed, err
			}
			kept := make([]string, 0, len(d.Msgs))
			for i, m := range ms {
				if m.Seq <= afterSeq {
					kept = append(kept, d.Msgs[i])
				}
			}
			var keptEdits []string
			for i, e := range evs {
				if e.Seq <= afterSeq {
					keptEdits = append(keptEdits, d.Edits[i])
				}
			}
			if len(kept) == len(d.Msgs) && len(keptEdits) == len(d.Edits) {
				continue
			}
			d.Msgs, d.Edits = kept, keptEdits
			if _, err := s.chunks.ReplaceOne(ctx, bson.D{{Key: "_id", Value: d.ID}}, d); err != nil {
				return removed, fmt.Errorf("history: forget %s after %d: %w", conv, afterSeq, err)
			}
			removed += len(ms) - len(kept)
		}
	}
	return removed, nil
}
