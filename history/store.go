package history

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/protocol"
)

// Errors of the Store.
var (
	ErrUserExists = errors.New("history: user exists")
	ErrNotFound   = errors.New("history: not found")
	// ErrConflict means a message could not be stored because its (conv,
	// seq) already holds a message with another id. The stored message is
	// kept; the others of the same UpsertMessages call were written.
	ErrConflict = errors.New("history: seq already holds another message")
)

// ConflictError names the messages UpsertMessages could not store because
// their (conv, seq) holds another message. errors.Is(err, ErrConflict)
// holds for it.
type ConflictError struct {
	IDs []string // ids of the messages not stored
}

func (e *ConflictError) Error() string {
	return ErrConflict.Error() + ": " + strings.Join(e.IDs, ", ")
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Collection names.
const (
	usersColl  = "users"
	roomsColl  = "rooms"
	convsColl  = "user_convs"
	legacyColl = "messages" // the single messages collection of earlier builds
)

// MessageBuckets is how many collections the messages are spread over, by
// a hash of the conversation (MessageCollection). Every read of the
// history names one conversation, so it touches one bucket: a server that
// cannot use the {conv, seq} index for a range (the embedded SQLite-backed
// store scans the collection for any filter other than an _id equality)
// then reads 1/MessageBuckets of the history instead of all of it, and on
// MongoDB the index serves the read either way. Changing it moves
// conversations between collections: it is part of the store's layout.
const MessageBuckets = 32

// MessageCollection names the collection that holds conv's messages.
func MessageCollection(conv string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(conv))
	return fmt.Sprintf("messages_%02d", h.Sum32()%MessageBuckets)
}

// DefaultTimeout bounds server selection and connecting: a MongoDB that is
// down fails an operation within about this long instead of hanging.
const DefaultTimeout = 2 * time.Second

// User is a document of the users collection: a registered user, or a
// name reserved for one (an alias). Hash is the password hash; the store
// never sees passwords.
//
// Key is the normal form the name is unique under (the accounts package
// computes it): a user created by CreateUser is its own key; a user of an
// earlier build has none until KeyUsers gave it one. An alias is a
// document whose _id is the key of a user named otherwise, AliasOf: it
// holds the key so that no other user can take it.
type User struct {
	Name    string    `bson:"_id"`
	Hash    []byte    `bson:"hash,omitempty"`
	Created time.Time `bson:"created"`
	Key     string    `bson:"key,omitempty"`
	AliasOf string    `bson:"aliasOf,omitempty"`
}

// msgDoc is a message as stored.
type msgDoc struct {
	ID   string `bson:"_id"`
	Conv string `bson:"conv"`
	Seq  int64  `bson:"seq"`
	From string `bson:"from"`
	To   string `bson:"to,omitempty"`
	Room string `bson:"room,omitempty"`
	Text string `bson:"text"`
	TS   int64  `bson:"ts"`
}

func toDoc(m protocol.Message) msgDoc {
	return msgDoc{ID: m.ID, Conv: m.Conv, Seq: m.Seq, From: m.From, To: m.To, Room: m.Room, Text: m.Text, TS: m.TS}
}

func (d msgDoc) message() protocol.Message {
	return protocol.Message{ID: d.ID, Conv: d.Conv, Seq: d.Seq, From: d.From, To: d.To, Room: d.Room, Text: d.Text, TS: d.TS}
}

// Store reads and writes users and messages in MongoDB. It is safe for
// concurrent use. Every method honours its context; an unreachable server
// fails within DefaultTimeout.
type Store struct {
	client  *mongo.Client
	db      *mongo.Database
	users   *mongo.Collection
	buckets map[string]*mongo.Collection // MessageCollection name -> collection
	rooms   *mongo.Collection
	convs   *mongo.Collection // user_convs: the direct conversations of each user

	pairsMu sync.Mutex
	pairs   map[string]struct{} // user_convs ids this Store has written (bounded)
}

// maxPairsCached bounds the Store's memory of user_convs ids it wrote.
const maxPairsCached = 100_000

