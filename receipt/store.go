package receipt

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/internal/keyspace"
)

// Position is how far User has read Conv.
type Position struct {
	Conv string
	User string
	Seq  int64
}

// Durable is where positions are made durable (history.Store).
type Durable interface {
	// ReadPositions returns the positions of the conversations and
	// users of ps (Seq ignored), in order; Seq 0 where none is stored.
	ReadPositions(ctx context.Context, ps []Position) ([]Position, error)
	// SaveReadPositions raises each stored position to the one given.
	SaveReadPositions(ctx context.Context, ps []Position) error
}

// Config is what a Store is made of.
type Config struct {
	Redis  redis.UniversalClient
	Prefix string // of every key
	// Durable is the durable copy; nil: none (Redis alone).
	Durable Durable
	// Marker names, for a conversation, the key whose presence says that
	// Redis has held everything of the conversation's shard since the
	// cluster began (chatlog.Log.MarkerKey): a position missing there is
	// 0, without asking Durable. nil: Durable is always asked.
	Marker func(conv string) string
	// Counter names a conversation's seq counter (chatlog.Log.SeqKey),
	// under the same hash tag as its positions, so that Mark checks a
	// position against the conversation's latest seq in its own round
	// trip. nil: Mark checks nothing.
	Counter func(conv string) string
	// Beside, when set, runs the mark script beside other writes
	// (chatlog.Log.RunLazy): a read may wait a few milliseconds for a
	// pipeline going to Redis anyway rather than cost a round trip of
	// its own. nil: each mark is its own round trip.
	Beside func(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error)
	// Queue bounds the positions waiting to be made durable in each of
	// the keyspace.Shards queues (default DefaultQueue).
	Queue int
	// Holder names this Store among the writers that compete for the
	// lease (the node's id); Lease is how long the lease lasts unless
	// renewed (default DefaultLease).
	Holder string
	Lease  time.Duration
	Log    zerolog.Logger
}

// DefaultQueue is how many positions may wait to be made durable in each
// shard's queue: 32,000 in all.
const DefaultQueue = 1000

// Store reads and raises read positions. Create it with New; Run makes
// what rose durable. Safe for concurrent use.
type Store struct {
	rdb     redis.UniversalClient
	prefix  string
	tags    *keyspace.Tags
	durable Durable
	marker  func(conv string) string
	counter func(conv string) string
	beside  func(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error)
	log     zerolog.Logger
	// warn is log, at most a few lines a second.
	warn     zerolog.Logger
	queueCap int
	leaseKey string
	holder   string
	lease    time.Duration
}

// New returns a Store over cfg. It starts nothing: Run does.
func New(cfg Config) *Store {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Holder == "" {
		cfg.Holder = "receipts"
	}
	log := cfg.Log.With().Str("component", "receipts").Logger()
	return &Store{
		rdb: cfg.Redis, prefix: cfg.Prefix, tags: keyspace.NewTags(), durable: cfg.Durable, marker: cfg.Marker, counter: cfg.Counter, beside: cfg.Beside,
		log: log, warn: log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		queueCap: cfg.Queue, leaseKey: LeaseKey(cfg.Prefix), holder: cfg.Holder, lease: cfg.Lease,
	}
}

// Key is the hash of conv's read positions.
func (s *Store) Key(conv string) string { return s.prefix + s.tags.Of(conv) + "read:" + conv }

// markerKey is the marker of conv's shard, or the hash itself without one
// (a key the scripts then do not look at).
func (s *Store) markerKey(conv string) string {
	if s.marker == nil {
		return s.Key(conv)
	}
	return s.marker(conv)
}

