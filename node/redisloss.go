package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/keyspace"
	"chatcluster/session"
)

// redisCheckEvery is how often a node checks that Redis still holds its
// data.
const redisCheckEvery = 500 * time.Millisecond

// bootKeys hold a value this node changes on every check. Redis without
// one, or with another value than the node last wrote, has lost data: it
// was restarted empty, flushed, or came back from an older snapshot.
// There is one per shard of the journal (package keyspace), under its hash
// tag, so that on a Redis Cluster every master that holds a part of the
// journal holds one, and a loss on any of them is seen.
func (s *Server) bootKeys() []string {
	tags := keyspace.NewTags()
	out := make([]string, len(tags))
	for i, tag := range tags {
		out[i] = s.cfg.RedisPrefix + tag + "node-boot:" + s.cfg.ID
	}
	return out
}

// Kinds of data loss, in increasing order of what recovery must do.
type loss int

const (
	none     loss = iota
	emptied       // restarted empty or flushed
	rollback      // came back with older data
)

func lossOf(rolledBack bool) loss {
	if rolledBack {
		return rollback
	}
	return emptied
}

// recoveryKey makes one node at a time forget the counters after a loss.
func (s *Server) recoveryKey() string { return s.cfg.RedisPrefix + "recovery" }

func (s *Server) markBoot(ctx context.Context) error {
	s.beat = strconv.FormatInt(s.started.UnixNano(), 36) + ".0"
	pipe := s.rdb.Pipeline()
	for _, k := range s.bootKeys() {
		pipe.Set(ctx, k, s.beat, 0)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// beatAll writes next into every boot key and reads what each held: gone
// says one was missing, rolledBack that one held what this run did not
// write since its last confirmed beat.
func (s *Server) beatAll(ctx context.Context, keys []string, next string) (gone, rolledBack bool, err error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.SetArgs(ctx, k, next, redis.SetArgs{Get: true})
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range cmds {
		old, e := c.Result()
		switch {
		case errors.Is(e, redis.Nil):
			gone = true
		case e != nil:
			if err == nil {
				err = e
			}
		case !s.wroteSince(old):
			rolledBack = true
		}
	}
	return gone, rolledBack, err
}

// watchRedis notices when Redis loses data and puts back what this node
// owns there: the sessions of its clients and, on the leader, the rooms in
// their members' conversation lists. Counters are forgotten, to be seeded
// again above what MongoDB and Redis hold on first use (journal.seed); the
// leader republishes the node list within directory.PublishEvery; what
// only clients still hold comes back through rebuild.
func (s *Server) watchRedis() {
	t := time.NewTicker(redisCheckEvery)
	defer t.Stop()
	keys := s.bootKeys()
	down := false
	retry := none // a restore that failed, to do again
	for n := 1; ; n++ {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		next := strconv.FormatInt(s.started.UnixNano(), 36) + "." + strconv.Itoa(n)
		gone, rolledBack, err := s.beatAll(ctx, keys, next)
		switch {
		case err != nil:
			// The write may or may not have happened: any value this run
			// wrote from the last known one on is fine next time.
			if !down && s.ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("Redis unreachable; chat is refused until it answers")
				down = true
			}
			cancel()
			continue
		case down:
			s.log.Info().Msg("Redis answers again")
			down = false
		}
		s.beat = next
		if gone || rolledBack || retry != none {
			kind := max(retry, lossOf(rolledBack))
			retry = none
			if err := s.restoreRedis(ctx, kind == rollback); err != nil && s.ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("cannot restore this node's data in Redis yet; retrying")
				retry = kind
			}
		}
		cancel()
	}
}

// wroteSince reports whether v is a value of a boot key this run wrote at or
// after beat, the last write Redis confirmed: one whose write failed may
// still have been applied, however many failed in a row. Anything else
// (older, another run's) means Redis came back with older data.
func (s *Server) wroteSince(v string) bool {
	run, n, ok := strings.Cut(v, ".")
	brun, bn, _ := strings.Cut(s.beat, ".")
	if !ok || run != brun {
		return false
	}
	got, err1 := strconv.Atoi(n)
	last, err2 := strconv.Atoi(bn)
	return err1 == nil && err2 == nil && got >= last
}

// restoreRedis re-registers every local session and, on the leader, the
// rooms' conversation lists. After a rollback it also forgets the counters
// (one node per loss): they may be behind what was given out since. After
// an empty restart there are none to forget, and those seeded since are
// right.
func (s *Server) restoreRedis(ctx context.Context, rolledBack bool) error {
	s.log.Warn().Bool("rolledBack", rolledBack).Msg("Redis has lost data; restoring this node's part")
	if rolledBack {
		if err := s.forgetCounters(ctx); err != nil {
			return err
		}
	}
	var (
		n   int
		err error
	)
	s.local.Each(func(c *client) bool {
		var ver int64
		if ver, err = s.sessions.NextVersion(ctx); err != nil {
			return false
		}
		rec := session.Record{User: c.User(), Node: s.cfg.ID, Conn: c.id, LoginTime: time.Now().UnixMilli(), Version: ver, Run: s.started.UnixNano(), Device: c.device}
		if s.devices != nil {
			_, err = s.devices.Put(ctx, rec, s.liveNodes())
		} else {
			_, _, err = s.sessions.Put(ctx, rec)
		}
		if err != nil {
			return false
		}
		n++
		return true
	})
	if err != nil {
		return fmt.Errorf("re-registering sessions: %w", err)
	}
	if lead := s.routes.leading(); lead != nil {
		if err := lead.RestoreConvs(ctx); err != nil {
			return fmt.Errorf("restoring room members: %w", err)
		}
	}
	s.log.Info().Int("sessions", n).Msg("sessions restored in Redis")
	return nil
}

// forgetCounters makes one node per loss forget every counter.
func (s *Server) forgetCounters(ctx context.Context) error {
	ok, err := s.rdb.SetNX(ctx, s.recoveryKey(), s.cfg.ID, 10*time.Second).Result()
	if err != nil || !ok {
		return err
	}
	n, err := s.chatlog.ForgetCounters(ctx)
	if err != nil {
		// Let the retry (this node's or another's) do it all again.
		s.rdb.Del(context.WithoutCancel(ctx), s.recoveryKey())
		return err
	}
	s.log.Info().Int("counters", n).Msg("conversation counters will be seeded again from what is stored")
	return nil
}