// messages returns the collection of conv's messages.
func (s *Store) messages(conv string) *mongo.Collection { return s.buckets[MessageCollection(conv)] }

// Open connects to the MongoDB at uri, uses database dbName, and makes sure
// the indexes exist (each messages bucket: unique {conv, seq}; users are
// keyed by name through _id). Messages a store of an earlier build holds in
// its single "messages" collection are moved into the buckets first. It
// fails, within about DefaultTimeout, if the server cannot be reached.
// Options add to that (WithMonitor).
func Open(ctx context.Context, uri, dbName string, opts ...OpenOption) (*Store, error) {
	if dbName == "" {
		return nil, errors.New("history: open: empty database name")
	}
	var oo openOptions
	for _, o := range opts {
		o(&oo)
	}
	copts := options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(DefaultTimeout).
		SetConnectTimeout(DefaultTimeout)
	if oo.monitor != nil {
		copts.SetMonitor(oo.monitor)
	}
	client, err := mongo.Connect(copts)
	if err != nil {
		return nil, fmt.Errorf("history: open %s: %w", uri, err)
	}
	db := client.Database(dbName)
	s := &Store{client: client, db: db, users: db.Collection(usersColl), rooms: db.Collection(roomsColl),
		convs: db.Collection(convsColl), buckets: make(map[string]*mongo.Collection, MessageBuckets),
		pairs: map[string]struct{}{}}
	_, err = s.convs.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "user", Value: 1}}, Options: options.Index().SetName("user"),
	})
	if err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("history: open %s: create index on %s: %w", uri, convsColl, err)
	}
	for i := range MessageBuckets {
		name := fmt.Sprintf("messages_%02d", i)
		coll := db.Collection(name)
		s.buckets[name] = coll
		_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{
			Keys:    bson.D{{Key: "conv", Value: 1}, {Key: "seq", Value: 1}},
			Options: options.Index().SetName("conv_seq").SetUnique(true),
		})
		if err != nil {
			_ = client.Disconnect(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("history: open %s: create index on %s: %w", uri, name, err)
		}
	}
	if err := s.moveLegacy(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("history: open %s: %w", uri, err)
	}
	return s, nil
}

// OpenOption changes how Open connects.
type OpenOption func(*openOptions)

type openOptions struct {
	monitor *event.CommandMonitor
}

// WithMonitor has the driver report every command to m (for example to
// time them).
func WithMonitor(m *event.CommandMonitor) OpenOption {
	return func(o *openOptions) { o.monitor = m }
}

// Close disconnects from the server. Call it once, after every user of the
// Store (a running Writer included) is done.
func (s *Store) Close(ctx context.Context) error {
	if err := s.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("history: close: %w", err)
	}
	return nil
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, nil); err != nil {
		return fmt.Errorf("history: ping: %w", err)
	}
	return nil
}

// CreateUser stores a new user with the given password hash, its name
// being its own key. It returns ErrUserExists if the name is taken, by a
// user or an alias.
func (s *Store) CreateUser(ctx context.Context, name string, hash []byte) error {
	u := User{Name: name, Hash: hash, Created: time.Now().UTC().Truncate(time.Millisecond), Key: name}
	if _, err := s.users.InsertOne(ctx, u); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return ErrUserExists
		}
		return fmt.Errorf("history: create user %s: %w", name, err)
	}
	return nil
}

// User returns the document with the name, a user or an alias, or
// ErrNotFound.
func (s *Store) User(ctx context.Context, name string) (User, error) {
	var u User
	err := s.users.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("history: user %s: %w", name, err)
	}
	return u, nil
}