// markScript raises a position. KEYS: the conversation's hash, its shard's
// marker (the hash again when there is none), its seq counter, its shard's
// write-behind queue. ARGV: user, seq, the durable position or "" when not
// read yet, "1" to check seq against the counter first: {-3, 0} when
// there is no counter, {-2, latest} when seq is above it; the queue field,
// the queue's bound ("0": no queue). The position before is the one in
// Redis; without one, the durable one, or 0 when the marker says Redis has
// held everything; without either the script returns {-1, 0} and the
// caller reads the durable position and calls again. A position read from
// MongoDB is put in Redis even when seq is lower. Returns {1, seq} when
// seq raised the position and it is queued to be made durable, {2, seq}
// when it raised it but the queue is full, {0, position} when it did not
// raise it.
var markScript = redis.NewScript(`
if ARGV[4] == '1' then
  local top = redis.call('GET', KEYS[3])
  if not top then return {-3, 0} end
  if tonumber(ARGV[2]) > tonumber(top) then return {-2, tonumber(top)} end
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local base, baseStr
if cur then
  base, baseStr = tonumber(cur), cur
  if ARGV[3] ~= '' and tonumber(ARGV[3]) > base then base, baseStr = tonumber(ARGV[3]), ARGV[3] end
elseif ARGV[3] ~= '' then
  base, baseStr = tonumber(ARGV[3]), ARGV[3]
elseif KEYS[2] ~= KEYS[1] and redis.call('EXISTS', KEYS[2]) == 1 then
  base, baseStr = 0, '0'
else
  return {-1, 0}
end
if tonumber(ARGV[2]) > base then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if ARGV[6] == '0' then return {1, tonumber(ARGV[2])} end
  if redis.call('HEXISTS', KEYS[4], ARGV[5]) == 1 or redis.call('HLEN', KEYS[4]) < tonumber(ARGV[6]) then
    redis.call('HSET', KEYS[4], ARGV[5], ARGV[2])
    return {1, tonumber(ARGV[2])}
  end
  return {2, tonumber(ARGV[2])}
end
if baseStr ~= cur then redis.call('HSET', KEYS[1], ARGV[1], baseStr) end
return {0, base}
`)

// ErrNoCounter is Mark's error when Redis holds no seq counter for the
// conversation: it has no message, or Redis lost its data. The caller
// finds the latest seq otherwise and calls Mark again, unchecked.
var ErrNoCounter = errors.New("receipt: the conversation has no seq counter in Redis")

// AboveLatestError is Mark's error for a seq above the conversation's
// latest.
type AboveLatestError struct{ Latest int64 }

func (e *AboveLatestError) Error() string {
	return fmt.Sprintf("receipt: seq above the latest (%d)", e.Latest)
}

// Mark raises user's position in conv to seq if seq is higher, and
// returns the position now stored and whether seq raised it. A raised
// position is queued to be made durable. With check (and a Counter), a
// seq above the conversation's latest changes nothing and is an
// *AboveLatestError, checked in the same round trip; without a counter
// in Redis the error is ErrNoCounter. Without check the caller has
// checked seq.
func (s *Store) Mark(ctx context.Context, conv, user string, seq int64, check bool) (int64, bool, error) {
	keys := []string{s.Key(conv), s.markerKey(conv), s.Key(conv), s.queueKey(conv)}
	checkArg := ""
	if check && s.counter != nil {
		keys[2], checkArg = s.counter(conv), "1"
	}
	field, qcap := queueField(conv, user), s.queueCap
	if s.durable == nil {
		qcap = 0
	}
	res, err := s.mark(ctx, keys, user, seq, "", checkArg, field, qcap)
	if err == nil && len(res) == 2 && res[0] < 0 {
		floor := int64(0)
		if s.durable != nil {
			got, derr := s.durable.ReadPositions(ctx, []Position{{Conv: conv, User: user}})
			if derr != nil {
				s.warn.Warn().Err(derr).Str("conv", conv).Str("user", user).
					Msg("cannot read the durable read position that Redis lacks; counting from this read (logged at most 5 a second)")
			} else if len(got) == 1 {
				floor = got[0].Seq
			}
		}
		res, err = s.mark(ctx, keys, user, seq, floor, checkArg, field, qcap)
	}
	if err == nil && len(res) == 2 {
		switch res[0] {
		case -3:
			return 0, false, ErrNoCounter
		case -2:
			return 0, false, &AboveLatestError{Latest: res[1]}
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("receipt: mark %s: %w", conv, err)
	}
	if len(res) != 2 || res[0] < 0 {
		return 0, false, fmt.Errorf("receipt: mark %s: unexpected reply %v", conv, res)
	}
	if res[0] == 2 {
		s.warn.Warn().Str("conv", conv).Str("user", user).Int("queue", s.queueCap).
			Msg("too many read positions of this shard wait to be made durable; this one stays in Redis only (logged at most 5 a second)")
	}
	return res[1], res[0] >= 1, nil
}

// mark runs markScript, beside other writes where it may.
func (s *Store) mark(ctx context.Context, keys []string, args ...any) ([]int64, error) {
	if s.beside == nil {
		return markScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	}
	vals, err := s.beside(ctx, markScript, keys, args...)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(vals))
	for i, v := range vals {
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("unexpected reply %v", vals)
		}
		out[i] = n
	}
	return out, nil
}

