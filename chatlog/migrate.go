package chatlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/redisconn"
	"chatcluster/protocol"
)

// LayoutVersion is the Redis key layout this build reads and writes: 2 is
// the layout for Redis Cluster (hash-tagged shards, package keyspace).
// Layout 1, of the builds before, had one history stream, untagged
// conversation keys and one marker.
const LayoutVersion = "2"

// LayoutKey holds the layout version the keys under the prefix are in.
func (l *Log) LayoutKey() string { return l.prefix + "layout" }

func (l *Log) migrateLockKey() string { return l.prefix + "layout:migrating" }

// Migration counts what MigrateLayout moved.
type Migration struct {
	Keys     int // conversation keys (counter, recent list, pending hash) and others moved
	Entries  int // history stream entries moved to their shards' streams
	Idem     int // remembered clientMsgIds moved
	Obsolete int // keys of the old layout deleted without a successor
}

// Moved reports whether anything was moved.
func (m Migration) Moved() bool { return m.Keys+m.Entries+m.Idem+m.Obsolete > 0 }

// renamed are keys outside the journal that layout 2 put under the
// {cluster} hash tag (package directory and hotwords), old suffix -> new.
var renamed = [][2]string{
	{"cluster", "{cluster}"},
	{"cluster:epoch", "{cluster}:epoch"},
	{"hotwords", "{cluster}:hotwords"},
	{"hotwords:reset", "{cluster}:hotwords:reset"},
}

