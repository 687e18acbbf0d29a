package chatlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/keyspace"
	"chatcluster/internal/redisconn"
	"chatcluster/protocol"
	"chatcluster/room"
)

// ErrNeedSeqInit is returned by Append when the conversation's counter is
// missing from a Redis that did not hold the counters from the start (it was
// restarted empty). The caller must seed the counter from durable history
// with InitSeq and try again; assigning from zero could reuse a seq.
var ErrNeedSeqInit = errors.New("chatlog: conversation counter must be seeded from history")

// IdempotencyTTL is how long a sender's clientMsgIds are remembered after
// their last messages (the TTL is renewed every 64 messages, not on each);
// IdempotencyWindow bounds how many: the last that many
// of each sender. A client resends only what it has not seen acknowledged,
// a few messages at most, so the window is far above what a resend needs,
// while the memory stays bounded by the number of active senders.
const (
	IdempotencyTTL    = 24 * time.Hour
	IdempotencyWindow = 1024
)

// Log reads and writes the Redis message journal. It is safe for concurrent
// use.
//
// Its keys are laid out for a Redis Cluster too (package keyspace): the
// keys of one conversation, its shard's history stream and marker, and its
// senders' idempotency records share one hash tag, so every script touches
// one slot; what spans conversations (a user's conversation list, the
// scan for counters) goes key by key.
type Log struct {
	rdb    redis.UniversalClient
	prefix string
	tags   *keyspace.Tags
	commit committer
}

