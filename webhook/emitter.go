package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/internal/keyspace"
)

// DefaultBuffer is how many events an Emitter holds while they wait for
// Redis.
const DefaultBuffer = 4096

// emitBatch bounds the events of one pipeline.
const emitBatch = 256

// EmitterConfig configures an Emitter. Redis is required.
type EmitterConfig struct {
	Redis    redis.UniversalClient
	Prefix   string
	QueueCap int64 // the queue's bound, all shards together; default DefaultQueueCap
	Buffer   int   // events held while Redis is slow or down; default DefaultBuffer
	Logger   zerolog.Logger
}

// EmitterStats counts what an Emitter did.
type EmitterStats struct {
	Queued  int64 // events added to the queue (or found no endpoint's queue to go to)
	Dropped int64 // events lost: the buffer was full, or Redis failed at shutdown
}

// Emitter adds the events a node sees itself (logins and logouts) to the
// queue, off the request path: Emit only hands the event to a bounded
// buffer, and Run sends what it holds in pipelines. An event goes to the
// queue stream of its user's shard, and only if that stream exists (a
// dispatcher created it: some node has endpoints), so a cluster without
// webhooks stores nothing.
//
// While Redis is down Run keeps its batch and retries with backoff (logged
// once when it starts and once when it ends); what does not fit in the
// buffer meanwhile is dropped and counted, never waited for.
type Emitter struct {
	rdb     redis.UniversalClient
	prefix  string
	tags    *keyspace.Tags
	cap     string // per shard, as an XADD argument
	ch      chan queued
	log     zerolog.Logger
	running atomic.Bool

	queued, dropped atomic.Int64
}

type queued struct {
	key  string // the queue stream
	body string // the event's JSON
}

// NewEmitter validates cfg and returns an Emitter. It starts nothing.
func NewEmitter(cfg EmitterConfig) (*Emitter, error) {
	if cfg.Redis == nil {
		return nil, errors.New("webhook: emitter: no Redis client")
	}
	if cfg.QueueCap == 0 {
		cfg.QueueCap = DefaultQueueCap
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.QueueCap < keyspace.Shards || cfg.Buffer < 0 {
		return nil, errors.New("webhook: emitter: QueueCap below one per shard, or a negative Buffer")
	}
	return &Emitter{
		rdb: cfg.Redis, prefix: cfg.Prefix, tags: keyspace.NewTags(),
		cap: fmt.Sprint(cfg.QueueCap / keyspace.Shards),
		ch:  make(chan queued, cfg.Buffer),
		log: cfg.Logger.With().Str("component", "webhook-events").Logger(),
	}, nil
}

// Stats returns the emitter's counters. It may be called at any time.
func (e *Emitter) Stats() EmitterStats {
	return EmitterStats{Queued: e.queued.Load(), Dropped: e.dropped.Load()}
}

// Emit queues an event of type typ about user, which happened at ts (unix
// ms), with data (encoded as JSON). It never blocks: with the buffer full
// the event is dropped and counted. Safe from any goroutine.
func (e *Emitter) Emit(typ, user string, ts int64, data any) {
	d, err := json.Marshal(data)
	if err != nil {
		e.dropped.Add(1)
		return
	}
	body, err := json.Marshal(Event{ID: NewEventID(), Type: typ, TS: ts, Data: d})
	if err != nil {
		e.dropped.Add(1)
		return
	}
	q := queued{key: e.prefix + e.tags.Of("user:"+user) + StreamSuffix, body: string(body)}
	select {
	case e.ch <- q:
	default:
		e.dropped.Add(1)
	}
}

// emitScript appends an event to a queue stream that exists. KEYS: the
// stream. ARGV: its cap, the event's JSON.
var emitScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
  return 1
end
return 0`)

// Run sends queued events until ctx is done, then tries once more, for at
// most a second, to send what it holds. The caller owns the goroutine;
// run it once. Events emitted after Run returned wait for Flush.
func (e *Emitter) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("webhook: emitter: Run called twice")
	}
	defer e.running.Store(false)
	var (
		batch []queued
		down  = outage{what: "Redis", effect: "login and logout events wait"}
	)
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case q := <-e.ch:
				batch = append(batch, q)
			}
		}
		batch = e.take(batch)
		err := e.send(ctx, batch)
		if err == nil {
			down.ok(e.log)
			batch = batch[:0]
			continue
		}
		if ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if e.send(fctx, batch) != nil {
				e.dropped.Add(int64(len(batch)))
			}
			cancel()
			return nil
		}
		sleep(ctx, down.fail(e.log, err))
	}
}

// Flush sends, once, what was emitted since Run returned, within ctx. The
// owner calls it after Run returned, as the last thing before it closes
// Redis (so a node's last logouts are sent).
func (e *Emitter) Flush(ctx context.Context) {
	for {
		batch := e.take(nil)
		if len(batch) == 0 {
			return
		}
		if e.send(ctx, batch) != nil {
			e.dropped.Add(int64(len(batch)))
			return
		}
	}
}

// take adds to batch what the buffer holds, up to emitBatch in all.
func (e *Emitter) take(batch []queued) []queued {
	for len(batch) < emitBatch {
		select {
		case q := <-e.ch:
			batch = append(batch, q)
		default:
			return batch
		}
	}
	return batch
}

// send adds batch to the queue in one pipeline.
func (e *Emitter) send(ctx context.Context, batch []queued) error {
	_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, q := range batch {
			emitScript.Eval(ctx, p, []string{q.key}, e.cap, q.body)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("webhook: queue %d events: %w", len(batch), err)
	}
	e.queued.Add(int64(len(batch)))
	return nil
}
