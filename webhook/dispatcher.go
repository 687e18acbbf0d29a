package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/internal/lease"
)

// DispatcherConfig configures a Dispatcher. Redis and Consumer are
// required, and Config must name at least one endpoint.
type DispatcherConfig struct {
	Config
	Redis    redis.UniversalClient
	Prefix   string       // Redis key prefix, as the nodes use it
	Consumer string       // consumer name in the groups: the node id, unique among dispatchers
	Client   *http.Client // nil: one of its own (no redirects followed)
	Logger   zerolog.Logger
}

// EndpointStats counts what the dispatcher did for one endpoint since it
// was made.
type EndpointStats struct {
	Name      string
	Up        bool  // the last attempt succeeded (true until one fails)
	Delivered int64 // events the endpoint took (answered 2xx)
	Failed    int64 // attempts that failed (each is retried or dead-lettered)
	Retried   int64 // attempts after an event's first
	Dead      int64 // events dead-lettered
	Dropped   int64 // events the endpoint lost unread: the queue's cap went past them
}

// endpoint is an Endpoint as the dispatcher runs it. The counters are
// written by its pump and workers and read by Stats.
type endpoint struct {
	Endpoint
	group string
	url   string // redacted, for logs

	up                                         atomic.Bool
	delivered, failed, retried, dead, overflow atomic.Int64
}

// Dispatcher delivers the queue's events to the endpoints. See the
// package documentation for the design.
//
// Any number of nodes run one, each with its own consumer name, and one at
// a time is active: the holder of a lease in Redis (LeaseKey), which it
// renews every Lease/3 and gives up when it stops; the others try to take
// it every Lease/5. The active one runs, for each endpoint, a pump and
// Concurrency workers, and a janitor that trims the queue; all of them
// stop when the lease is lost or Run's context ends, and Run returns only
// after they have.
type Dispatcher struct {
	cfg     DispatcherConfig
	log     zerolog.Logger
	streams []string
	lease   string
	dead    string
	eps     []*endpoint
	client  *http.Client
	running atomic.Bool
	active  atomic.Bool
}

// NewDispatcher validates cfg and returns a Dispatcher. It starts nothing
// and opens no connection.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	switch {
	case cfg.Redis == nil:
		return nil, errors.New("webhook: dispatcher: no Redis client")
	case cfg.Consumer == "":
		return nil, errors.New("webhook: dispatcher: no consumer name")
	case !cfg.Enabled():
		return nil, errors.New("webhook: dispatcher: no endpoint")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "webhooks").Str("consumer", cfg.Consumer).Logger(),
		streams: StreamKeys(cfg.Prefix),
		lease:   LeaseKey(cfg.Prefix),
		dead:    DeadKey(cfg.Prefix),
		client:  cfg.Client,
	}
	if d.client == nil {
		d.client = newClient(cfg.Concurrency)
	}
	for _, e := range cfg.Endpoints {
		ep := &endpoint{Endpoint: e, group: GroupName(e.Name), url: redact(e.URL)}
		ep.up.Store(true)
		d.eps = append(d.eps, ep)
	}
	return d, nil
}