// New returns a Log over rdb whose keys all start with prefix.
func New(rdb redis.UniversalClient, prefix string, opts ...Option) *Log {
	l := &Log{rdb: rdb, prefix: prefix, tags: keyspace.NewTags(), commit: committer{rdb: rdb}}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Option configures a Log.
type Option func(*Log)

// WithReplicas makes Append return only once n replicas hold the message
// (Redis WAIT, one per pipeline of appends), or timeout has passed: then
// short is called with how many did, and the message is acknowledged
// anyway. Replication is asynchronous, so without it a master lost to a
// failover takes the messages its replicas had not received yet with it.
func WithReplicas(n int, timeout time.Duration, short func(got int)) Option {
	return func(l *Log) {
		l.commit.replicas, l.commit.replicaWait, l.commit.short = n, timeout, short
	}
}

// Key names. Exposed for tests. A conversation's keys and its shard's
// stream, marker, gap record and idempotency records share the shard's
// hash tag.
func (l *Log) SeqKey(conv string) string     { return l.prefix + l.tags.Of(conv) + "seq:" + conv }
func (l *Log) RecentKey(conv string) string  { return l.prefix + l.tags.Of(conv) + "recent:" + conv }
func (l *Log) PendingKey(conv string) string { return l.prefix + l.tags.Of(conv) + "pending:" + conv }
func (l *Log) ConvsKey(user string) string   { return l.prefix + "convs:" + user }

// StreamKey is the history stream of conv's shard.
func (l *Log) StreamKey(conv string) string { return StreamKey(l.prefix, l.tags.Of(conv)) }

// StreamKey is the history stream of the shard whose tag is tag.
func StreamKey(prefix, tag string) string { return prefix + tag + "history" }

// MarkerKey is the marker of conv's shard: set, that shard holds every
// counter from the start (MarkFresh).
func (l *Log) MarkerKey(conv string) string { return l.markerOf(l.tags.Of(conv)) }
func (l *Log) markerOf(tag string) string   { return l.prefix + tag + "seqinit" }

// IdemKey is the hash clientMsgId -> "seq ts id conv" of user's last
// IdempotencyWindow messages in conversations of conv's shard;
// IdemOrderKey lists those ids, oldest first. A resend goes to the
// conversation of its first sending, so its shard is found again.
func (l *Log) IdemKey(user, conv string) string {
	return l.prefix + l.tags.Of(conv) + "idem:" + user
}
func (l *Log) IdemOrderKey(user, conv string) string {
	return l.prefix + l.tags.Of(conv) + "idemq:" + user
}

// appendScript stores one message. KEYS: seq, recent, pending, stream,
// marker, idem hash, idem order list (the last two the marker again when
// there is no clientMsgId). ARGV: JSON before the seq, JSON after it,
// recent length, conv, idempotency TTL in seconds, has-idem flag,
// clientMsgId, "ts id conv" of the message, idempotency window.
// Returns {status, seq or "seq ts id conv"}: status 1 stored (with its
// seq), 0 duplicate (what the first one was), -1 need init.
//
// The members' conversation lists are other slots: Append adds conv to
// them in the same pipeline, ahead of the script.
var appendScript = redis.NewScript(`
local hasIdem = ARGV[6] == '1'
if hasIdem then
  local prev = redis.call('HGET', KEYS[6], ARGV[7])
  if prev then return {0, prev} end
end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[5]) == 0 then
  return {-1, ''}
end
local seq = redis.call('INCR', KEYS[1])
local msg = ARGV[1] .. seq .. ARGV[2]
redis.call('LPUSH', KEYS[2], msg)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('HSET', KEYS[3], seq, msg)
redis.call('XADD', KEYS[4], '*', 'm', msg)
if hasIdem then
  local ttl = tonumber(ARGV[5])
  redis.call('HSET', KEYS[6], ARGV[7], seq .. ' ' .. ARGV[8])
  -- Forgotten 64 at a time, and the TTL set again every 64 messages,
  -- not on each.
  local n = redis.call('RPUSH', KEYS[7], ARGV[7])
  local w = tonumber(ARGV[9])
  if n >= w + 64 then
    redis.call('HDEL', KEYS[6], unpack(redis.call('LPOP', KEYS[7], n - w)))
  end
  if n % 64 == 1 then
    redis.call('EXPIRE', KEYS[6], ttl)
    redis.call('EXPIRE', KEYS[7], ttl)
  end
end
return {1, seq}
`)

// Appended is what Append did with a message.
type Appended struct {
	// Message is the message as stored, with its seq; for a resend, what
	// the first message was (its id, conversation, seq and time; no text).
	Message protocol.Message
	// Push is the message push its recipients get, encoded once here
	// where the message was stored; nil for a resend.
	Push []byte
	// Dup says the message was a resend: nothing was stored.
	Dup bool
}

// RunLazy runs script with keys and args beside the appends: in the next
// pipeline the group commit sends for them, or, when none goes within
// about 10 ms, in one of its own. For writes that may wait a little
// (read positions): under load they cost no round trip of their own. The
// script must not depend on the appends it rides with. Its reply is a
// slice, as Append's.
func (l *Log) RunLazy(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error) {
	return l.commit.runLazy(ctx, script, keys, args)
}

// Append assigns m the next seq of m.Conv and records it. m.Seq is ignored.
// members are the users whose conversation lists gain m.Conv. If
// clientMsgID is not empty and m.From already sent it (among their last
// IdempotencyWindow messages, within IdempotencyTTL), Append returns what
// the first message was with Dup set, storing nothing.
//
// Appends that arrive together go to Redis together, in one pipeline
// (committer), each still its own atomic script.
func (l *Log) Append(ctx context.Context, m protocol.Message, clientMsgID string, members []string) (Appended, error) {
	m.Seq = 0
	// The message's JSON is written once, in two parts around its seq,
	// which the script puts in without decoding anything.
	head := protocol.AppendMessageHead(make([]byte, 0, 64+len(m.ID)+len(m.Conv)), &m)
	tail := protocol.AppendMessageTail(make([]byte, 0, 64+len(m.From)+len(m.To)+len(m.Room)+len(m.Text)), &m)
	marker := l.MarkerKey(m.Conv)
	idem, order, hasIdem := marker, marker, "0"
	if clientMsgID != "" {
		idem, order, hasIdem = l.IdemKey(m.From, m.Conv), l.IdemOrderKey(m.From, m.Conv), "1"
	}
	keys := []string{l.SeqKey(m.Conv), l.RecentKey(m.Conv), l.PendingKey(m.Conv), l.StreamKey(m.Conv), marker, idem, order}
	adds := make([]string, len(members))
	for i, u := range members {
		adds[i] = l.ConvsKey(u)
	}
	args := []any{head, tail, protocol.RecentLen, m.Conv, int(IdempotencyTTL / time.Second), hasIdem, clientMsgID,
		strconv.FormatInt(m.TS, 10) + " " + m.ID + " " + m.Conv, IdempotencyWindow}
	res, err := l.commit.run(ctx, appendScript, keys, args, adds, m.Conv)
	if err != nil {
		return Appended{}, fmt.Errorf("chatlog: append: %w", err)
	}
	if len(res) != 2 {
		return Appended{}, fmt.Errorf("chatlog: append: unexpected reply %v", res)
	}
	status, _ := res[0].(int64)
	switch status {
	case -1:
		return Appended{}, ErrNeedSeqInit
	case 1:
		seq, _ := res[1].(int64)
		m.Seq = seq
		push := make([]byte, 0, len(protocol.MessagePushPrefix)+len(head)+20+len(tail)+len(protocol.MessagePushSuffix))
		push = append(append(push, protocol.MessagePushPrefix...), head...)
		push = append(strconv.AppendInt(push, seq, 10), tail...)
		return Appended{Message: m, Push: append(push, protocol.MessagePushSuffix...)}, nil
	}
	prev, _ := res[1].(string)
	first, err := parseIdem(prev)
	if err != nil {
		return Appended{}, err
	}
	first.From = m.From
	return Appended{Message: first, Dup: true}, nil
}

// parseIdem reads a remembered "seq ts id conv".
func parseIdem(s string) (protocol.Message, error) {
	f := strings.SplitN(s, " ", 4)
	if len(f) != 4 {
		return protocol.Message{}, fmt.Errorf("chatlog: remembered clientMsgId %q is malformed", s)
	}
	seq, err1 := strconv.ParseInt(f[0], 10, 64)
	ts, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return protocol.Message{}, fmt.Errorf("chatlog: remembered clientMsgId %q is malformed", s)
	}
	return protocol.Message{Seq: seq, TS: ts, ID: f[2], Conv: f[3]}, nil
}

