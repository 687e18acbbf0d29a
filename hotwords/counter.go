package hotwords

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/protocol"
)

// Counter counts words into the ranking and reads it back. It holds no
// state beyond its Redis client and is safe for concurrent use.
type Counter struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns a Counter over rdb whose keys start with prefix.
func New(rdb redis.UniversalClient, prefix string) *Counter {
	return &Counter{rdb: rdb, prefix: prefix}
}

// The ranking, its reset record and the leader epoch (the directory's)
// share the hash tag {cluster}: the reset script touches all three, in one
// Redis Cluster slot.
func (c *Counter) rankKey() string  { return c.prefix + "{cluster}:hotwords" }
func (c *Counter) resetKey() string { return c.prefix + "{cluster}:hotwords:reset" }
func (c *Counter) epochKey() string { return c.prefix + "{cluster}:epoch" }

// Add counts the Tokens of text, all of them or none, in one round trip.
// A text without tokens costs nothing.
func (c *Counter) Add(ctx context.Context, text string) error {
	tokens := Tokens(text)
	if len(tokens) == 0 {
		return nil
	}
	key := c.rankKey()
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range tokens {
			p.ZIncrBy(ctx, key, 1, t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hotwords: add: %w", err)
	}
	return nil
}

// AddCounts adds counts (token -> occurrences), gathered from many texts,
// all of them or none, in one round trip.
func (c *Counter) AddCounts(ctx context.Context, counts map[string]int64) error {
	if len(counts) == 0 {
		return nil
	}
	key := c.rankKey()
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for t, n := range counts {
			p.ZIncrBy(ctx, key, float64(n), t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hotwords: add: %w", err)
	}
	return nil
}

// topScript returns the n highest scored members with their scores, such
// that where the n-th place is tied, the members that make the cut are the
// first by member order. ZREVRANGE alone would keep the last ones.
// KEYS: ranking. ARGV: n (> 0).
var topScript = redis.NewScript(`
local n = tonumber(ARGV[1])
local top = redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
if #top < 2 * n then return top end
local last = top[#top]
local out = {}
for i = 1, #top, 2 do
  if tonumber(top[i + 1]) > tonumber(last) then
    out[#out + 1] = top[i]
    out[#out + 1] = top[i + 1]
  end
end
local ties = redis.call('ZRANGEBYSCORE', KEYS[1], last, last, 'WITHSCORES', 'LIMIT', 0, n - #out / 2)
for i = 1, #ties do out[#out + 1] = ties[i] end
return out
`)

// Top returns the n most counted words, most counted first; words counted
// equally come in byte order of the word, so the answer is deterministic.
// It returns fewer when fewer words were counted, and nothing for n <= 0.
func (c *Counter) Top(ctx context.Context, n int) ([]protocol.WordCount, error) {
	if n <= 0 {
		return nil, nil
	}
	flat, err := topScript.Run(ctx, c.rdb, []string{c.rankKey()}, n).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("hotwords: top: %w", err)
	}
	out := make([]protocol.WordCount, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		score, err := strconv.ParseFloat(flat[i+1], 64)
		if err != nil {
			return nil, fmt.Errorf("hotwords: top: score of %q: %w", flat[i], err)
		}
		out = append(out, protocol.WordCount{Word: flat[i], Count: int64(score)})
	}
	slices.SortFunc(out, func(a, b protocol.WordCount) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Word, b.Word)
	})
	return out, nil
}

// ResetInfo records a reset of the ranking.
type ResetInfo struct {
	Node  string    // id of the node that reset
	Epoch int64     // its leader epoch
	At    time.Time // when, by its clock (millisecond precision)
}

// resetRecord is ResetInfo as stored.
type resetRecord struct {
	Node  string `json:"node"`
	Epoch int64  `json:"epoch"`
	At    int64  `json:"at"` // unix ms
}

// resetScript clears the ranking and records the reset, unless a leader
// with a newer epoch has published. A missing epoch key does not fence.
// KEYS: ranking, reset record, leader epoch. ARGV: epoch, record JSON.
// Returns 1 if it reset, 0 if fenced.
var resetScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[3])
if cur then
  local e = tonumber(cur)
  if not e then return redis.error_reply('leader epoch ' .. KEYS[3] .. ' is not a number') end
  if e > tonumber(ARGV[1]) then return 0 end
end
redis.call('UNLINK', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
`)

// Reset clears the ranking and records that node, leader with epoch,
// did so at now; it is one atomic script. It does nothing and returns false
// if the leader epoch in Redis is newer than epoch: a deposed leader must
// not reset. Only the leader calls it.
func (c *Counter) Reset(ctx context.Context, node string, epoch int64, now time.Time) (bool, error) {
	rec, err := json.Marshal(resetRecord{Node: node, Epoch: epoch, At: now.UnixMilli()})
	if err != nil {
		return false, fmt.Errorf("hotwords: reset: %w", err)
	}
	keys := []string{c.rankKey(), c.resetKey(), c.epochKey()}
	done, err := resetScript.Run(ctx, c.rdb, keys, epoch, rec).Int()
	if err != nil {
		return false, fmt.Errorf("hotwords: reset: %w", err)
	}
	return done == 1, nil
}

// Begin starts the reset schedule at now, without clearing the ranking,
// unless a reset is already recorded. It reports whether it started it.
func (c *Counter) Begin(ctx context.Context, node string, epoch int64, now time.Time) (bool, error) {
	rec, err := json.Marshal(resetRecord{Node: node, Epoch: epoch, At: now.UnixMilli()})
	if err != nil {
		return false, fmt.Errorf("hotwords: begin: %w", err)
	}
	ok, err := c.rdb.SetNX(ctx, c.resetKey(), rec, 0).Result()
	if err != nil {
		return false, fmt.Errorf("hotwords: begin: %w", err)
	}
	return ok, nil
}

// LastReset returns the last recorded reset, or the zero ResetInfo if the
// ranking was never reset.
func (c *Counter) LastReset(ctx context.Context) (ResetInfo, error) {
	b, err := c.rdb.Get(ctx, c.resetKey()).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return ResetInfo{}, nil
	case err != nil:
		return ResetInfo{}, fmt.Errorf("hotwords: last reset: %w", err)
	}
	var rec resetRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return ResetInfo{}, fmt.Errorf("hotwords: corrupt reset record: %w", err)
	}
	return ResetInfo{Node: rec.Node, Epoch: rec.Epoch, At: time.UnixMilli(rec.At)}, nil
}

// Due reports whether a reset is due at now, for a ranking reset once per
// every, given last, the last reset (LastReset). Because the
// schedule is read from Redis, a new leader continues it where the old
// one left off rather than starting over:
//
//   - every <= 0: never due (resets are off);
//   - never reset (zero last.At): not due; the leader starts the schedule
//     with Begin, so a new deployment does not lose its first counts;
//   - otherwise due from last.At+every on. A last.At more than every
//     ahead of now is taken as the mark of a badly wrong clock and the reset
//     is due, so that such a record cannot stall the schedule.
func Due(last ResetInfo, every time.Duration, now time.Time) bool {
	switch {
	case every <= 0:
		return false
	case last.At.IsZero():
		return false
	case last.At.After(now.Add(every)):
		return true
	}
	return !now.Before(last.At.Add(every))
}
