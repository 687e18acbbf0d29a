package history

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
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
	usersColl     = "users"
	roomsColl     = "rooms"
	convsColl     = "user_convs" // of an earlier build (lookups.go)
	convListsColl = "user_conv_lists"
	csColl        = "support_convs"
	agentColl     = "support_agents"
	visitColl     = "visitors"
)

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

// Store reads and writes users and messages in MongoDB. It is safe for
// concurrent use. Every method honours its context; an unreachable server
// fails within DefaultTimeout.
type Store struct {
	client   *mongo.Client
	db       *mongo.Database
	users    *mongo.Collection
	rooms    *mongo.Collection
	convs    *mongo.Collection // user_convs: of an earlier build, read once to fill convLists
	chunks   *mongo.Collection // message_chunks: the messages, by block (blocks.go)
	tops     *mongo.Collection // message_tops: each conversation's newest block
	cs       *mongo.Collection // support_convs: customer-service conversations (support.go)
	agents   *mongo.Collection // support_agents: the agents
	visitors *mongo.Collection // visitors: customer service's visitors, by id, with their token's hash
	reads    *mongo.Collection // read_positions: how far each user has read each conversation (reads.go)
	seeds    *mongo.Collection // seq_seeds: counters seeded after Redis lost its data (seeds.go)
	tokens   *mongo.Collection // visitor_tokens: a visitor by its token's hash (lookups.go)
	// convLists is user_conv_lists: the direct and support conversations
	// of each user, in convBuckets documents per user.
	convLists *mongo.Collection
	// csVisitors is support_visitors: each visitor's highest conversation
	// number (lookups.go).
	csVisitors *mongo.Collection
	log        zerolog.Logger
	last       lastConvs

	pairsMu sync.Mutex
	pairs   map[string]struct{} // user + "/" + conv this Store has recorded in convLists (bounded)

	// writeMu serialises writes of messages (upsert, Forget); it guards
	// blocks, what this Store knows of the blocks it wrote lately.
	writeMu sync.Mutex
	blocks  *cache2[blockKey, *blockState]

	// topsMu guards topsC, what this Store knows of conversations' newest
	// blocks; it is never held during a call to the server.
	topsMu sync.Mutex
	topsC  *cache2[string, topState]
}

// maxPairsCached bounds the Store's memory of the conversations it recorded.
const maxPairsCached = 100_000

// Open connects to the MongoDB at uri, uses database dbName, and makes sure
// the collections and indexes exist (users are keyed by name through _id;
// every lookup of a request is by _id, lookups.go). Messages a store of an earlier build
// holds in its old layout (one document per message, in "messages" or in
// the buckets "messages_00".."messages_31") are moved into the block layout
// first, logging their progress (see migrate.go). It fails, within about
// DefaultTimeout, if the server cannot be reached. Options add to that
// (WithMonitor, WithLogger).
func Open(ctx context.Context, uri, dbName string, opts ...OpenOption) (*Store, error) {
	if dbName == "" {
		return nil, errors.New("history: open: empty database name")
	}
	oo := openOptions{log: zerolog.New(os.Stderr).With().Timestamp().Logger()}
	for _, o := range opts {
		o(&oo)
	}
	copts := options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(DefaultTimeout).
		SetConnectTimeout(DefaultTimeout)
	if oo.monitor != nil {
		copts.SetMonitor(oo.monitor)
	}
	// The history writer deletes a message from Redis once MongoDB
	// acknowledged its write: with w=0 nothing is acknowledged, and a
	// message could be gone from both.
	if wc := copts.WriteConcern; wc != nil && !wc.Acknowledged() {
		return nil, errors.New("history: open: the MongoDB URI asks for unacknowledged writes (w=0); history needs acknowledged ones: remove w=0, or use w=majority&journal=true")
	}
	client, err := mongo.Connect(copts)
	if err != nil {
		return nil, fmt.Errorf("history: open %s: %w", uri, err)
	}
	db := client.Database(dbName)
	s := &Store{client: client, db: db, users: db.Collection(usersColl), rooms: db.Collection(roomsColl),
		convs: db.Collection(convsColl), chunks: db.Collection(chunksColl), tops: db.Collection(topsColl),
		cs: db.Collection(csColl), agents: db.Collection(agentColl), visitors: db.Collection(visitColl),
		reads: db.Collection(readsColl), seeds: db.Collection(seedsColl),
		tokens: db.Collection(tokensColl), csVisitors: db.Collection(csVisitorColl), convLists: db.Collection(convListsColl),
		log:   oo.log.With().Str("component", "history-store").Str("db", dbName).Logger(),
		pairs: map[string]struct{}{}, blocks: newCache2[blockKey, *blockState](maxBlocksCached),
		topsC: newCache2[string, topState](maxTopsCached)}
	fail := func(err error) (*Store, error) {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("history: open %s: %w", uri, err)
	}
	// Visitors and their conversations are found by _id (lookups.go);
	// a new leader reads the open conversations by state.
	_, err = s.cs.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "state", Value: 1}}, Options: options.Index().SetName("state")})
	if err != nil {
		return fail(fmt.Errorf("create index on %s: %w", csColl, err))
	}
	// Made at once, so that the server has them (and, on the embedded
	// store, their lookup indexes) before the first message.
	for _, name := range []string{chunksColl, topsColl} {
		if err := db.CreateCollection(ctx, name); err != nil && !isNamespaceExists(err) {
			return fail(fmt.Errorf("create %s: %w", name, err))
		}
	}
	if err := s.migrate(ctx); err != nil {
		return fail(err)
	}
	if err := s.buildLookups(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// isNamespaceExists reports whether err says a collection exists already.
func isNamespaceExists(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 48 || ce.Name == "NamespaceExists")
}

