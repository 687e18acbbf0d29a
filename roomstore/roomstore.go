// Package roomstore keeps room membership where the leader needs it: in
// MongoDB, durable, and a copy in Redis, so that joins, leaves and a new
// leader's loading of the rooms go on while MongoDB does not answer (the
// core runs without the database). The copy is fenced by the leader's
// epoch like the documents; changes made while MongoDB was away are marked
// and written to MongoDB once it answers again (Flush).
//
// Redis keys, all under the hash tag {rooms} (one Redis Cluster slot, so
// each script touches one):
//
//	<p>{rooms}          hash room -> {"owner"?: O, "members": [...], "epoch": E, "deleted"?: true}
//	<p>{rooms}:epoch    the highest leader epoch that claimed the rooms
//	<p>{rooms}:dirty    set of rooms changed while MongoDB did not answer
//	<p>{rooms}:whole    set once the hash held every room MongoDB had
package roomstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/room"
)

// Durable is where membership is durable (history.Store).
type Durable interface {
	ClaimRooms(ctx context.Context, epoch int64) error
	Rooms(ctx context.Context) ([]room.Room, error)
	SaveRoom(ctx context.Context, r room.Room, epoch int64) error
	DeleteRoom(ctx context.Context, name string, epoch int64) error
	Ping(ctx context.Context) error
}

// Store is membership in MongoDB with its copy in Redis. It is safe for
// concurrent use; writes are serialised, so a Flush never writes an older
// membership over a newer one.
type Store struct {
	db     Durable
	rdb    redis.UniversalClient
	prefix string
	log    zerolog.Logger

	mu sync.Mutex // serialises SaveRoom and Flush
}

// New returns a Store over db and the Redis copy under prefix.
func New(db Durable, rdb redis.UniversalClient, prefix string, log zerolog.Logger) *Store {
	return &Store{db: db, rdb: rdb, prefix: prefix, log: log.With().Str("component", "rooms").Logger()}
}

// mongoWait bounds each MongoDB call, so that with MongoDB away (or no
// primary elected) the caller's time is left for the copy.
const mongoWait = 2 * time.Second

func mongoCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, mongoWait)
}

func (s *Store) hashKey() string  { return s.prefix + "{rooms}" }
func (s *Store) epochKey() string { return s.prefix + "{rooms}:epoch" }
func (s *Store) dirtyKey() string { return s.prefix + "{rooms}:dirty" }
func (s *Store) wholeKey() string { return s.prefix + "{rooms}:whole" }
func (s *Store) keys() []string {
	return []string{s.hashKey(), s.epochKey(), s.dirtyKey(), s.wholeKey()}
}

// copyDoc is one room in the Redis copy.
type copyDoc struct {
	Owner   string   `json:"owner,omitempty"`
	Members []string `json:"members"`
	Epoch   int64    `json:"epoch"`
	Deleted bool     `json:"deleted,omitempty"`
}

// saveScript writes one room unless a newer leader claimed the rooms.
// KEYS: hash, epoch, dirty, whole. ARGV: room, JSON, epoch, "1" to mark it
// dirty, "0" to clear the mark. Returns 1, or 0 when fenced.
var saveScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] == '1' then redis.call('SADD', KEYS[3], ARGV[1]) else redis.call('SREM', KEYS[3], ARGV[1]) end
return 1
`)

// claimScript raises the epoch to ARGV[1]; 0 when a newer one is there.
var claimScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
`)

