package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/protocol"
)

// The Redis layout the writer consumes. Nodes append every stored message
// to the stream and keep it in the conversation's pending hash until the
// writer has made it durable in MongoDB.
const (
	// Group is the consumer group every Writer reads the stream with.
	Group = "writers"
	// StreamField is the one field of a stream entry; its value is the
	// message as JSON (protocol.Message).
	StreamField = "m"
)

// StreamKey is the key of the history stream under prefix.
func StreamKey(prefix string) string { return prefix + "history" }

// PendingKey is the key of conv's pending hash under prefix: field the
// decimal seq, value the message JSON, as in the stream.
func PendingKey(prefix, conv string) string { return prefix + "pending:" + conv }

// Writer defaults. A read returns what the stream holds, up to Batch: a
// large batch costs nothing when traffic is light and, under load, writes
// each block once for many messages (one chunk document per block and
// batch; see Store.UpsertMessages).
//
// After a batch that was not full the writer pauses for Linger before it
// reads again, so that under steady traffic each bulk write carries what
// came in over the pause instead of the few messages that arrived during
// the last write. The messages wait in Redis meanwhile, where every read
// finds them.
const (
	DefaultBatch     = 2000
	DefaultBlock     = time.Second
	DefaultClaimIdle = 30 * time.Second
	DefaultLinger    = 200 * time.Millisecond
)

// Retry delays after a failed MongoDB write or Redis command.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// writeTimeout bounds one bulk write, so a server that accepted the
// connection but stopped answering cannot hold a batch forever.
const writeTimeout = 30 * time.Second

// WriterConfig configures a Writer. Redis, Store and Consumer are required.
type WriterConfig struct {
	Redis     redis.UniversalClient
	Prefix    string        // Redis key prefix, as the nodes use it
	Store     *Store        // where messages go
	Consumer  string        // consumer name in the group: the node id, unique among writers
	Batch     int           // entries per read and per bulk write; default DefaultBatch
	Block     time.Duration // how long one read waits for new entries; default DefaultBlock
	ClaimIdle time.Duration // take over other consumers' entries idle this long; default DefaultClaimIdle
	Linger    time.Duration // pause after a batch that was not full; default DefaultLinger, negative: none
	Logger    zerolog.Logger
}

// Validate checks the required fields and fills in defaults.
func (c *WriterConfig) Validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("history: writer: no Redis client")
	case c.Store == nil:
		return errors.New("history: writer: no Store")
	case c.Consumer == "":
		return errors.New("history: writer: no consumer name")
	case c.Batch < 0 || c.Block < 0 || c.ClaimIdle < 0:
		return errors.New("history: writer: negative Batch, Block or ClaimIdle")
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = DefaultClaimIdle
	}
	switch {
	case c.Linger == 0:
		c.Linger = DefaultLinger
	case c.Linger < 0:
		c.Linger = 0
	}
	return nil
}

// WriterStats counts what a Writer did since it was made.
type WriterStats struct {
	Written   int64 // messages written to MongoDB (a redelivered one counts again)
	Conflicts int64 // messages dropped because their seq held another message
	Malformed int64 // stream entries that were not a message, dropped
	Batches   int64 // successful bulk writes
	Failures  int64 // failed bulk writes (each retried)
}

// Writer moves messages from the Redis history stream into MongoDB.
//
// Any number of nodes run one, each with its own consumer name, in the
// consumer group Group: every entry goes to one of them. A writer reads a
// batch, writes it in one bulk write and only then, in one pipeline,
// deletes the messages' pending-hash fields and acknowledges and deletes
// the stream entries. A crash in between leaves the entries pending; they
// are read again (by the same consumer on restart, or by another through
// XAUTOCLAIM once idle for ClaimIdle) and written again, which the
// idempotent write makes harmless.
//
// When MongoDB fails, the writer keeps the batch, acknowledges nothing,
// and retries it with backoff (200ms doubling to 5s), logging once when
// the outage starts and once when it ends. Redis errors, a Redis restart
// included, are retried alike; a consumer group that vanished is created
// again. Entries that are not a valid message are logged and dropped, so
// they can never block the stream.
type Writer struct {
	cfg     WriterConfig
	log     zerolog.Logger
	stream  string
	running atomic.Bool

	written, conflicts, malformed, batches, failures atomic.Int64
}

