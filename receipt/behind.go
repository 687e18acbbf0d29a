package receipt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/keyspace"
	"chatcluster/internal/lease"
)

// Write-behind: a position that rose is recorded, in the same script that
// raised it, in its shard's queue in Redis (a hash "<conv>\x00<user>" ->
// seq, the highest), and the one writer that holds the lease writes the
// queues to Durable every moment. The queue lives in Redis, not in the
// node that took the read: a node killed before the write loses nothing
// that Redis still has.
const (
	// gatherFor is the pause between two rounds of the writer. A user
	// reading along raises a position several times a second; one write
	// every few seconds carries only the highest, which spares MongoDB
	// nearly all of them (on the embedded store each is a read and a
	// replace, about 2 ms of its CPU).
	gatherFor = 3 * time.Second
	// maxWrite bounds the positions of one write, and pace is the pause
	// between two writes of one round: the store's work comes in small
	// steps beside the message path's, never in one burst (at most 400
	// positions a second).
	maxWrite = 20
	pace     = 50 * time.Millisecond
	// writeTimeout bounds one write; finalWrite the writes at stop.
	writeTimeout = 5 * time.Second
	finalWrite   = 2 * time.Second
	// retryMin and retryMax bound the wait after a failed round.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
	// DefaultLease is how long the writer's lease lasts unless renewed: a
	// writer that died is replaced within about that long.
	DefaultLease = 5 * time.Second
)

// fieldSep separates the conversation from the user in a queue field; a
// username never holds it, so the last one is the separator.
const fieldSep = "\x00"

func queueField(conv, user string) string { return conv + fieldSep + user }

func parseField(f string) (conv, user string, ok bool) {
	i := strings.LastIndex(f, fieldSep)
	if i <= 0 || i == len(f)-1 {
		return "", "", false
	}
	return f[:i], f[i+1:], true
}

// queueKey is the queue of conv's shard, under the shard's hash tag like
// every key of the conversation, so that markScript may write it.
func (s *Store) queueKey(conv string) string { return s.shardQueue(keyspace.Shard(conv)) }

func (s *Store) shardQueue(i int) string { return s.prefix + s.tags[i] + "readq" }

// LeaseKey is the key of the read-position writers' lease under prefix.
func LeaseKey(prefix string) string { return prefix + "receipt:writer" }

