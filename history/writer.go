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

	"chatcluster/internal/keyspace"
	"chatcluster/internal/lease"
	"chatcluster/protocol"
)

// The Redis layout the writer consumes. Nodes append every stored message
// to the history stream of its conversation's shard (package keyspace:
// keyspace.Shards streams, each in its own Redis Cluster slot) and keep it
// in the conversation's pending hash until the writer has made it durable
// in MongoDB.
const (
	// Group is the consumer group every Writer reads the stream with.
	Group = "writers"
	// StreamField is the one field of a stream entry; its value is the
	// message as JSON (protocol.Message).
	StreamField = "m"
)

// StreamKeys are the keys of the history streams under prefix, one per
// shard.
func StreamKeys(prefix string) []string {
	tags := keyspace.NewTags()
	out := make([]string, len(tags))
	for i, tag := range tags {
		out[i] = prefix + tag + "history"
	}
	return out
}

// StreamKey is the key of the history stream conv's messages go to.
func StreamKey(prefix, conv string) string { return StreamKeys(prefix)[keyspace.Shard(conv)] }

// PendingKey is the key of conv's pending hash under prefix: field the
// decimal seq, value the message JSON, as in the stream.
func PendingKey(prefix, conv string) string {
	return prefix + keyspace.NewTags().Of(conv) + "pending:" + conv
}

// LeaseKey is the key of the writers' lease under prefix: its value is the
// consumer name of the writer that holds it (see Writer).
func LeaseKey(prefix string) string { return prefix + "history:writer" }

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
	DefaultBatch     = 5000
	DefaultBlock     = 100 * time.Millisecond
	DefaultClaimIdle = 30 * time.Second
	DefaultLinger    = 200 * time.Millisecond
	DefaultLease     = 5 * time.Second
	// DefaultForwardCap is the default bound of each forward stream.
	DefaultForwardCap = 20000
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
	Batch     int           // entries per read of every stream and per bulk write; default DefaultBatch
	Block     time.Duration // pause before reading again after the streams were empty; default DefaultBlock
	ClaimIdle time.Duration // take over other consumers' entries idle this long; default DefaultClaimIdle
	Linger    time.Duration // pause after a batch that was not full; default DefaultLinger, negative: none
	Lease     time.Duration // how long the active writer's lease lasts unless renewed; default DefaultLease
	// Forward, if not empty, names a second stream in each shard,
	// prefix+tag+Forward, that every message written is appended to (field
	// StreamField, its JSON as the nodes wrote it) in the same script that
	// acknowledges it, if that stream exists: a consumer of what is
	// durable (the webhooks) creates the streams it wants fed. ForwardCap
	// bounds each one, approximately (XADD MAXLEN ~); default
	// DefaultForwardCap.
	Forward    string
	ForwardCap int64
	Logger     zerolog.Logger
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
	case c.Batch < 0 || c.Block < 0 || c.ClaimIdle < 0 || c.Lease < 0 || c.ForwardCap < 0:
		return errors.New("history: writer: negative Batch, Block, ClaimIdle, Lease or ForwardCap")
	}
	if c.ForwardCap == 0 {
		c.ForwardCap = DefaultForwardCap
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
	if c.Lease == 0 {
		c.Lease = DefaultLease
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
// consumer group Group, and one at a time is active: the one holding the
// lease, a Redis key (LeaseKey) holding its consumer name that it renews
// while it runs and deletes when it stops. The others stand by and try to
// take the lease about every Lease/5, so a writer that died is replaced
// within about Lease. One active writer gets every message in large
// batches, and what its Store remembers of the blocks it wrote stays
// accurate, so a batch costs two inserts; correctness does not rest on
// the lease: two writers active at once (a paused one that lost its lease
// without knowing yet) only collide on chunk ids, which the store resolves.
//
// The active writer reads a batch, writes it (Store.UpsertMessages) and
// only then, in one pipeline, deletes the messages' pending-hash fields
// and acknowledges and deletes the stream entries. A crash in between
// leaves the entries pending; they are read again (by the same consumer on
// restart, or by the next active writer through XAUTOCLAIM once idle for
// ClaimIdle) and written again, which the idempotent write makes harmless.
// With Forward set, each stream's acknowledgement is one script that
// first appends the messages written (not those the store refused) to
// the shard's forward stream, if that exists: what is durable is
// forwarded at least once, again after a redelivery.
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
	streams []string
	forward map[string]string // history stream -> its forward stream; nil without Forward
	tags    *keyspace.Tags
	lease   string
	running atomic.Bool
	active  atomic.Bool // holds the lease (as last renewed)

	written, conflicts, malformed, batches, failures atomic.Int64
}

// NewWriter validates cfg and returns a Writer. It starts nothing.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Writer{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "history-writer").Str("consumer", cfg.Consumer).Logger(),
		streams: StreamKeys(cfg.Prefix),
		tags:    keyspace.NewTags(),
		lease:   LeaseKey(cfg.Prefix),
	}
	if cfg.Forward != "" {
		w.forward = make(map[string]string, len(w.streams))
		for i, tag := range w.tags {
			w.forward[w.streams[i]] = cfg.Prefix + tag + cfg.Forward
		}
	}
	return w, nil
}