// newClient is an HTTP client for deliveries: a connection pool of its
// own, no redirects (a 3xx is a failure: the endpoint must be configured
// with its final URL), and no timeout of its own (each request has one).
func newClient(perHost int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(perHost, 2)
	tr.ResponseHeaderTimeout = 0
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Active reports whether the dispatcher held the lease when it last
// checked. It may be called at any time.
func (d *Dispatcher) Active() bool { return d.active.Load() }

// Stats returns each endpoint's counters, in configuration order. It may
// be called at any time.
func (d *Dispatcher) Stats() []EndpointStats {
	out := make([]EndpointStats, len(d.eps))
	for i, ep := range d.eps {
		out[i] = EndpointStats{
			Name: ep.Name, Up: ep.up.Load(),
			Delivered: ep.delivered.Load(), Failed: ep.failed.Load(), Retried: ep.retried.Load(),
			Dead: ep.dead.Load(), Dropped: ep.overflow.Load(),
		}
	}
	return out
}

// Prepare creates every endpoint's consumer group on every queue stream
// (and the streams), so that from then on the history writers and the
// nodes queue events. A new endpoint starts with the events queued after
// its group was made. The node calls it in Start, before it serves, so no
// event of its own clients is missed; Run does it again.
func (d *Dispatcher) Prepare(ctx context.Context) error {
	return d.createGroups(ctx, "$", d.eps...)
}

// createGroups creates the groups of eps that are missing, at start ("$":
// what comes next; "0": all the stream holds).
func (d *Dispatcher) createGroups(ctx context.Context, start string, eps ...*endpoint) error {
	pipe := d.cfg.Redis.Pipeline()
	var cmds []*redis.StatusCmd
	for _, ep := range eps {
		for _, st := range d.streams {
			cmds = append(cmds, pipe.XGroupCreateMkStream(ctx, st, ep.group, start))
		}
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range cmds {
		if err := c.Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("webhook: create consumer groups: %w", err)
		}
	}
	return nil
}

// Run delivers while it holds the lease, and stands by while another
// dispatcher does, until ctx is done; then it gives the lease up and
// returns nil, once every goroutine it started has stopped (a delivery in
// flight is cancelled; its event stays pending for the next active
// dispatcher). The caller owns the goroutine; run it once per Dispatcher.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("webhook: dispatcher: Run called twice")
	}
	defer d.running.Store(false)
	names := make([]string, len(d.eps))
	for i, ep := range d.eps {
		names[i] = ep.Name
	}
	d.log.Info().Strs("endpoints", names).Msg("webhook dispatcher started")
	defer d.log.Info().Msg("webhook dispatcher stopped")
	defer d.release()

	rd := outage{what: "Redis", effect: "webhook deliveries wait"}
	standby := false
	for ctx.Err() == nil {
		held, err := d.holdLease(ctx)
		if err != nil {
			if ctx.Err() == nil {
				sleep(ctx, rd.fail(d.log, err))
			}
			continue
		}
		rd.ok(d.log)
		if !held {
			if !standby {
				standby = true
				d.log.Info().Msg("webhook dispatcher standing by: another node's dispatcher holds the lease")
			}
			sleep(ctx, d.cfg.Lease/5)
			continue
		}
		standby = false
		d.log.Info().Dur("lease", d.cfg.Lease).Msg("webhook dispatcher active (holds the lease)")
		d.term(ctx)
	}
	return nil
}