// KeyUsers gives every user that has no key yet (one created by an earlier
// build) its key, key(name), oldest user first. When the key is another
// name than the user's own and no document has it as its _id yet, an alias
// document reserves it for the user. So the first of several old names
// that share a key (say "Bob" and "BOB") is reached by every spelling of
// it, and the others only by their exact names; a user named as the key
// ("bob") holds it already, whatever its age. It returns the users keyed
// and, of those, how many got an alias. Running it again, or in two
// processes at once, changes nothing more.
func (s *Store) KeyUsers(ctx context.Context, key func(name string) string) (keyed, aliased int, err error) {
	cur, err := s.users.Find(ctx, bson.D{{Key: "key", Value: bson.D{{Key: "$exists", Value: false}}}},
		options.Find().SetSort(bson.D{{Key: "created", Value: 1}, {Key: "_id", Value: 1}}).
			SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "created", Value: 1}}))
	if err != nil {
		return 0, 0, fmt.Errorf("history: users without a key: %w", err)
	}
	var old []User
	err = cur.All(ctx, &old)
	if err != nil {
		return 0, 0, fmt.Errorf("history: users without a key: %w", err)
	}
	for _, u := range old {
		k := key(u.Name)
		if k != u.Name {
			alias := User{Name: k, Created: u.Created, Key: k, AliasOf: u.Name}
			switch _, err := s.users.InsertOne(ctx, alias); {
			case err == nil:
				aliased++
			case !mongo.IsDuplicateKeyError(err):
				return keyed, aliased, fmt.Errorf("history: alias %s of user %s: %w", k, u.Name, err)
			}
		}
		_, err := s.users.UpdateOne(ctx, bson.D{{Key: "_id", Value: u.Name}}, bson.D{{Key: "$set", Value: bson.D{{Key: "key", Value: k}}}})
		if err != nil {
			return keyed, aliased, fmt.Errorf("history: key of user %s: %w", u.Name, err)
		}
		keyed++
	}
	return keyed, aliased, nil
}

// UpsertMessages stores msgs, keyed by message id, so that writing the
// same messages again changes nothing: one unordered bulk insert, where a
// message whose id is already stored is left as it is (messages are
// immutable once they have an id and a seq). Messages with an empty id are
// rejected before anything is written.
//
// If some messages could not be stored because their (conv, seq) already
// holds a message with another id, the rest are stored and the error is a
// *ConflictError (errors.Is ErrConflict) that names them; the stored messages win. Any other error
// means the call may have stored some, all or none of msgs, and calling it
// again with the same messages is safe.
//
// It inserts rather than sending ReplaceOne upserts because a bulk insert
// is one cheap statement on every MongoDB-wire server, while upserts are
// per-document updates: on the SQLite-backed server each costs a write
// transaction that grows with the collection (about 60 upserts/s at 20k
// documents against about 17k inserted documents/s).
func (s *Store) UpsertMessages(ctx context.Context, msgs []protocol.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	groups := map[string][]protocol.Message{}
	var order []string
	for _, m := range msgs {
		if m.ID == "" {
			return fmt.Errorf("history: upsert: message %s/%d has no id", m.Conv, m.Seq)
		}
		name := MessageCollection(m.Conv)
		if _, ok := groups[name]; !ok {
			order = append(order, name)
		}
		groups[name] = append(groups[name], m)
	}
	// The index of direct conversations first: a message is never stored
	// without its conversation being findable by user (DirectConvs).
	if err := s.addPairs(ctx, msgs); err != nil {
		return err
	}
	var conflicts []string
	for _, name := range order {
		err := s.insert(ctx, s.buckets[name], groups[name])
		var ce *ConflictError
		switch {
		case errors.As(err, &ce):
			conflicts = append(conflicts, ce.IDs...)
		case err != nil:
			return err
		}
	}
	if len(conflicts) > 0 {
		return &ConflictError{IDs: conflicts}
	}
	return nil
}