// NewWriter validates cfg and returns a Writer. It starts nothing.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Writer{
		cfg:    cfg,
		log:    cfg.Logger.With().Str("component", "history-writer").Str("consumer", cfg.Consumer).Logger(),
		stream: StreamKey(cfg.Prefix),
	}, nil
}

// Stats returns the writer's counters. It may be called at any time.
func (w *Writer) Stats() WriterStats {
	return WriterStats{
		Written:   w.written.Load(),
		Conflicts: w.conflicts.Load(),
		Malformed: w.malformed.Load(),
		Batches:   w.batches.Load(),
		Failures:  w.failures.Load(),
	}
}

// Backlog returns how many messages wait to be written: the stream's
// length, since written entries are deleted. It may be called at any time,
// from any node.
func (w *Writer) Backlog(ctx context.Context) (int64, error) {
	n, err := w.cfg.Redis.XLen(ctx, w.stream).Result()
	if err != nil {
		return 0, fmt.Errorf("history: backlog: %w", err)
	}
	return n, nil
}

// outage tracks one dependency's failures so an outage is logged once
// when it starts and once when it ends, not once per attempt.
type outage struct {
	what     string
	down     bool
	since    time.Time
	attempts int
	delay    time.Duration
}

// fail records a failed attempt and returns how long to wait before the
// next one.
func (o *outage) fail(log zerolog.Logger, err error, batch int) time.Duration {
	o.attempts++
	if !o.down {
		o.down, o.since = true, time.Now()
		ev := log.Error().Err(err)
		if batch > 0 {
			ev = ev.Int("batch", batch)
		}
		ev.Msgf("%s failed; history waits (retrying with backoff)", o.what)
	}
	if o.delay == 0 {
		o.delay = minBackoff
	} else {
		o.delay = min(2*o.delay, maxBackoff)
	}
	return o.delay
}

// ok records a success; if an outage was on, it logs its end.
func (o *outage) ok(log zerolog.Logger, written int) {
	if o.down {
		ev := log.Info().Dur("down", time.Since(o.since)).Int("attempts", o.attempts)
		if written >= 0 {
			ev = ev.Int("written", written)
		}
		ev.Msgf("%s is back", o.what)
	}
	o.down, o.attempts, o.delay = false, 0, 0
}

// Run consumes the stream until ctx is done, then returns nil. The caller
// owns the goroutine; run it once per Writer. After ctx is cancelled it
// returns within about Block (a read in progress finishes first), leaving
// an unwritten batch pending for the next writer.
func (w *Writer) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("history: writer: Run called twice")
	}
	defer w.running.Store(false)

	var (
		rd        = outage{what: "Redis"}
		db        = outage{what: "MongoDB write"}
		grouped   bool
		own       = true // read this consumer's pending entries before new ones
		lastClaim time.Time
		// Check for dead consumers' entries twice per ClaimIdle.
		claimEvery = w.cfg.ClaimIdle / 2
	)
	// After a Redis error: back off, recreate the group if it vanished,
	// and re-read this consumer's pending entries, which may include a
	// written batch whose acknowledgement failed.
	redisFailed := func(err error) {
		if ctx.Err() != nil {
			return
		}
		if isNoGroup(err) {
			grouped = false
		}
		own = true
		sleep(ctx, rd.fail(w.log, err, 0))
	}
	w.log.Info().Str("stream", w.stream).Int("batch", w.cfg.Batch).Msg("history writer started")
	defer w.log.Info().Msg("history writer stopped")

	for ctx.Err() == nil {
		if !grouped {
			err := w.cfg.Redis.XGroupCreateMkStream(ctx, w.stream, Group, "0").Err()
			if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
				redisFailed(err)
				continue
			}
			grouped = true
		}
		if time.Since(lastClaim) >= claimEvery {
			n, err := w.claim(ctx)
			if err != nil {
				redisFailed(err)
				continue
			}
			lastClaim = time.Now()
			if n > 0 {
				w.log.Info().Int("entries", n).Dur("idle", w.cfg.ClaimIdle).Msg("took over entries of a stalled writer")
				own = true
			}
		}

		args := &redis.XReadGroupArgs{
			Group: Group, Consumer: w.cfg.Consumer, Count: int64(w.cfg.Batch),
			Streams: []string{w.stream, ">"}, Block: w.cfg.Block,
		}
		if own {
			// Entries delivered to this consumer but never acknowledged.
			args.Streams[1], args.Block = "0", -1
		}
		res, err := w.cfg.Redis.XReadGroup(ctx, args).Result()
		if errors.Is(err, redis.Nil) { // BLOCK ran out: nothing new
			rd.ok(w.log, -1)
			continue
		}
		if err != nil {
			redisFailed(err)
			continue
		}
		rd.ok(w.log, -1)
		var entries []redis.XMessage
		for _, s := range res {
			entries = append(entries, s.Messages...)
		}
		if len(entries) == 0 {
			own = false
			continue
		}
		if err := w.write(ctx, entries, &db); err != nil {
			redisFailed(err)
			continue
		}
		if len(entries) < w.cfg.Batch && w.cfg.Linger > 0 && !own {
			sleep(ctx, w.cfg.Linger)
		}
	}
	return nil
}