// restoreScript stores messages a client uploaded for a conversation the
// server has lost. KEYS: seq, recent, pending, stream, marker. ARGV:
// recent length, conv, then seq and JSON
// pairs in ascending seq order. A message is stored when its seq is above
// the counter, or, at or below it, when this Redis holds no message with
// that seq (the caller has already left out the seqs MongoDB holds).
// Returns {restored, latest}, or {-1} when the counter must be seeded
// first.
var restoreScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
  if redis.call('EXISTS', KEYS[5]) == 0 then return {-1, 0} end
  cur = 0
end
cur = tonumber(cur)
local top, restored = cur, 0
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > cur or redis.call('HEXISTS', KEYS[3], seq) == 0 then
    local msg = ARGV[i + 1]
    redis.call('HSET', KEYS[3], seq, msg)
    redis.call('XADD', KEYS[4], '*', 'm', msg)
    -- Only messages above the counter are newer than the recent list.
    if seq > cur then redis.call('LPUSH', KEYS[2], msg) end
    restored = restored + 1
    if seq > top then top = seq end
  end
end
if restored > 0 then
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[1]) - 1)
  redis.call('SET', KEYS[1], top)
end
return {restored, top}
`)

// Restore stores msgs of conv that a client still holds but the server
// has lost: those above the conversation's counter, which then moves to
// the highest of them, and those at or below it whose seq holds no
// message in Redis. The caller leaves out the seqs MongoDB holds, so the
// server's own messages always win and restoring twice changes nothing. msgs must belong to conv, with
// distinct seqs; members gain conv in their conversation lists. It returns
// how many messages were stored and the conversation's latest seq, or
// ErrNeedSeqInit like Append.
func (l *Log) Restore(ctx context.Context, conv string, msgs []protocol.Message, members []string) (int, int64, error) {
	sorted := append([]protocol.Message(nil), msgs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Seq < sorted[j].Seq })
	args := make([]any, 0, 2+2*len(sorted))
	args = append(args, protocol.RecentLen, conv)
	for _, m := range sorted {
		if m.Conv != conv || m.Seq <= 0 {
			return 0, 0, fmt.Errorf("chatlog: restore %s: message %s does not belong", conv, m.ID)
		}
		b, err := json.Marshal(m)
		if err != nil {
			return 0, 0, err
		}
		args = append(args, m.Seq, string(b))
	}
	// The members' lists first, each its own slot on a Redis Cluster: a
	// list naming a conversation whose restore then failed is harmless.
	if len(members) > 0 {
		pipe := l.rdb.Pipeline()
		for _, u := range members {
			pipe.SAdd(ctx, l.ConvsKey(u), conv)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, 0, fmt.Errorf("chatlog: restore %s: conversation lists: %w", conv, err)
		}
	}
	keys := []string{l.SeqKey(conv), l.RecentKey(conv), l.PendingKey(conv), l.StreamKey(conv), l.MarkerKey(conv)}
	res, err := restoreScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("chatlog: restore %s: %w", conv, err)
	}
	if res[0] < 0 {
		return 0, 0, ErrNeedSeqInit
	}
	return int(res[0]), res[1], nil
}

// SeqGap is how far a counter seeded after a loss of Redis data starts
// above what MongoDB holds. Messages acknowledged but not yet written to
// MongoDB when Redis lost them had seqs just above it; new messages must
// not take those seqs, so that clients still holding the lost ones can
// give them back (rebuild) without clashing with new ones. It assumes no
// conversation lost more than SeqGap messages.
const SeqGap = 1000

// ReseededKey is the hash conv -> floor of the counters of conv's shard
// seeded after a loss: seqs in (floor, floor+SeqGap] may be held only by
// clients.
func (l *Log) ReseededKey(conv string) string { return l.prefix + l.tags.Of(conv) + "reseeded" }

// SeededAtKey is the hash conv -> when (Unix ms) the counter of conv, of
// conv's shard, was last seeded after a loss.
func (l *Log) SeededAtKey(conv string) string { return l.prefix + l.tags.Of(conv) + "seededat" }

// reseedScript seeds a missing counter above both what MongoDB holds
// (ARGV[1]) and what this Redis still holds unwritten (the pending hash),
// so a seq that exists anywhere is never assigned again, and at least at
// ARGV[4], and records when (ARGV[5], unless 0). KEYS: seq, reseeded,
// pending, seededat. ARGV: durable latest, gap, conv, lowest value, now in
// Unix ms or 0.
var reseedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local floor = tonumber(ARGV[1])
for _, s in ipairs(redis.call('HKEYS', KEYS[3])) do
  local n = tonumber(s)
  if n and n > floor then floor = n end
end
local top = floor + tonumber(ARGV[2])
if tonumber(ARGV[4]) > top then top = tonumber(ARGV[4]) end
redis.call('SET', KEYS[1], top)
-- Keep the lowest floor: a conversation re-seeded twice still has its
-- first gap, where clients may hold what was lost.
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '')
if not old or old > floor then redis.call('HSET', KEYS[2], ARGV[3], floor) end
if ARGV[5] ~= '0' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[5]) end
return 1
`)