// fillScript puts positions read from MongoDB back in Redis, each only
// where Redis has none or a lower one. KEYS: the conversation's hash.
// ARGV: user, seq pairs.
var fillScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
`)

// Positions returns the positions of the named users in each
// conversation: out[conv][user], 0 for none. One pipeline reads Redis;
// positions Redis lacks where its marker is missing too are read from
// Durable and put back in Redis. Durable failing is logged, not returned:
// those positions count as 0 this time.
func (s *Store) Positions(ctx context.Context, want map[string][]string) (map[string]map[string]int64, error) {
	out := make(map[string]map[string]int64, len(want))
	if len(want) == 0 {
		return out, nil
	}
	type read struct {
		conv   string
		users  []string
		vals   *redis.SliceCmd
		marked *redis.IntCmd
	}
	reads := make([]read, 0, len(want))
	pipe := s.rdb.Pipeline()
	for conv, users := range want {
		if len(users) == 0 {
			continue
		}
		r := read{conv: conv, users: users, vals: pipe.HMGet(ctx, s.Key(conv), users...)}
		if s.marker != nil {
			r.marked = pipe.Exists(ctx, s.marker(conv))
		}
		reads = append(reads, r)
	}
	if len(reads) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipt: positions: %w", err)
	}
	var missing []Position
	for _, r := range reads {
		m := make(map[string]int64, len(r.users))
		out[r.conv] = m
		fresh := r.marked != nil && r.marked.Val() == 1
		for i, v := range r.vals.Val() {
			if str, ok := v.(string); ok {
				m[r.users[i]], _ = parseSeq(str)
				continue
			}
			m[r.users[i]] = 0
			if !fresh {
				missing = append(missing, Position{Conv: r.conv, User: r.users[i]})
			}
		}
	}
	if len(missing) == 0 || s.durable == nil {
		return out, nil
	}
	got, err := s.durable.ReadPositions(ctx, missing)
	if err != nil {
		s.warn.Warn().Err(err).Int("positions", len(missing)).
			Msg("cannot read the durable read positions that Redis lacks; they count as 0 for now (logged at most 5 a second)")
		return out, nil
	}
	fill := s.rdb.Pipeline()
	args := map[string][]any{}
	for _, p := range got {
		if p.Seq > out[p.Conv][p.User] {
			out[p.Conv][p.User] = p.Seq
		}
		args[p.Conv] = append(args[p.Conv], p.User, p.Seq)
	}
	for conv, a := range args {
		// Eval, not EvalSha: in a pipeline a missing script could not be
		// loaded and sent again; this is rare and small.
		fillScript.Eval(ctx, fill, []string{s.Key(conv)}, a...)
	}
	if _, err := fill.Exec(ctx); err != nil {
		s.warn.Warn().Err(err).Msg("cannot put read positions back in Redis; they are read from MongoDB again next time (logged at most 5 a second)")
	}
	return out, nil
}

func parseSeq(v string) (int64, error) { return strconv.ParseInt(v, 10, 64) }