// Queued is how many positions wait to be made durable, in every shard.
func (s *Store) Queued(ctx context.Context) (int, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, keyspace.Shards)
	for i := range cmds {
		cmds[i] = pipe.HLen(ctx, s.shardQueue(i))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("receipt: queued: %w", err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}

// Run writes the queued positions to Durable while this Store holds the
// writers' lease, and stands by while another does, until ctx ends; then,
// if it held the lease, it writes what is still queued, for at most a
// moment, and gives the lease up. One goroutine runs it: the Store's owner
// starts it, and stops it through ctx. A failed round is retried with a
// growing wait; the queue stays in Redis meanwhile. Without Durable it
// only returns when ctx ends.
func (s *Store) Run(ctx context.Context) {
	if s.durable == nil {
		<-ctx.Done()
		return
	}
	active := false
	wait := retryMin
	var due time.Time // of the next round; the lease is renewed meanwhile
	for next := time.Duration(0); sleep(ctx, next); {
		held, err := lease.Hold(ctx, s.rdb, s.leaseKey, s.holder, s.lease)
		switch {
		case ctx.Err() != nil:
			continue
		case err != nil:
			s.warn.Warn().Err(err).Msg("cannot reach Redis for the read-position writers' lease; trying again (logged at most 5 a second)")
			next = s.lease / 5
			continue
		case !held:
			if active {
				s.log.Info().Msg("another node writes read positions to MongoDB now; this one stands by")
			}
			active = false
			next = s.lease / 5
			continue
		}
		if !active {
			active, due = true, time.Time{}
			s.log.Info().Dur("lease", s.lease).Msg("read-position writer active (holds the lease)")
		}
		if left := time.Until(due); left > 0 {
			next = min(left, s.lease/3)
			continue
		}
		if err := s.writeAll(ctx, writeTimeout, pace); err != nil {
			if ctx.Err() == nil {
				s.warn.Warn().Err(err).Dur("retry", wait).
					Msg("cannot make read positions durable; they wait in Redis, retrying (logged at most 5 a second)")
			}
			due, wait = time.Now().Add(wait), min(2*wait, retryMax)
		} else {
			due, wait = time.Now().Add(gatherFor), retryMin
		}
		next = min(time.Until(due), s.lease/3)
	}
	if active {
		s.final()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// queued is a position read from its shard's queue, with the value it was
// read with: it leaves the queue only if it did not rise since.
type queued struct {
	Position
	shard int
	field string
	val   string
}

// writeAll writes what the queues hold now, maxWrite at a time, each
// write within timeout and the next after a pause of gap (none when 0),
// each under the lease, renewed before it. What rises meanwhile waits for
// the next round: positions that keep rising would otherwise keep a round
// going for ever. It returns early, with nil, if the lease is lost (its new holder
// writes the rest) or ctx ends during a pause.
func (s *Store) writeAll(ctx context.Context, timeout, gap time.Duration) error {
	round, err := s.readQueues(ctx)
	if err != nil {
		return err
	}
	for len(round) > 0 {
		// Each write is made under a lease just renewed, and ends before
		// it could lapse: while Redis keeps the lease, two writers do not
		// write at once (on the embedded store an update is a read and a
		// replace, so two at once can leave the lower position).
		held, err := lease.Hold(ctx, s.rdb, s.leaseKey, s.holder, s.lease)
		if err != nil {
			return fmt.Errorf("receipt: renew the writers' lease: %w", err)
		}
		if !held {
			return nil
		}
		until := time.Now().Add(s.lease - s.lease/5)
		batch := round[:min(maxWrite, len(round))]
		ps := make([]Position, 0, len(batch))
		for _, q := range batch {
			if q.Conv != "" {
				ps = append(ps, q.Position)
			}
		}
		deadline := time.Now().Add(timeout)
		if until.Before(deadline) {
			deadline = until
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		if len(ps) > 0 {
			err = s.durable.SaveReadPositions(wctx, ps)
		}
		if err == nil {
			s.settle(wctx, batch)
		}
		cancel()
		if err != nil {
			return err
		}
		round = round[len(batch):]
		if len(round) > 0 && !sleep(ctx, gap) {
			return nil
		}
	}
	return nil
}

// readQueues reads every shard's queue, in one pipeline.
func (s *Store) readQueues(ctx context.Context) ([]queued, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, keyspace.Shards)
	for i := range cmds {
		cmds[i] = pipe.HGetAll(ctx, s.shardQueue(i))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipt: read the write-behind queues: %w", err)
	}
	var out []queued
	for i, c := range cmds {
		for f, v := range c.Val() {
			conv, user, ok := parseField(f)
			seq, err := parseSeq(v)
			if !ok || err != nil {
				s.warn.Warn().Str("field", f).Str("value", v).Msg("a malformed entry in the read-position queue is dropped (logged at most 5 a second)")
				conv, user, seq = "", "", 0
			}
			out = append(out, queued{Position: Position{Conv: conv, User: user, Seq: seq}, shard: i, field: f, val: v})
		}
	}
	// A malformed entry (Conv "") is not written, and leaves the queue
	// with the batch it is in.
	return out, nil
}

// ackScript removes from a queue the positions just made durable, each
// only if it has not risen since it was read. KEYS: the queue. ARGV:
// field, value pairs.
var ackScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
`)

// healScript raises, in Redis, positions just made durable, each only
// where Redis holds a lower one: Redis that lost its data may have been
// filled from MongoDB before this write reached it. A position Redis does
// not hold stays missing, so that the next read asks MongoDB, which may
// hold a higher one written earlier. KEYS: the hash. ARGV: user, seq
// pairs.
var healScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
`)

// settle, for positions just made durable, raises them in Redis where it
// holds a lower one (healScript) and takes them off their queues
// (ackScript), in one pipeline. A failure changes nothing: Redis keeps
// what it has until the user's next read, and the queue is written again.
func (s *Store) settle(ctx context.Context, batch []queued) {
	byConv := map[string][]any{}
	byShard := map[int][]any{}
	for _, q := range batch {
		if q.Conv != "" {
			byConv[q.Conv] = append(byConv[q.Conv], q.User, q.Seq)
		}
		byShard[q.shard] = append(byShard[q.shard], q.field, q.val)
	}
	pipe := s.rdb.Pipeline()
	// Eval, not EvalSha: in a pipeline a missing script could not be
	// loaded and retried.
	for conv, args := range byConv {
		healScript.Eval(ctx, pipe, []string{s.Key(conv)}, args...)
	}
	for shard, args := range byShard {
		ackScript.Eval(ctx, pipe, []string{s.shardQueue(shard)}, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.warn.Warn().Err(err).Int("positions", len(batch)).
			Msg("cannot settle durable read positions in Redis; they are written again (logged at most 5 a second)")
	}
}

// final writes what is queued when Run stops, for at most finalWrite, and
// gives the lease up so that another writer takes over at once.
func (s *Store) final() {
	ctx, cancel := context.WithTimeout(context.Background(), finalWrite)
	defer cancel()
	if err := s.writeAll(ctx, finalWrite, 0); err != nil {
		s.log.Warn().Err(err).Msg("stopping with read positions not made durable; they wait in Redis for the next writer")
	}
	if err := lease.Release(ctx, s.rdb, s.leaseKey, s.holder); err != nil {
		s.log.Warn().Err(err).Msg("could not give the read-position writers' lease up; another takes over once it lapses")
	}
}