// MigrateLayout moves keys of layout 1 under the prefix into layout 2,
// once: the first node of a new build that starts does it, holding a lock,
// while the others wait for the layout key; later starts only read that
// key. It must run before the node serves, and no node of an older build
// may run meanwhile (they write layout 1). Every step can run again after
// a crash: a key already moved is not moved twice, a stream entry copied
// twice is written to MongoDB once. It looks at every master of a Redis
// Cluster, though layout 1 only ever ran on one server.
func (l *Log) MigrateLayout(ctx context.Context, progress func(string)) (Migration, error) {
	var mg Migration
	for {
		v, err := l.rdb.Get(ctx, l.LayoutKey()).Result()
		if err == nil && v == LayoutVersion {
			return mg, nil
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return mg, fmt.Errorf("chatlog: layout: %w", err)
		}
		ok, err := l.rdb.SetNX(ctx, l.migrateLockKey(), "1", 2*time.Minute).Result()
		if err != nil {
			return mg, fmt.Errorf("chatlog: layout: %w", err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return mg, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer l.rdb.Del(context.WithoutCancel(ctx), l.migrateLockKey())

	if err := l.migrate(ctx, &mg, progress); err != nil {
		return mg, fmt.Errorf("chatlog: migrating the Redis layout: %w", err)
	}
	if err := l.rdb.Set(ctx, l.LayoutKey(), LayoutVersion, 0).Err(); err != nil {
		return mg, fmt.Errorf("chatlog: layout: %w", err)
	}
	return mg, nil
}

func (l *Log) migrate(ctx context.Context, mg *Migration, progress func(string)) error {
	p := l.prefix
	// The marker first: with it a counter not yet moved would look like
	// a new conversation's, so the shards are marked only if the old
	// layout was marked, and only after the counters moved.
	marked, err := l.rdb.Exists(ctx, p+"seqinit").Result()
	if err != nil {
		return err
	}
	for _, kind := range []string{"seq:", "recent:", "pending:"} {
		keys, err := l.scanAll(ctx, p+kind+"*")
		if err != nil {
			return err
		}
		for _, k := range keys {
			conv := strings.TrimPrefix(k, p+kind)
			var to string
			switch kind {
			case "seq:":
				to = l.SeqKey(conv)
			case "recent:":
				to = l.RecentKey(conv)
			default:
				to = l.PendingKey(conv)
			}
			if err := moveKey(ctx, l.rdb, k, to); err != nil {
				return err
			}
			mg.Keys++
		}
		if len(keys) > 0 && progress != nil {
			progress(fmt.Sprintf("moved %d %s keys", len(keys), strings.TrimSuffix(kind, ":")))
		}
	}
	for _, r := range renamed {
		n, err := l.rdb.Exists(ctx, p+r[0]).Result()
		if err != nil {
			return err
		}
		if n == 1 {
			if err := moveKey(ctx, l.rdb, p+r[0], p+r[1]); err != nil {
				return err
			}
			mg.Keys++
		}
	}
	if err := l.migrateStream(ctx, mg, progress); err != nil {
		return err
	}
	if err := l.migrateIdem(ctx, mg); err != nil {
		return err
	}
	floors, err := l.rdb.HGetAll(ctx, p+"reseeded").Result()
	if err != nil {
		return err
	}
	for conv, floor := range floors {
		if err := l.rdb.HSetNX(ctx, l.ReseededKey(conv), conv, floor).Err(); err != nil {
			return err
		}
	}
	if marked == 1 {
		if err := l.MarkFresh(ctx); err != nil {
			return err
		}
	}
	boots, err := l.scanAll(ctx, p+"node-boot:*")
	if err != nil {
		return err
	}
	for _, k := range append(boots, p+"reseeded", p+"seqinit") {
		n, err := l.rdb.Del(ctx, k).Result()
		if err != nil {
			return err
		}
		mg.Obsolete += int(n)
	}
	return nil
}

// migrateStream copies the entries of the one old history stream, none of
// which MongoDB may have yet, to their conversations' shard streams, then
// deletes it (its consumer group with it).
func (l *Log) migrateStream(ctx context.Context, mg *Migration, progress func(string)) error {
	old := l.prefix + "history"
	start := "-"
	for {
		entries, err := l.rdb.XRangeN(ctx, old, start, "+", 1000).Result()
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			break
		}
		pipe := l.rdb.Pipeline()
		for _, e := range entries {
			raw, _ := e.Values["m"].(string)
			conv := convOf(raw)
			if conv == "" {
				continue // not a message: the writer would drop it too
			}
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: l.StreamKey(conv), Values: []any{"m", raw}})
			mg.Entries++
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		if progress != nil {
			progress(fmt.Sprintf("moved %d history stream entries", mg.Entries))
		}
		start = "(" + entries[len(entries)-1].ID
	}
	return l.rdb.Del(ctx, old).Err()
}

// convOf reads the conversation of a stored message's JSON.
func convOf(raw string) string {
	m, err := parseStored(raw)
	if err != nil {
		return ""
	}
	return m.Conv
}

// migrateIdem splits each sender's remembered clientMsgIds, one hash and
// one order list per sender in layout 1, into one per shard, and turns
// the per-message keys of the builds before that into entries.
func (l *Log) migrateIdem(ctx context.Context, mg *Migration) error {
	p := l.prefix
	keys, err := l.scanAll(ctx, p+"idem:*")
	if err != nil {
		return err
	}
	for _, k := range keys {
		rest := strings.TrimPrefix(k, p+"idem:")
		typ, err := l.rdb.Type(ctx, k).Result()
		if err != nil {
			return err
		}
		switch typ {
		case "hash":
			user := rest
			ids, err := l.rdb.HGetAll(ctx, k).Result()
			if err != nil {
				return err
			}
			order, err := l.rdb.LRange(ctx, p+"idemq:"+user, 0, -1).Result()
			if err != nil {
				return err
			}
			pipe := l.rdb.Pipeline()
			for _, id := range order {
				rec, ok := ids[id]
				if !ok {
					continue
				}
				m, err := parseIdem(rec)
				if err != nil {
					continue
				}
				pipe.HSet(ctx, l.IdemKey(user, m.Conv), id, rec)
				pipe.RPush(ctx, l.IdemOrderKey(user, m.Conv), id)
				pipe.Expire(ctx, l.IdemKey(user, m.Conv), IdempotencyTTL)
				pipe.Expire(ctx, l.IdemOrderKey(user, m.Conv), IdempotencyTTL)
				mg.Idem++
			}
			pipe.Del(ctx, k)
			pipe.Del(ctx, p+"idemq:"+user)
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		case "string":
			// idem:<user>:<clientMsgId>, holding the whole first message.
			i := strings.LastIndexByte(rest, ':')
			raw, err := l.rdb.Get(ctx, k).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if m, perr := parseStored(raw); i > 0 && err == nil && perr == nil && m.Conv != "" {
				user, id := rest[:i], rest[i+1:]
				rec := fmt.Sprintf("%d %d %s %s", m.Seq, m.TS, m.ID, m.Conv)
				if err := l.rdb.HSetNX(ctx, l.IdemKey(user, m.Conv), id, rec).Err(); err != nil {
					return err
				}
				l.rdb.Expire(ctx, l.IdemKey(user, m.Conv), IdempotencyTTL)
				mg.Idem++
			}
			if err := l.rdb.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// scanAll returns the keys matching pattern on every master.
func (l *Log) scanAll(ctx context.Context, pattern string) ([]string, error) {
	var (
		mu  sync.Mutex
		out []string
	)
	err := redisconn.EachMaster(ctx, l.rdb, func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	})
	return out, err
}

// moveKey moves from to to, whatever its type and wherever the two keys'
// slots are (DUMP, RESTORE, DEL). A to that exists already, from an
// earlier run that stopped before its DEL, is kept.
func moveKey(ctx context.Context, rdb redis.UniversalClient, from, to string) error {
	dump, err := rdb.Dump(ctx, from).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dump %s: %w", from, err)
	}
	ttl, err := rdb.PTTL(ctx, from).Result()
	if err != nil {
		return fmt.Errorf("ttl of %s: %w", from, err)
	}
	if ttl < 0 {
		ttl = 0
	}
	if err := rdb.Restore(ctx, to, ttl, dump).Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYKEY") {
		return fmt.Errorf("restore %s: %w", to, err)
	}
	return rdb.Del(ctx, from).Err()
}

// parseStored decodes a message as stored.
func parseStored(raw string) (protocol.Message, error) {
	var m protocol.Message
	err := json.Unmarshal([]byte(raw), &m)
	return m, err
}
