package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/session"
)

// redisCheckEvery is how often a node checks that Redis still holds its
// data.
const redisCheckEvery = 500 * time.Millisecond

// bootKey is written by the node when it starts and after every
// recovery. Redis without it has lost its data: it was restarted empty or
// flushed.
func (s *Server) bootKey() string { return s.cfg.RedisPrefix + "node-boot:" + s.cfg.ID }

func (s *Server) markBoot(ctx context.Context) error {
	return s.rdb.Set(ctx, s.bootKey(), s.started.UnixMilli(), 0).Err()
}

// watchRedis notices when Redis loses its data and puts back what this
// node owns there: the sessions of its clients and, on the leader, the
// rooms in their members' conversation lists. Counters are re-seeded from
// MongoDB on first use (journal.seed), the leader republishes the node
// list within directory.PublishEvery, and what only clients still hold
// comes back through rebuild.
func (s *Server) watchRedis() {
	t := time.NewTicker(redisCheckEvery)
	defer t.Stop()
	down := false
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		n, err := s.rdb.Exists(ctx, s.bootKey()).Result()
		switch {
		case err != nil:
			if !down && s.ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("Redis unreachable; chat is refused until it answers")
				down = true
			}
		case n == 0:
			if down {
				s.log.Info().Msg("Redis answers again")
				down = false
			}
			if err := s.restoreRedis(ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("cannot restore this node's data in Redis yet; retrying")
			}
		case down:
			s.log.Info().Msg("Redis answers again, with its data")
			down = false
		}
		cancel()
	}
}

// restoreRedis re-registers every local session and, on the leader, the
// rooms' conversation lists, then marks Redis as holding this node's data.
func (s *Server) restoreRedis(ctx context.Context) error {
	s.log.Warn().Msg("Redis has lost its data (restarted empty or flushed); restoring this node's sessions")
	var (
		n   int
		err error
	)
	s.local.Each(func(c *client) bool {
		var ver int64
		if ver, err = s.sessions.NextVersion(ctx); err != nil {
			return false
		}
		rec := session.Record{User: c.User(), Node: s.cfg.ID, Conn: c.id, LoginTime: time.Now().UnixMilli(), Version: ver}
		if _, _, err = s.sessions.Put(ctx, rec); err != nil {
			return false
		}
		n++
		return true
	})
	if err != nil {
		return fmt.Errorf("re-registering sessions: %w", err)
	}
	if lead := s.routes.leading(); lead != nil {
		if err := lead.rooms.restoreConvs(ctx); err != nil {
			return fmt.Errorf("restoring room members: %w", err)
		}
	}
	if err := s.markBoot(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	s.log.Info().Int("sessions", n).Msg("sessions restored in Redis")
	return nil
}