// addPairs records, for the direct messages among msgs, that sender and
// recipient take part in the conversation (user_convs), skipping what this
// Store wrote before.
func (s *Store) addPairs(ctx context.Context, msgs []protocol.Message) error {
	var docs []any
	var ids []string
	batch := map[string]bool{}
	s.pairsMu.Lock()
	for _, m := range msgs {
		if m.Room != "" || !strings.HasPrefix(m.Conv, protocol.DMPrefix) {
			continue
		}
		for _, u := range []string{m.From, m.To} {
			id := u + "/" + m.Conv
			if _, ok := s.pairs[id]; ok || u == "" || batch[id] {
				continue
			}
			batch[id] = true
			ids = append(ids, id)
			docs = append(docs, bson.D{{Key: "_id", Value: id}, {Key: "user", Value: u}, {Key: "conv", Value: m.Conv}})
		}
	}
	s.pairsMu.Unlock()
	if len(docs) == 0 {
		return nil
	}
	_, err := s.convs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if err != nil && (!errors.As(err, &bwe) || bwe.WriteConcernError != nil ||
		slices.ContainsFunc(bwe.WriteErrors, func(we mongo.BulkWriteError) bool { return !isDuplicateKey(we.Code) })) {
		return fmt.Errorf("history: record conversations of %d messages: %w", len(msgs), err)
	}
	s.pairsMu.Lock()
	if len(s.pairs)+len(ids) > maxPairsCached {
		clear(s.pairs)
	}
	for _, id := range ids {
		s.pairs[id] = struct{}{}
	}
	s.pairsMu.Unlock()
	return nil
}

// insert is UpsertMessages for messages of one bucket.
func (s *Store) insert(ctx context.Context, coll *mongo.Collection, msgs []protocol.Message) error {
	docs := make([]any, 0, len(msgs))
	ids := make([]string, 0, len(msgs))
	seen := make(map[string]struct{}, len(msgs))
	for _, m := range msgs {
		if _, dup := seen[m.ID]; dup {
			continue
		}
		seen[m.ID] = struct{}{}
		docs = append(docs, toDoc(m))
		ids = append(ids, m.ID)
	}
	_, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		return nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return fmt.Errorf("history: upsert %d messages: %w", len(docs), err)
	}
	for _, we := range bwe.WriteErrors {
		if !isDuplicateKey(we.Code) || we.Index < 0 || we.Index >= len(ids) {
			return fmt.Errorf("history: upsert %d messages: %w", len(docs), err)
		}
	}
	// Every failure is a duplicate key: either the id is stored already (a
	// redelivery) or the (conv, seq) holds another message. Looking up the
	// id tells which; servers differ in how they name the violated index.
	var conflicts []string
	for _, we := range bwe.WriteErrors {
		id := ids[we.Index]
		err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}},
			options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			conflicts = append(conflicts, id)
		case err != nil:
			return fmt.Errorf("history: upsert %d messages: %w", len(docs), err)
		}
	}
	if len(conflicts) > 0 {
		return &ConflictError{IDs: conflicts}
	}
	return nil
}

// moveLegacy moves the messages of the single collection earlier builds
// wrote into the buckets, then drops that collection. Moving is idempotent
// (UpsertMessages), so nodes opening the store at once, or a move cut
// short, are harmless: whoever finishes drops the old collection.
func (s *Store) moveLegacy(ctx context.Context) error {
	legacy := s.db.Collection(legacyColl)
	cur, err := legacy.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000))
	if err != nil {
		return fmt.Errorf("move messages of the old layout: %w", err)
	}
	defer cur.Close(ctx)
	batch := make([]protocol.Message, 0, 1000)
	flush := func() error {
		err := s.UpsertMessages(ctx, batch)
		batch = batch[:0]
		return err
	}
	moved := 0
	for cur.Next(ctx) {
		var d msgDoc
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("move messages of the old layout: %w", err)
		}
		batch = append(batch, d.message())
		moved++
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return fmt.Errorf("move messages of the old layout: %w", err)
			}
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("move messages of the old layout: %w", err)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("move messages of the old layout: %w", err)
	}
	if moved == 0 {
		return nil
	}
	if err := legacy.Drop(ctx); err != nil {
		return fmt.Errorf("drop the old messages collection: %w", err)
	}
	return nil
}

func isDuplicateKey(code int) bool { return code == 11000 || code == 11001 }