// Reseed seeds conv's counter, lost with Redis, from durable, the highest
// seq MongoDB holds (or the highest still waiting in Redis, if higher):
// the next message gets that plus SeqGap plus one, or lowest plus one if
// that is higher (an earlier seeding's counter, whose messages may all be
// lost), and the floor is recorded (Reseeded). A counter that exists is
// left alone.
// With settle, the time is recorded too (SeededAt): clients may still give
// back what lies above the floor.
func (l *Log) Reseed(ctx context.Context, conv string, durable, lowest int64, settle bool) error {
	keys := []string{l.SeqKey(conv), l.ReseededKey(conv), l.PendingKey(conv), l.SeededAtKey(conv)}
	var at int64
	if settle {
		at = time.Now().UnixMilli()
	}
	if err := reseedScript.Run(ctx, l.rdb, keys, durable, SeqGap, conv, lowest, at).Err(); err != nil {
		return fmt.Errorf("chatlog: reseed %s: %w", conv, err)
	}
	return nil
}

// Reseeded returns, for those of convs whose counters were seeded after a
// loss, the floor they were seeded from.
func (l *Log) Reseeded(ctx context.Context, convs []string) (map[string]int64, error) {
	out, err := l.fieldOfEach(ctx, l.ReseededKey, convs)
	if err != nil {
		return nil, fmt.Errorf("chatlog: reseeded: %w", err)
	}
	return out, nil
}