// term delivers until the lease is lost or ctx is done, and returns once
// its goroutines have stopped.
func (d *Dispatcher) term(ctx context.Context) {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, ep := range d.eps {
		p := newPump(d, ep)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(tctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.janitor(tctx)
	}()
	d.keepLease(tctx)
	cancel()
	wg.Wait()
}

// keepLease renews the lease every Lease/3 and returns when ctx is done or
// the lease is lost: another dispatcher holds it, or it could not be
// renewed for a whole Lease.
func (d *Dispatcher) keepLease(ctx context.Context) {
	renewed := time.Now()
	t := time.NewTicker(d.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held, err := d.holdLease(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && time.Since(renewed) < d.cfg.Lease:
			continue
		case err != nil:
			d.log.Warn().Err(err).Msg("webhook dispatcher lease not renewed in time; deliveries stop until it is held again")
			return
		case !held:
			d.log.Info().Msg("another node's webhook dispatcher holds the lease now; this one stands by")
			return
		}
		renewed = time.Now()
	}
}

func (d *Dispatcher) holdLease(ctx context.Context) (bool, error) {
	held, err := lease.Hold(ctx, d.cfg.Redis, d.lease, d.cfg.Consumer, d.cfg.Lease)
	if err != nil {
		return d.active.Load(), fmt.Errorf("webhook dispatcher lease: %w", err)
	}
	d.active.Store(held)
	return held, nil
}

// release gives the lease up, if this dispatcher holds it, so that another
// takes over at once.
func (d *Dispatcher) release() {
	if !d.active.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := lease.Release(ctx, d.cfg.Redis, d.lease, d.cfg.Consumer); err != nil {
		d.log.Warn().Err(err).Msg("could not give the webhook dispatcher lease up; another takes over once it lapses")
	}
}

// tidyEvery is how often the active dispatcher trims the queue.
const tidyEvery = time.Second

// janitor trims the queue every tidyEvery while ctx lasts.
func (d *Dispatcher) janitor(ctx context.Context) {
	warned := false
	for sleep(ctx, tidyEvery) {
		stale, err := d.tidy(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Debug().Err(err).Msg("trimming the webhook queue failed; trying again")
		}
		if len(stale) > 0 && !warned {
			warned = true
			d.log.Warn().Strs("groups", stale).Msg("the webhook queue has consumer groups of endpoints this node does not configure: " +
				"they are not waited for (give every node the same endpoints, or remove them with XGROUP DESTROY)")
		}
	}
}

// skipScript moves a group that the queue's cap has gone past to just
// before the stream's first entry, with the read counter that position
// has, if the group is still where it was seen: the events in between are
// gone, and Redis's lag of the group is right again. KEYS: the stream.
// ARGV: group, last id seen, new last id, entries read at it. Returns 1
// if it moved the group.
var skipScript = redis.NewScript(`
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] then
    if last ~= ARGV[2] then return 0 end
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[3], 'ENTRIESREAD', ARGV[4])
    return 1
  end
end
return 0`)

// tidy deletes, from each queue stream, the entries every endpoint is done
// with: below the oldest entry some endpoint has pending or not yet read.
// An endpoint whose unread events the queue's cap deleted (it is behind
// the stream's first entry, and Redis counts more entries after it than
// the stream holds) is moved past them, and the loss is logged and
// counted. It returns the groups of endpoints it does not know.
func (d *Dispatcher) tidy(ctx context.Context) (stale []string, err error) {
	pipe := d.cfg.Redis.Pipeline()
	infos := make([]*redis.XInfoStreamCmd, len(d.streams))
	groups := make([]*redis.XInfoGroupsCmd, len(d.streams))
	for i, st := range d.streams {
		infos[i] = pipe.XInfoStream(ctx, st)
		groups[i] = pipe.XInfoGroups(ctx, st)
	}
	_, _ = pipe.Exec(ctx)

	type lowest struct {
		stream string
		group  string
		cmd    *redis.XPendingCmd
	}
	mins := make([]string, len(d.streams)) // "" : do not trim
	var pend []lowest
	pipe = d.cfg.Redis.Pipeline()
	for i, st := range d.streams {
		info, err := infos[i].Result()
		if err != nil {
			continue // no stream (yet): nothing to trim
		}
		gs, err := groups[i].Result()
		if err != nil {
			return stale, err
		}
		byName := make(map[string]redis.XInfoGroup, len(gs))
		for _, g := range gs {
			byName[g.Name] = g
			if !slices.ContainsFunc(d.eps, func(ep *endpoint) bool { return ep.group == g.Name }) && !slices.Contains(stale, g.Name) {
				stale = append(stale, g.Name)
			}
		}
		keep := ""
		for _, ep := range d.eps {
			g, ok := byName[ep.group]
			if !ok {
				keep = "" // a group to create first: keep everything
				break
			}
			if info.Length > 0 && g.Lag > info.Length && cmpID(g.LastDeliveredID, info.FirstEntry.ID) < 0 {
				lost := g.Lag - info.Length
				moved, err := skipScript.Run(ctx, d.cfg.Redis, []string{st}, ep.group, g.LastDeliveredID,
					prevID(info.FirstEntry.ID), info.EntriesAdded-info.Length).Int()
				if err != nil {
					return stale, err
				}
				if moved == 1 {
					ep.overflow.Add(lost)
					g.LastDeliveredID = prevID(info.FirstEntry.ID)
					d.log.Warn().Str("endpoint", ep.Name).Str("stream", st).Int64("events", lost).
						Msg("events this endpoint had not read were dropped: it fell further behind than the queue holds (--webhook-queue-cap)")
				}
			}
			next := nextID(g.LastDeliveredID)
			if keep == "" || cmpID(next, keep) < 0 {
				keep = next
			}
			if g.Pending > 0 {
				pend = append(pend, lowest{stream: st, group: ep.group, cmd: pipe.XPending(ctx, st, ep.group)})
			}
		}
		mins[i] = keep
	}
	if len(pend) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	index := make(map[string]int, len(d.streams))
	for i, st := range d.streams {
		index[st] = i
	}
	for _, p := range pend {
		res, err := p.cmd.Result()
		if err != nil {
			mins[index[p.stream]] = "" // not sure what is pending: keep it all
			continue
		}
		if i := index[p.stream]; mins[i] != "" && res.Count > 0 && cmpID(res.Lower, mins[i]) < 0 {
			mins[i] = res.Lower
		}
	}
	pipe = d.cfg.Redis.Pipeline()
	n := 0
	for i, st := range d.streams {
		if mins[i] != "" {
			pipe.XTrimMinIDApprox(ctx, st, mins[i], 0)
			n++
		}
	}
	if n > 0 {
		_, err = pipe.Exec(ctx)
	}
	return stale, err
}

// Backlog returns, for each endpoint, the events queued that it has not
// yet taken: not yet read, or read and not yet delivered or dead-lettered.
// It may be called at any time, from any node.
func (d *Dispatcher) Backlog(ctx context.Context) (map[string]int64, error) {
	pipe := d.cfg.Redis.Pipeline()
	groups := make([]*redis.XInfoGroupsCmd, len(d.streams))
	lens := make([]*redis.IntCmd, len(d.streams))
	for i, st := range d.streams {
		groups[i] = pipe.XInfoGroups(ctx, st)
		lens[i] = pipe.XLen(ctx, st)
	}
	_, _ = pipe.Exec(ctx)
	out := make(map[string]int64, len(d.eps))
	for _, ep := range d.eps {
		out[ep.Name] = 0
	}
	for i := range d.streams {
		n, err := lens[i].Result()
		if err != nil {
			return nil, fmt.Errorf("webhook: backlog: %w", err)
		}
		if n == 0 {
			continue
		}
		gs, err := groups[i].Result()
		if err != nil {
			return nil, fmt.Errorf("webhook: backlog: %w", err)
		}
		for _, g := range gs {
			for _, ep := range d.eps {
				if ep.group != g.Name {
					continue
				}
				lag := g.Lag
				if lag < 0 { // unknown (entries deleted ahead of the group): at most the stream
					lag = n
				}
				out[ep.Name] += lag + g.Pending
			}
		}
	}
	return out, nil
}

// Stream entry ids, "<ms>-<seq>".

func parseID(id string) (ms, seq uint64) {
	a, b, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(a, 10, 64)
	seq, _ = strconv.ParseUint(b, 10, 64)
	return ms, seq
}

func cmpID(a, b string) int {
	am, as := parseID(a)
	bm, bs := parseID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

// prevID is the largest id below id (id above 0-0).
func prevID(id string) string {
	ms, seq := parseID(id)
	if seq == 0 {
		return strconv.FormatUint(ms-1, 10) + "-" + strconv.FormatUint(^uint64(0), 10)
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq-1, 10)
}

// nextID is the smallest id above id.
func nextID(id string) string {
	ms, seq := parseID(id)
	if seq == ^uint64(0) {
		return strconv.FormatUint(ms+1, 10) + "-0"
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
}