// claim moves entries idle for ClaimIdle, from any consumer, to this one,
// and returns how many it moved; Run then reads them as its own.
func (w *Writer) claim(ctx context.Context) (int, error) {
	total := 0
	start := "0-0"
	// Bounded: the loop must get back to writing.
	for range 10 {
		ids, next, err := w.cfg.Redis.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{
			Stream: w.stream, Group: Group, Consumer: w.cfg.Consumer,
			MinIdle: w.cfg.ClaimIdle, Start: start, Count: int64(w.cfg.Batch),
		}).Result()
		if err != nil {
			return total, err
		}
		total += len(ids)
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	return total, nil
}

// write decodes entries, writes their messages to MongoDB, retrying until
// it succeeds or ctx is done, and then removes the entries and their
// pending fields. It returns only Redis errors (and nil when ctx ends
// first: the entries then stay pending).
func (w *Writer) write(ctx context.Context, entries []redis.XMessage, db *outage) error {
	ids := make([]string, 0, len(entries))
	msgs := make([]protocol.Message, 0, len(entries))
	for _, e := range entries {
		ids = append(ids, e.ID)
		m, err := decodeEntry(e)
		if err != nil {
			w.malformed.Add(1)
			w.log.Warn().Str("entry", e.ID).Err(err).Msg("dropping malformed history entry")
			continue
		}
		msgs = append(msgs, m)
	}

	for len(msgs) > 0 {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := w.cfg.Store.UpsertMessages(wctx, msgs)
		cancel()
		var ce *ConflictError
		if errors.As(err, &ce) {
			w.conflicts.Add(int64(len(ce.IDs)))
			w.log.Warn().Strs("ids", ce.IDs).Msg("messages conflict with stored ones at the same seq; the stored ones are kept")
			err = nil
		}
		if err == nil {
			db.ok(w.log, len(msgs))
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		w.failures.Add(1)
		if !sleep(ctx, db.fail(w.log, err, len(msgs))) {
			return nil
		}
	}

	_, err := w.cfg.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		byConv := map[string][]string{}
		for _, m := range msgs {
			byConv[m.Conv] = append(byConv[m.Conv], strconv.FormatInt(m.Seq, 10))
		}
		for conv, seqs := range byConv {
			p.HDel(ctx, PendingKey(w.cfg.Prefix, conv), seqs...)
		}
		p.XAck(ctx, w.stream, Group, ids...)
		p.XDel(ctx, w.stream, ids...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge %d entries: %w", len(ids), err)
	}
	if len(msgs) > 0 {
		w.batches.Add(1)
		w.written.Add(int64(len(msgs)))
		w.log.Debug().Int("messages", len(msgs)).Int("entries", len(ids)).Msg("history batch written")
	}
	return nil
}

// decodeEntry reads the message of one stream entry.
func decodeEntry(e redis.XMessage) (protocol.Message, error) {
	var m protocol.Message
	raw, ok := e.Values[StreamField].(string)
	if !ok {
		if len(e.Values) == 0 {
			return m, errors.New("entry was deleted from the stream")
		}
		return m, fmt.Errorf("no %q field", StreamField)
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return m, fmt.Errorf("bad message JSON: %w", err)
	}
	if m.ID == "" || m.Conv == "" || m.Seq <= 0 {
		return m, fmt.Errorf("message lacks id, conv or seq > 0")
	}
	return m, nil
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// sleep waits d or until ctx is done, and reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