// SeededAt returns, for those of convs whose counters were seeded after a
// loss, when (Unix ms) that last happened.
func (l *Log) SeededAt(ctx context.Context, convs []string) (map[string]int64, error) {
	out, err := l.fieldOfEach(ctx, l.SeededAtKey, convs)
	if err != nil {
		return nil, fmt.Errorf("chatlog: seeded at: %w", err)
	}
	return out, nil
}

// fieldOfEach reads, in one round trip, the number each of convs has as a
// field of its shard's hash key(conv); a conversation without one is left
// out.
func (l *Log) fieldOfEach(ctx context.Context, key func(string) string, convs []string) (map[string]int64, error) {
	out := map[string]int64{}
	if len(convs) == 0 {
		return out, nil
	}
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(convs))
	for i, cv := range convs {
		cmds[i] = pipe.HGet(ctx, key(cv), cv)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for i, c := range cmds {
		if v, err := c.Result(); err == nil {
			n, _ := strconv.ParseInt(v, 10, 64)
			out[convs[i]] = n
		}
	}
	return out, nil
}

// InitSeq seeds conv's counter to latest unless it already exists.
func (l *Log) InitSeq(ctx context.Context, conv string, latest int64) error {
	if err := l.rdb.SetNX(ctx, l.SeqKey(conv), latest, 0).Err(); err != nil {
		return fmt.Errorf("chatlog: init seq: %w", err)
	}
	return nil
}

// MarkFresh records that this Redis holds every counter from the start, so a
// missing counter means a new conversation: it sets every shard's marker.
// Call it only when durable history is known to be empty (a new
// deployment).
func (l *Log) MarkFresh(ctx context.Context) error {
	now := time.Now().UnixMilli()
	pipe := l.rdb.Pipeline()
	for _, tag := range l.tags {
		pipe.SetNX(ctx, l.markerOf(tag), now, 0)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Fresh reports whether this Redis holds every counter from the start
// (MarkFresh): a missing counter then means a conversation without
// messages, not a counter lost with Redis. On a Redis Cluster one master
// that lost its data takes its shards' markers with it, and Fresh is false.
func (l *Log) Fresh(ctx context.Context) (bool, error) {
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(l.tags))
	for i, tag := range l.tags {
		cmds[i] = pipe.Exists(ctx, l.markerOf(tag))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("chatlog: fresh: %w", err)
	}
	for _, c := range cmds {
		if c.Val() != 1 {
			return false, nil
		}
	}
	return true, nil
}

// Latest returns the latest seq of each conversation (0 when unknown).
func (l *Log) Latest(ctx context.Context, convs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(convs))
	if len(convs) == 0 {
		return out, nil
	}
	// GETs, not one MGET: on a Redis Cluster the counters are in many
	// slots; a pipeline still takes one round trip per master.
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(convs))
	for i, c := range convs {
		cmds[i] = pipe.Get(ctx, l.SeqKey(c))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("chatlog: latest: %w", err)
	}
	for i, c := range cmds {
		n, _ := c.Int64()
		out[convs[i]] = n
	}
	return out, nil
}