// mirrorScript replaces the copy of every room not marked dirty with
// what MongoDB holds and marks the copy whole, unless fenced. KEYS: hash,
// epoch, dirty, whole. ARGV: epoch, then room and JSON pairs.
var mirrorScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur > tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('SET', KEYS[4], ARGV[1])
return 1
`)

func (s *Store) save(ctx context.Context, name string, r copyDoc, dirty bool) error {
	if r.Members == nil {
		r.Members = []string{}
	}
	epoch := r.Epoch
	b, _ := json.Marshal(r)
	flag := "0"
	if dirty {
		flag = "1"
	}
	ok, err := saveScript.Run(ctx, s.rdb, s.keys(), name, b, epoch, flag).Int()
	if err != nil {
		return fmt.Errorf("roomstore: save %s in Redis: %w", name, err)
	}
	if ok == 0 {
		return history.ErrFenced
	}
	return nil
}

// ClaimRooms claims the rooms for the leader of epoch in Redis and in
// MongoDB. While MongoDB does not answer, the Redis claim is enough to
// fence older leaders' writes to the copy; MongoDB is claimed at the next
// load (or by Flush's writes, which carry the epoch).
func (s *Store) ClaimRooms(ctx context.Context, epoch int64) error {
	ok, err := claimScript.Run(ctx, s.rdb, s.keys(), epoch).Int()
	if err != nil {
		return fmt.Errorf("roomstore: claim in Redis: %w", err)
	}
	if ok == 0 {
		return history.ErrFenced
	}
	mctx, cancel := mongoCtx(ctx)
	defer cancel()
	if err := s.db.ClaimRooms(mctx, epoch); err != nil {
		s.log.Warn().Err(err).Int64("epoch", epoch).Msg("MongoDB does not answer: rooms claimed in Redis only")
	}
	return nil
}

// Rooms returns every room. With MongoDB answering, its rooms, except
// those changed while it was away (the copy's, not yet flushed); and the
// copy is refreshed from them. Without, the copy, if it is whole;
// otherwise MongoDB's error.
func (s *Store) Rooms(ctx context.Context) ([]room.Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copied, dirty, whole, cerr := s.readCopy(ctx)
	mctx, cancel := mongoCtx(ctx)
	defer cancel()
	durable, err := s.db.Rooms(mctx)
	if err != nil {
		if cerr == nil && whole {
			s.log.Warn().Err(err).Int("rooms", len(copied)).Int("unflushed", len(dirty)).
				Msg("MongoDB does not answer: rooms loaded from their copy in Redis")
			return sorted(copied), nil
		}
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	out := map[string]copyDoc{}
	for _, r := range durable {
		out[r.Name] = copyDoc{Owner: r.Owner, Members: r.Members, Deleted: r.Deleted}
	}
	for name := range dirty {
		out[name] = copied[name]
	}
	// The copy of a room carries the epoch that claimed the rooms last.
	epoch, _ := s.rdb.Get(ctx, s.epochKey()).Int64()
	args := []any{epoch}
	for _, r := range durable {
		members := r.Members
		if members == nil {
			members = []string{}
		}
		b, _ := json.Marshal(copyDoc{Owner: r.Owner, Members: members, Epoch: epoch, Deleted: r.Deleted})
		args = append(args, r.Name, string(b))
	}
	if err := mirrorScript.Run(ctx, s.rdb, s.keys(), args...).Err(); err != nil {
		return nil, fmt.Errorf("roomstore: copy rooms to Redis: %w", err)
	}
	return sorted(out), nil
}

func sorted(m map[string]copyDoc) []room.Room {
	out := make([]room.Room, 0, len(m))
	for name, r := range m {
		out = append(out, room.Room{Name: name, Owner: r.Owner, Members: r.Members, Deleted: r.Deleted})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// readCopy reads the Redis copy: rooms, those marked dirty, and whether
// it is whole.
func (s *Store) readCopy(ctx context.Context) (map[string]copyDoc, map[string]bool, bool, error) {
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, s.hashKey())
	d := pipe.SMembers(ctx, s.dirtyKey())
	w := pipe.Exists(ctx, s.wholeKey())
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, false, fmt.Errorf("roomstore: read the copy: %w", err)
	}
	rooms := map[string]copyDoc{}
	for name, raw := range h.Val() {
		var c copyDoc
		if json.Unmarshal([]byte(raw), &c) == nil {
			rooms[name] = c
		}
	}
	dirty := map[string]bool{}
	for _, n := range d.Val() {
		if _, ok := rooms[n]; ok {
			dirty[n] = true
		}
	}
	return rooms, dirty, w.Val() == 1, nil
}

// SaveRoom stores a room's owner and members for the leader of epoch: in
// MongoDB, then in the copy. While MongoDB does not answer, in the copy alone,
// marked for Flush; the change takes effect all the same. ErrFenced when a
// newer leader owns the rooms (in either).
func (s *Store) SaveRoom(ctx context.Context, r room.Room, epoch int64) error {
	return s.write(ctx, r.Name, copyDoc{Owner: r.Owner, Members: r.Members, Epoch: epoch})
}

// DeleteRoom stores that room was deleted, for the leader of epoch, as
// SaveRoom stores membership: the room stays, without members, marked
// deleted, so its name is not used again.
func (s *Store) DeleteRoom(ctx context.Context, name string, epoch int64) error {
	return s.write(ctx, name, copyDoc{Epoch: epoch, Deleted: true})
}

// durable writes r to MongoDB.
func (s *Store) durable(ctx context.Context, name string, r copyDoc) error {
	if r.Deleted {
		return s.db.DeleteRoom(ctx, name, r.Epoch)
	}
	return s.db.SaveRoom(ctx, room.Room{Name: name, Owner: r.Owner, Members: r.Members}, r.Epoch)
}

func (s *Store) write(ctx context.Context, name string, r copyDoc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mctx, cancel := mongoCtx(ctx)
	defer cancel()
	err := s.durable(mctx, name, r)
	switch {
	case errors.Is(err, history.ErrFenced):
		return err
	case err != nil:
		if cerr := s.save(ctx, name, r, true); cerr != nil {
			return errors.Join(err, cerr)
		}
		s.log.Warn().Err(err).Str("room", name).Int("members", len(r.Members)).Bool("deleted", r.Deleted).
			Msg("MongoDB does not answer: membership kept in Redis, written to MongoDB when it is back")
		return nil
	}
	return s.save(ctx, name, r, false)
}

// Flush writes the rooms changed while MongoDB was away to MongoDB, for
// the leader of epoch, and clears their marks. It returns how many it
// wrote; an error stops it (the rest wait for the next call).
//
// It asks MongoDB first without holding up joins and leaves, so that while
// MongoDB is away they do not wait for it here.
func (s *Store) Flush(ctx context.Context, epoch int64) (int, error) {
	// Called every second: one SCARD while nothing waits.
	if n, err := s.rdb.SCard(ctx, s.dirtyKey()).Result(); err != nil || n == 0 {
		return 0, err
	}
	pctx, cancel := mongoCtx(ctx)
	err := s.db.Ping(pctx)
	cancel()
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	copied, dirty, _, err := s.readCopy(ctx)
	if err != nil || len(dirty) == 0 {
		return 0, err
	}
	mctx, cancel := mongoCtx(ctx)
	defer cancel()
	if err := s.db.ClaimRooms(mctx, epoch); err != nil {
		return 0, err
	}
	n := 0
	for name := range dirty {
		c := copied[name]
		r := copyDoc{Owner: c.Owner, Members: c.Members, Epoch: epoch, Deleted: c.Deleted}
		if err := s.durable(mctx, name, r); err != nil {
			return n, err
		}
		if err := s.save(ctx, name, r, false); err != nil {
			return n, err
		}
		n++
	}
	s.log.Info().Int("rooms", n).Int64("epoch", epoch).Msg("membership changed while MongoDB was away is written to MongoDB")
	return n, nil
}