// OpenOption changes how Open connects.
type OpenOption func(*openOptions)

type openOptions struct {
	monitor *event.CommandMonitor
	log     zerolog.Logger
}

// WithMonitor has the driver report every command to m (for example to
// time them).
func WithMonitor(m *event.CommandMonitor) OpenOption {
	return func(o *openOptions) { o.monitor = m }
}

// WithLogger has the Store log with log (what it logs is moving a store of
// an earlier layout). Without it, it logs JSON lines to stderr.
func WithLogger(log zerolog.Logger) OpenOption {
	return func(o *openOptions) { o.log = log }
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

// addPairs records, for the direct and support messages among msgs, that
// sender and recipient take part in the conversation (user_conv_lists),
// skipping what this Store wrote before.
func (s *Store) addPairs(ctx context.Context, msgs []protocol.Message) error {
	lists := map[string][]string{} // list id -> conversations to add
	owner := map[string]string{}   // list id -> user
	var ids []string
	batch := map[string]bool{}
	s.pairsMu.Lock()
	for _, m := range msgs {
		if m.Room != "" || !strings.HasPrefix(m.Conv, protocol.DMPrefix) && !strings.HasPrefix(m.Conv, protocol.SupportPrefix) {
			continue
		}
		for _, u := range []string{m.From, m.To} {
			id := u + "/" + m.Conv
			if _, ok := s.pairs[id]; ok || u == "" || batch[id] {
				continue
			}
			batch[id] = true
			ids = append(ids, id)
			l := convListID(u, m.Conv)
			lists[l], owner[l] = append(lists[l], m.Conv), u
		}
	}
	s.pairsMu.Unlock()
	if len(lists) == 0 {
		return nil
	}
	if err := s.addToLists(ctx, lists, owner); err != nil {
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

// convBuckets is how many documents of user_conv_lists hold a user's
// conversations: a conversation goes to the one its id hashes to, so
// that no document grows past 1/convBuckets of the user's list.
const convBuckets = 8

// convListID is the _id of the user_conv_lists document that holds conv
// among user's conversations.
func convListID(user, conv string) string {
	h := fnv.New32a()
	h.Write([]byte(conv))
	return user + "/" + strconv.FormatUint(uint64(h.Sum32()%convBuckets), 10)
}

// addToLists adds, in one request, the conversations of lists (by
// user_conv_lists _id) to their documents.
func (s *Store) addToLists(ctx context.Context, lists map[string][]string, owner map[string]string) error {
	models := make([]mongo.WriteModel, 0, len(lists))
	for id, convs := range lists {
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).
			SetUpdate(bson.D{
				{Key: "$addToSet", Value: bson.D{{Key: "convs", Value: bson.D{{Key: "$each", Value: convs}}}}},
				{Key: "$set", Value: bson.D{{Key: "user", Value: owner[id]}}},
			}).SetUpsert(true))
	}
	_, err := s.convLists.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	return err
}

func isDuplicateKey(code int) bool { return code == 11000 || code == 11001 }

// Empty reports whether no message has ever been stored: a new deployment.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	colls := []*mongo.Collection{s.tops, s.chunks}
	for _, name := range legacyCollections() {
		colls = append(colls, s.db.Collection(name))
	}
	for _, coll := range colls {
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

// DirectConvs returns the direct and support conversations user has a
// message in, sorted, from the lists UpsertMessages keeps
// (user_conv_lists), read by _id: meant for rebuilding a user's list
// after Redis lost it.
func (s *Store) DirectConvs(ctx context.Context, user string) ([]string, error) {
	var convs []string
	for k := range convBuckets {
		var d struct {
			Convs []string `bson:"convs"`
		}
		err := s.convLists.FindOne(ctx, bson.D{{Key: "_id", Value: user + "/" + strconv.Itoa(k)}}).Decode(&d)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			continue
		case err != nil:
			return nil, fmt.Errorf("history: conversations of %s: %w", user, err)
		}
		convs = append(convs, d.Convs...)
	}
	slices.Sort(convs)
	return slices.Compact(convs), nil
}