// Convs returns the conversations user takes part in.
func (l *Log) Convs(ctx context.Context, user string) ([]string, error) {
	cs, err := l.rdb.SMembers(ctx, l.ConvsKey(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("chatlog: convs: %w", err)
	}
	sort.Strings(cs)
	return cs, nil
}

// AddConv records that user takes part in conv.
func (l *Log) AddConv(ctx context.Context, user, conv string) error {
	return l.rdb.SAdd(ctx, l.ConvsKey(user), conv).Err()
}

// Waiting returns the seqs of conv's messages that wait in Redis to be
// written to MongoDB. The history writer deletes one only after MongoDB
// has it, so reading this before MongoDB misses nothing.
func (l *Log) Waiting(ctx context.Context, conv string) (map[int64]bool, error) {
	keys, err := l.rdb.HKeys(ctx, l.PendingKey(conv)).Result()
	if err != nil {
		return nil, fmt.Errorf("chatlog: waiting: %w", err)
	}
	out := make(map[int64]bool, len(keys))
	for _, k := range keys {
		if n, err := strconv.ParseInt(k, 10, 64); err == nil {
			out[n] = true
		}
	}
	return out, nil
}

// ForgetCounters deletes every conversation counter and the markers that
// say Redis holds them from the start, so that each is seeded again above
// what MongoDB and Redis hold (Reseed) on its next use. For a Redis that
// came back with older data than it had: its counters may be behind. It
// scans every master of a Redis Cluster.
func (l *Log) ForgetCounters(ctx context.Context) (int, error) {
	// The markers first: without them a missing counter is seeded from
	// what is stored, never counted from zero.
	pipe := l.rdb.Pipeline()
	for _, tag := range l.tags {
		pipe.Del(ctx, l.markerOf(tag))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("chatlog: forget counters: %w", err)
	}
	var mu sync.Mutex
	n := 0
	err := redisconn.EachMaster(ctx, l.rdb, func(ctx context.Context, c *redis.Client) error {
		k, err := deleteMatching(ctx, c, l.prefix+"{*}seq:*")
		mu.Lock()
		n += k
		mu.Unlock()
		return err
	})
	if err != nil {
		return n, fmt.Errorf("chatlog: forget counters: %w", err)
	}
	return n, nil
}

// deleteMatching deletes the keys of one server that match pattern, 500
// at a time, and returns how many it deleted.
func deleteMatching(ctx context.Context, c *redis.Client, pattern string) (int, error) {
	n := 0
	iter := c.Scan(ctx, 0, pattern, 500).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// One key per DEL: the keys of a batch are in many slots.
		pipe := c.Pipeline()
		for _, k := range batch {
			pipe.Del(ctx, k)
		}
		_, err := pipe.Exec(ctx)
		n += len(batch)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, err
	}
	return n, flush()
}

// ConvsRestored reports whether user's conversation list was rebuilt
// since Redis lost its data (RestoreConvs).
func (l *Log) ConvsRestored(ctx context.Context, user string) (bool, error) {
	n, err := l.rdb.Exists(ctx, l.prefix+"convs-restored:"+user).Result()
	if err != nil {
		return false, fmt.Errorf("chatlog: convs restored: %w", err)
	}
	return n == 1, nil
}