// Active reports whether the writer held the lease when it last checked.
// It may be called at any time.
func (w *Writer) Active() bool { return w.active.Load() }

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

// Backlog returns how many messages wait to be written: the streams'
// lengths, since written entries are deleted. It may be called at any
// time, from any node.
func (w *Writer) Backlog(ctx context.Context) (int64, error) {
	pipe := w.cfg.Redis.Pipeline()
	cmds := make([]*redis.IntCmd, len(w.streams))
	for i, st := range w.streams {
		cmds[i] = pipe.XLen(ctx, st)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("history: backlog: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
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
		renewed    time.Time // when the lease was last taken or renewed
		role       string    // "active" or "standby" as last logged
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
	w.log.Info().Int("streams", len(w.streams)).Int("batch", w.cfg.Batch).Msg("history writer started")
	defer w.log.Info().Msg("history writer stopped")
	defer w.release()

	for ctx.Err() == nil {
		if !grouped {
			if err := w.createGroups(ctx); err != nil {
				redisFailed(err)
				continue
			}
			grouped = true
		}
		if !w.active.Load() || time.Since(renewed) >= w.cfg.Lease/3 {
			held, err := w.holdLease(ctx)
			if err != nil {
				redisFailed(err)
				continue
			}
			if !held {
				if role != "standby" {
					role = "standby"
					w.log.Info().Msg("history writer standing by: another writer holds the lease")
				}
				sleep(ctx, w.cfg.Lease/5)
				continue
			}
			if role != "active" {
				role = "active"
				w.log.Info().Dur("lease", w.cfg.Lease).Msg("history writer active (holds the lease)")
				// Read what this consumer was given before, and look for
				// entries of writers that died, at once.
				own, lastClaim = true, time.Time{}
			}
			renewed = time.Now()
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

		entries, full, err := w.read(ctx, own)
		if err != nil {
			redisFailed(err)
			continue
		}
		rd.ok(w.log, -1)
		if len(entries) == 0 {
			if !own {
				sleep(ctx, w.cfg.Block)
			}
			own = false
			continue
		}
		if err := w.write(ctx, entries, &db); err != nil {
			redisFailed(err)
			continue
		}
		if !full && w.cfg.Linger > 0 && !own {
			sleep(ctx, w.cfg.Linger)
		}
	}
	return nil
}

// createGroups creates the consumer group of every stream that lacks it
// (and the stream with it).
func (w *Writer) createGroups(ctx context.Context) error {
	pipe := w.cfg.Redis.Pipeline()
	cmds := make([]*redis.StatusCmd, len(w.streams))
	for i, st := range w.streams {
		cmds[i] = pipe.XGroupCreateMkStream(ctx, st, Group, "0")
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range cmds {
		if err := c.Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return err
		}
	}
	return nil
}

// perStream is how many entries one read takes from each stream: a read
// of them all is about a Batch.
func (w *Writer) perStream() int64 { return int64(max(1, w.cfg.Batch/len(w.streams))) }

// read reads every stream once, without blocking: this consumer's
// delivered but unacknowledged entries when own, else new ones. full says
// some stream had more than one read takes.
func (w *Writer) read(ctx context.Context, own bool) (entries []entry, full bool, err error) {
	id := ">"
	if own {
		id = "0"
	}
	per := w.perStream()
	pipe := w.cfg.Redis.Pipeline()
	cmds := make([]*redis.XStreamSliceCmd, len(w.streams))
	for i, st := range w.streams {
		cmds[i] = pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: Group, Consumer: w.cfg.Consumer, Count: per, Streams: []string{st, id}, Block: -1,
		})
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range cmds {
		res, err := c.Result()
		if errors.Is(err, redis.Nil) { // nothing in this stream
			continue
		}
		if err != nil {
			return nil, false, err
		}
		for _, s := range res {
			for _, m := range s.Messages {
				entries = append(entries, entry{stream: s.Stream, XMessage: m})
			}
			full = full || int64(len(s.Messages)) >= per
		}
	}
	return entries, full, nil
}

// entry is a stream entry and the stream it came from, where it is
// acknowledged.
type entry struct {
	stream string
	redis.XMessage
}

// claim moves entries idle for ClaimIdle, from any consumer, to this one,
// and returns how many it moved; Run then reads them as its own.
func (w *Writer) claim(ctx context.Context) (int, error) {
	total := 0
	for _, st := range w.streams {
		start := "0-0"
		// Bounded: the loop must get back to writing.
		for range 10 {
			ids, next, err := w.cfg.Redis.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{
				Stream: st, Group: Group, Consumer: w.cfg.Consumer,
				MinIdle: w.cfg.ClaimIdle, Start: start, Count: w.perStream(),
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
	}
	return total, nil
}

// write decodes entries, writes their messages to MongoDB, retrying until
// it succeeds or ctx is done, and then removes the entries and their
// pending fields. It returns only Redis errors (and nil when ctx ends
// first: the entries then stay pending).
func (w *Writer) write(ctx context.Context, entries []entry, db *outage) error {
	ids := map[string][]string{} // stream -> entry ids
	items := make([]item, 0, len(entries))
	from := make([]string, 0, len(entries)) // the stream of each item
	var conflicted map[string]bool          // ids of messages the store refused
	for _, e := range entries {
		ids[e.stream] = append(ids[e.stream], e.ID)
		it, err := decodeEntry(e.XMessage)
		if err != nil {
			w.malformed.Add(1)
			w.log.Warn().Str("entry", e.ID).Err(err).Msg("dropping malformed history entry")
			continue
		}
		items = append(items, it)
		from = append(from, e.stream)
	}

	for attempt := 0; len(items) > 0; attempt++ {
		if attempt > 0 && w.active.Load() {
			// A long outage must not let the lease lapse while this
			// writer still holds the batch; losing it is harmless.
			if _, err := w.holdLease(ctx); err != nil && ctx.Err() == nil {
				w.log.Debug().Err(err).Msg("renewing the writer lease failed")
			}
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := w.cfg.Store.upsert(wctx, items)
		cancel()
		var ce *ConflictError
		if errors.As(err, &ce) {
			w.conflicts.Add(int64(len(ce.IDs)))
			w.log.Warn().Strs("ids", ce.IDs).Msg("messages conflict with stored ones at the same seq; the stored ones are kept")
			conflicted = make(map[string]bool, len(ce.IDs))
			for _, id := range ce.IDs {
				conflicted[id] = true
			}
			err = nil
		}
		if err == nil {
			db.ok(w.log, len(items))
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		w.failures.Add(1)
		if !sleep(ctx, db.fail(w.log, err, len(items))) {
			return nil
		}
	}

	_, err := w.cfg.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		byConv := map[string][]string{}
		for _, it := range items {
			byConv[it.m.Conv] = append(byConv[it.m.Conv], strconv.FormatInt(it.m.Seq, 10))
		}
		for conv, seqs := range byConv {
			p.HDel(ctx, w.cfg.Prefix+w.tags.Of(conv)+"pending:"+conv, seqs...)
		}
		if w.forward != nil {
			w.forwardAck(ctx, p, ids, items, from, conflicted)
			return nil
		}
		for st, ids := range ids {
			p.XAck(ctx, st, Group, ids...)
			p.XDel(ctx, st, ids...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge %d entries: %w", len(entries), err)
	}
	if len(items) > 0 {
		w.batches.Add(1)
		w.written.Add(int64(len(items)))
		w.log.Debug().Int("messages", len(items)).Int("entries", len(entries)).Msg("history batch written")
	}
	return nil
}

// forwardScript appends messages to a forward stream, if it exists, and
// then acknowledges and deletes their history entries, in one step: an
// entry is never gone without its message forwarded. KEYS: the history
// stream, the forward stream. ARGV: group, cap of the forward stream,
// number of entry ids n, the n ids, then the messages' JSON.
var forwardScript = redis.NewScript(`
local n = tonumber(ARGV[3])
if #ARGV > 3 + n and redis.call('EXISTS', KEYS[2]) == 1 then
  for i = 4 + n, #ARGV do
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[i])
  end
end
for i = 4, 3 + n, 500 do
  local ids = {}
  for j = i, math.min(i + 499, 3 + n) do ids[#ids + 1] = ARGV[j] end
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return n`)

// forwardAck queues on p, for each stream, the script that forwards the
// messages read from it (not those the store refused) and acknowledges
// and deletes its entries. Eval, not EvalSha: a pipeline cannot load a
// script Redis lacks and send the call again.
func (w *Writer) forwardAck(ctx context.Context, p redis.Pipeliner, ids map[string][]string, items []item, from []string, conflicted map[string]bool) {
	msgs := map[string][]any{}
	for i, it := range items {
		if !conflicted[it.m.ID] {
			msgs[from[i]] = append(msgs[from[i]], it.json)
		}
	}
	for st, ids := range ids {
		args := make([]any, 0, 3+len(ids)+len(msgs[st]))
		args = append(args, Group, w.cfg.ForwardCap, len(ids))
		for _, id := range ids {
			args = append(args, id)
		}
		args = append(args, msgs[st]...)
		forwardScript.Eval(ctx, p, []string{st, w.forward[st]}, args...)
	}
}

// holdLease takes or renews the lease and reports whether this writer
// holds it.
func (w *Writer) holdLease(ctx context.Context) (bool, error) {
	held, err := lease.Hold(ctx, w.cfg.Redis, w.lease, w.cfg.Consumer, w.cfg.Lease)
	if err != nil {
		return w.active.Load(), fmt.Errorf("writer lease: %w", err)
	}
	w.active.Store(held)
	return held, nil
}

// release gives the lease up, if this writer holds it, so that another
// takes over at once.
func (w *Writer) release() {
	if !w.active.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := lease.Release(ctx, w.cfg.Redis, w.lease, w.cfg.Consumer); err != nil {
		w.log.Warn().Err(err).Msg("could not give the writer lease up; another writer takes over once it lapses")
	}
}

// decodeEntry reads the message of one stream entry, keeping its JSON.
func decodeEntry(e redis.XMessage) (item, error) {
	var m protocol.Message
	raw, ok := e.Values[StreamField].(string)
	if !ok {
		if len(e.Values) == 0 {
			return item{}, errors.New("entry was deleted from the stream")
		}
		return item{}, fmt.Errorf("no %q field", StreamField)
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return item{}, fmt.Errorf("bad message JSON: %w", err)
	}
	if err := checkMessage(m); err != nil {
		return item{}, errors.New("message lacks id, conv or seq > 0")
	}
	return newItem(m, raw)
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
