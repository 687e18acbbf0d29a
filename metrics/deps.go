package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/event"
)

// Deps times the calls a process makes to Redis, MongoDB and (on a node)
// ZooKeeper. Its methods may be called from any goroutine.
type Deps struct {
	redis, mongo, zk *timer // zk is nil when the process does not use ZooKeeper
}

// newDeps registers the Redis and MongoDB timers, and the ZooKeeper timer
// when withZK.
func newDeps(reg prometheus.Registerer, withZK bool) *Deps {
	d := &Deps{
		redis: newTimer(reg, "redis_command", "cmd", "Redis commands (a pipeline counts once, as cmd=\"pipeline\")"),
		mongo: newTimer(reg, "mongo_command", "cmd", "MongoDB commands"),
	}
	if withZK {
		d.zk = newTimer(reg, "zookeeper_request", "op", "ZooKeeper requests")
	}
	return d
}

// RedisHook returns a go-redis hook that times every command and pipeline.
// Add it with AddHook before the client is used. A redis.Nil reply (no such
// key) is an answer, not an error.
func (d *Deps) RedisHook() redis.Hook { return redisHook{d.redis} }

type redisHook struct{ t *timer }

func (redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.t.observe(cmd.Name(), time.Since(start), redisFailed(err))
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.t.observe("pipeline", time.Since(start), redisFailed(err))
		return err
	}
}

func redisFailed(err error) bool { return err != nil && !errors.Is(err, redis.Nil) }

// MongoMonitor returns a command monitor for the MongoDB driver that times
// every command by its name (find, insert, update, ...). It leaves Started
// unset, so the driver does not copy the commands for it.
func (d *Deps) MongoMonitor() *event.CommandMonitor {
	t := d.mongo
	return &event.CommandMonitor{
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
			t.observe(e.CommandName, e.Duration, false)
		},
		Failed: func(_ context.Context, e *event.CommandFailedEvent) {
			t.observe(e.CommandName, e.Duration, true)
		},
	}
}

// ObserveZK records one ZooKeeper request: its operation (create, get,
// children, ...), how long it took and whether it failed. It has the shape
// of cluster.Config.Observe. It does nothing on a Deps without ZooKeeper.
func (d *Deps) ObserveZK(op string, took time.Duration, err error) {
	if d.zk != nil {
		d.zk.observe(op, took, err != nil)
	}
}