// RestoreConvs adds convs to user's list and records that the list was
// rebuilt.
func (l *Log) RestoreConvs(ctx context.Context, user string, convs []string) error {
	if len(convs) > 0 {
		if err := l.rdb.SAdd(ctx, l.ConvsKey(user), toAny(convs)...).Err(); err != nil {
			return fmt.Errorf("chatlog: restore convs of %s: %w", user, err)
		}
	}
	// Only once they are in: the record is in another slot on a Redis
	// Cluster, so the two cannot be one transaction.
	if err := l.rdb.Set(ctx, l.prefix+"convs-restored:"+user, 1, 0).Err(); err != nil {
		return fmt.Errorf("chatlog: restore convs of %s: %w", user, err)
	}
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// RemoveConv records that user no longer takes part in conv.
func (l *Log) RemoveConv(ctx context.Context, user, conv string) error {
	return l.rdb.SRem(ctx, l.ConvsKey(user), conv).Err()
}

// AddMembers records, for every room, that its members take part in its
// conversation, in one round trip.
func (l *Log) AddMembers(ctx context.Context, rooms []room.Room) error {
	pipe := l.rdb.Pipeline()
	n := 0
	for _, r := range rooms {
		conv := protocol.RoomConv(r.Name)
		for _, u := range r.Members {
			pipe.SAdd(ctx, l.ConvsKey(u), conv)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("chatlog: add room members: %w", err)
	}
	return nil
}

// RemoveMembers removes room's conversation from the lists of its members,
// in one round trip: they can no longer read it.
func (l *Log) RemoveMembers(ctx context.Context, r room.Room) error {
	if len(r.Members) == 0 {
		return nil
	}
	conv := protocol.RoomConv(r.Name)
	pipe := l.rdb.Pipeline()
	for _, u := range r.Members {
		pipe.SRem(ctx, l.ConvsKey(u), conv)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("chatlog: remove room members: %w", err)
	}
	return nil
}

// Unflushed returns the messages of conv that are in Redis (recent list and
// the pending hash, which holds everything not yet in MongoDB), oldest first,
// without duplicates.
func (l *Log) Unflushed(ctx context.Context, conv string) ([]protocol.Message, error) {
	out, _, err := l.UnflushedAfter(ctx, conv)
	return out, err
}

// UnflushedAfter is Unflushed, and says from which seq on Redis holds
// every entry of conv: no seq above after, up to the conversation's
// counter, is missing from what it returns. For a message at a seq above
// after, every entry that came later, the edits and recalls of it among
// them, is then in the answer. after is the counter itself when the newest
// entries are not in Redis (its recent list was lost, or a counter seeded
// after a loss has none above it yet), and 0 when nothing of conv is
// stored.
func (l *Log) UnflushedAfter(ctx context.Context, conv string) (msgs []protocol.Message, after int64, err error) {
	pipe := l.rdb.Pipeline()
	// The recent list first: an entry the history writer removes from the
	// pending hash between the two reads is in it, if it is among the
	// newest, and otherwise leaves a gap below them, which after shows.
	recent := pipe.LRange(ctx, l.RecentKey(conv), 0, -1)
	pending := pipe.HVals(ctx, l.PendingKey(conv))
	counter := pipe.Get(ctx, l.SeqKey(conv))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("chatlog: read %s: %w", conv, err)
	}
	top, _ := counter.Int64()
	raws := append(recent.Val(), pending.Val()...)
	out := make([]protocol.Message, 0, len(raws))
	seen := make(map[int64]bool, len(raws))
	for _, r := range raws {
		var m protocol.Message
		if json.Unmarshal([]byte(r), &m) != nil || seen[m.Seq] {
			continue
		}
		seen[m.Seq] = true
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	if len(out) == 0 || out[len(out)-1].Seq < top {
		return out, top, nil
	}
	i := len(out) - 1
	for i > 0 && out[i-1].Seq == out[i].Seq-1 {
		i--
	}
	return out, out[i].Seq - 1, nil
}