// Messages returns the messages of conv with afterSeq < seq < beforeSeq
// (beforeSeq <= 0: no upper bound), oldest first. With newest it returns the
// last limit messages of that range, otherwise the first limit; limit <= 0
// means no limit.
func (s *Store) Messages(ctx context.Context, conv string, afterSeq, beforeSeq int64, limit int, newest bool) ([]protocol.Message, error) {
	rng := bson.D{{Key: "$gt", Value: afterSeq}}
	if beforeSeq > 0 {
		if beforeSeq <= afterSeq+1 {
			return []protocol.Message{}, nil
		}
		rng = append(rng, bson.E{Key: "$lt", Value: beforeSeq})
	}
	filter := bson.D{{Key: "conv", Value: conv}, {Key: "seq", Value: rng}}
	dir := 1
	if newest {
		dir = -1
	}
	opts := options.Find().SetSort(bson.D{{Key: "seq", Value: dir}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	cur, err := s.messages(conv).Find(ctx, filter, opts)
	if err != nil {
		return nil, fmt.Errorf("history: messages %s: %w", conv, err)
	}
	var docs []msgDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("history: messages %s: %w", conv, err)
	}
	out := make([]protocol.Message, len(docs))
	for i, d := range docs {
		out[i] = d.message()
	}
	if newest {
		slices.Reverse(out)
	}
	return out, nil
}

// LatestSeq returns the highest seq stored for conv, or 0 if it has none.
func (s *Store) LatestSeq(ctx context.Context, conv string) (int64, error) {
	var d struct {
		Seq int64 `bson:"seq"`
	}
	err := s.messages(conv).FindOne(ctx, bson.D{{Key: "conv", Value: conv}},
		options.FindOne().SetSort(bson.D{{Key: "seq", Value: -1}}).SetProjection(bson.D{{Key: "seq", Value: 1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("history: latest seq %s: %w", conv, err)
	}
	return d.Seq, nil
}

// Empty reports whether no message has ever been stored: a new deployment.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	for _, coll := range append(s.collections(), s.db.Collection(legacyColl)) {
		err := coll.FindOne(ctx, bson.D{}, options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			continue
		case err != nil:
			return false, fmt.Errorf("history: empty: %w", err)
		}
		return false, nil
	}
	return true, nil
}

// collections returns the message buckets in name order.
func (s *Store) collections() []*mongo.Collection {
	out := make([]*mongo.Collection, 0, len(s.buckets))
	for i := range MessageBuckets {
		out = append(out, s.buckets[fmt.Sprintf("messages_%02d", i)])
	}
	return out
}

// DirectConvs returns the direct conversations user has a message in,
// sorted, from the index UpsertMessages keeps (user_convs): meant for
// rebuilding a user's list after Redis lost it.
func (s *Store) DirectConvs(ctx context.Context, user string) ([]string, error) {
	cur, err := s.convs.Find(ctx, bson.D{{Key: "user", Value: user}}, options.Find().SetProjection(bson.D{{Key: "conv", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("history: conversations of %s: %w", user, err)
	}
	var docs []struct {
		Conv string `bson:"conv"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("history: conversations of %s: %w", user, err)
	}
	convs := make([]string, 0, len(docs))
	for _, d := range docs {
		convs = append(convs, d.Conv)
	}
	slices.Sort(convs)
	return slices.Compact(convs), nil
}

// Held returns which of msgs' seqs in conv, and which of their ids,
// MongoDB already holds for conv. A genuine message id belongs to one
// conversation, so looking for it in conv is enough. It reads conv's
// messages in the seq range msgs span, one simple range filter, cheap to
// evaluate even where the server scans the bucket.
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
	filter := bson.D{{Key: "conv", Value: conv}, {Key: "seq", Value: bson.D{{Key: "$gte", Value: lo}, {Key: "$lte", Value: hi}}}}
	cur, err := s.messages(conv).Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		return nil, nil, fmt.Errorf("history: held %s: %w", conv, err)
	}
	var docs []struct {
		ID  string `bson:"_id"`
		Seq int64  `bson:"seq"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, nil, fmt.Errorf("history: held %s: %w", conv, err)
	}
	for _, d := range docs {
		if wantSeq[d.Seq] {
			seqs[d.Seq] = true
		}
		if want[d.ID] {
			ids[d.ID] = true
		}
	}
	return seqs, ids, nil
}
