package webhook

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Bounds of reading an endpoint's answer: what is kept for the log line,
// and what is read at all (then the connection is dropped).
const (
	answerKept = 200
	answerRead = 64 << 10
)

// delivery is one event on its way to one endpoint. A pump holds it from
// the read of its queue entry until the entry is acknowledged.
type delivery struct {
	stream, id string // the queue entry
	ev         Event
	body       []byte

	attempts int       // made so far
	started  time.Time // when the last attempt began
	next     time.Time // when to try again; while waiting
	err      error     // of the last attempt; set by the worker
	index    int       // in the waiting heap; -1 outside
	outcome  outcome   // once finished: what to acknowledge it as
}

type outcome int

const (
	pendingOutcome outcome = iota
	delivered              // the endpoint took it
	skipped                // not for this endpoint, or no event at all
	deadLetter             // out of attempts: to the dead letters
)

// pump delivers the queue's events to one endpoint while its dispatcher
// holds the lease. Its fields belong to the goroutine of run; the
// workers only see the deliveries handed to them, and hand them back.
type pump struct {
	d   *Dispatcher
	ep  *endpoint
	log zerolog.Logger

	held    map[string]*delivery // by stream and id: read and not yet acknowledged
	waiting waitHeap             // held deliveries not in flight and not finished, by next
	done    []*delivery          // finished, to acknowledge
	busy    int                  // deliveries with the workers

	work    chan *delivery
	results chan *delivery

	own       map[string]string // stream -> cursor in this consumer's pending entries, until read through
	lastClaim time.Time

	// The endpoint's health, for one line when it starts failing and one
	// when it recovers.
	failing   bool
	since     time.Time
	failures  int
	lastError string
	lastOK    time.Time // when the last attempt that succeeded began
}

func newPump(d *Dispatcher, ep *endpoint) *pump {
	own := make(map[string]string, len(d.streams))
	for _, st := range d.streams {
		own[st] = "0"
	}
	return &pump{
		d: d, ep: ep,
		log:     d.log.With().Str("endpoint", ep.Name).Logger(),
		held:    map[string]*delivery{},
		work:    make(chan *delivery, d.cfg.Concurrency),
		results: make(chan *delivery, d.cfg.Concurrency),
		own:     own,
	}
}

// run delivers until ctx is done, then waits for its workers.
func (p *pump) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range p.d.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for dl := range p.work {
				p.attempt(ctx, dl)
				p.results <- dl // never blocks: at most Concurrency are out
			}
		}()
	}
	defer wg.Wait()
	defer close(p.work)

	rd := outage{what: "Redis", effect: "deliveries to " + p.ep.Name + " wait"}
	grouped := false
	nextRead := time.Time{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		var err error
		switch {
		case !grouped:
			if err = p.d.createGroups(ctx, "0", p.ep); err == nil {
				grouped = true
			}
		case len(p.done) > 0:
			err = p.acknowledge(ctx)
		case time.Since(p.lastClaim) >= p.d.cfg.ClaimIdle/2 && len(p.held) < p.d.cfg.Held:
			err = p.claim(ctx)
		case !time.Now().Before(nextRead) && len(p.held) < p.d.cfg.Held:
			var n int
			n, err = p.read(ctx)
			if err == nil && n == 0 {
				nextRead = time.Now().Add(p.d.cfg.Poll)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				grouped = false
			}
			sleep(ctx, rd.fail(p.log, err))
			continue
		}
		rd.ok(p.log)
		p.start()
		if len(p.done) > 0 || !grouped {
			continue
		}
		// Wait for a result, or until the next retry, read or claim is
		// due: only those that can happen (room to hold more, a worker
		// free).
		wake := time.Now().Add(time.Hour)
		if len(p.held) < p.d.cfg.Held {
			wake = earliest(wake, p.lastClaim.Add(p.d.cfg.ClaimIdle/2), nextRead)
		}
		if len(p.waiting) > 0 && p.busy < p.d.cfg.Concurrency {
			wake = earliest(wake, p.waiting[0].next)
		}
		if d := time.Until(wake); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
			case dl := <-p.results:
				if ctx.Err() == nil {
					p.finish(dl)
				}
			case <-timer.C:
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		if ctx.Err() != nil {
			return // what is in flight was cancelled: it stays pending
		}
		p.collect()
	}
}

func earliest(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if u.Before(t) {
			t = u
		}
	}
	return t
}

// collect takes the results that are in without waiting.
func (p *pump) collect() {
	for {
		select {
		case dl := <-p.results:
			p.finish(dl)
		default:
			return
		}
	}
}

// start hands the deliveries that are due to the workers, as many as are
// free.
func (p *pump) start() {
	now := time.Now()
	for p.busy < p.d.cfg.Concurrency && len(p.waiting) > 0 && !p.waiting[0].next.After(now) {
		dl := heap.Pop(&p.waiting).(*delivery)
		if dl.attempts > 0 {
			p.ep.retried.Add(1)
		}
		dl.attempts++
		dl.started = now
		p.busy++
		p.work <- dl // never blocks: busy < Concurrency
	}
}

// finish takes a delivery back from a worker.
func (p *pump) finish(dl *delivery) {
	p.busy--
	if dl.err == nil {
		p.ep.delivered.Add(1)
		dl.outcome = delivered
		p.done = append(p.done, dl)
		if dl.started.After(p.lastOK) {
			p.lastOK = dl.started
		}
		p.healthy()
		return
	}
	p.ep.failed.Add(1)
	if !dl.started.Before(p.lastOK) {
		// Not an answer from before the last success (attempts run
		// side by side): the endpoint's state is this one.
		p.unhealthy(dl.err)
	}
	if dl.attempts >= p.d.cfg.Attempts {
		dl.outcome = deadLetter
		p.done = append(p.done, dl)
		return
	}
	dl.next = time.Now().Add(jitter(Backoff(dl.attempts, p.d.cfg.RetryMin, p.d.cfg.RetryMax)))
	heap.Push(&p.waiting, dl)
}

// unhealthy records a failed attempt; the first after a success is
// logged.
func (p *pump) unhealthy(err error) {
	p.failures++
	p.lastError = err.Error()
	if p.failing {
		return
	}
	p.failing, p.since = true, time.Now()
	p.ep.up.Store(false)
	p.log.Warn().Str("url", p.ep.url).Str("error", p.lastError).
		Msg("webhook endpoint failing: its events wait and are retried with backoff")
}

// healthy records a successful attempt; if the endpoint was failing, it
// logs that it recovered and tries every waiting event again now.
func (p *pump) healthy() {
	if !p.failing {
		return
	}
	p.log.Info().Str("url", p.ep.url).Dur("down", time.Since(p.since)).Int("failed_attempts", p.failures).
		Str("last_error", p.lastError).Msg("webhook endpoint recovered")
	p.failing, p.failures, p.lastError = false, 0, ""
	p.ep.up.Store(true)
	now := time.Now()
	for _, dl := range p.waiting {
		dl.next = now
	}
	heap.Init(&p.waiting)
}

// hold takes queue entries into the pump: events for this endpoint wait
// to be sent, anything else is acknowledged at once.
func (p *pump) hold(stream string, msgs []redis.XMessage) {
	for _, m := range msgs {
		key := stream + " " + m.ID
		if _, ok := p.held[key]; ok {
			continue
		}
		dl := &delivery{stream: stream, id: m.ID, index: -1}
		p.held[key] = dl
		ev, body, ok, err := decodeEntry(m.Values)
		switch {
		case err != nil:
			p.log.Warn().Str("stream", stream).Str("entry", m.ID).Err(err).Msg("dropping a webhook queue entry that is no event")
			dl.outcome = skipped
		case !ok || !p.ep.Wants(ev.Type):
			dl.outcome = skipped
		}
		if dl.outcome == skipped {
			p.done = append(p.done, dl)
			continue
		}
		dl.ev, dl.body, dl.next = ev, body, time.Now()
		heap.Push(&p.waiting, dl)
	}
}

// read reads the queue once: this consumer's pending entries from an
// earlier run first, then new ones, at most what the endpoint may still
// hold, spread over the streams. It returns how many entries it took.
func (p *pump) read(ctx context.Context) (int, error) {
	free := p.d.cfg.Held - len(p.held)
	per := int64(max(1, free/len(p.d.streams)))
	pipe := p.d.cfg.Redis.Pipeline()
	cmds := make([]*redis.XStreamSliceCmd, len(p.d.streams))
	for i, st := range p.d.streams {
		id := ">"
		if cur, ok := p.own[st]; ok {
			id = cur
		}
		cmds[i] = pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: p.ep.group, Consumer: p.d.cfg.Consumer, Streams: []string{st, id}, Count: per, Block: -1,
		})
	}
	_, _ = pipe.Exec(ctx)
	n := 0
	for i, c := range cmds {
		st := p.d.streams[i]
		res, err := c.Result()
		if errors.Is(err, redis.Nil) {
			delete(p.own, st)
			continue
		}
		if err != nil {
			return n, err
		}
		for _, s := range res {
			if _, ok := p.own[st]; ok {
				if int64(len(s.Messages)) < per {
					delete(p.own, st) // read through
				} else {
					p.own[st] = s.Messages[len(s.Messages)-1].ID
				}
			}
			n += len(s.Messages)
			p.hold(st, s.Messages)
		}
		if _, ok := p.own[st]; ok && len(res) == 0 {
			delete(p.own, st)
		}
	}
	if n == 0 && len(p.own) > 0 {
		n = 1 // more of its own to read: read again at once
	}
	return n, nil
}

// claim takes over the entries other consumers (a dispatcher that
// stopped) have held unacknowledged for ClaimIdle, in one pipeline.
func (p *pump) claim(ctx context.Context) error {
	free := p.d.cfg.Held - len(p.held)
	per := int64(max(1, free/len(p.d.streams)))
	pipe := p.d.cfg.Redis.Pipeline()
	cmds := make([]*redis.XAutoClaimCmd, len(p.d.streams))
	for i, st := range p.d.streams {
		cmds[i] = pipe.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: st, Group: p.ep.group, Consumer: p.d.cfg.Consumer,
			MinIdle: p.d.cfg.ClaimIdle, Start: "0-0", Count: per,
		})
	}
	_, _ = pipe.Exec(ctx)
	before := len(p.held)
	for i, c := range cmds {
		msgs, _, err := c.Result()
		if err != nil {
			return err
		}
		p.hold(p.d.streams[i], msgs)
	}
	p.lastClaim = time.Now()
	if taken := len(p.held) - before; taken > 0 {
		p.log.Info().Int("events", taken).Dur("idle", p.d.cfg.ClaimIdle).Msg("took over webhook events of a dispatcher that stopped")
	}
	return nil
}

// acknowledge acknowledges the finished deliveries, after adding the dead
// ones to the dead letters, in one pipeline. On an error they stay to be
// acknowledged again (a dead letter may then be added twice).
func (p *pump) acknowledge(ctx context.Context) error {
	_, err := p.d.cfg.Redis.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, dl := range p.done {
			if dl.outcome == deadLetter {
				pipe.XAdd(ctx, &redis.XAddArgs{
					Stream: p.d.dead, MaxLen: p.d.cfg.DeadCap, Approx: true,
					Values: []any{
						"endpoint", p.ep.Name, "url", p.ep.url, "id", dl.ev.ID, "type", dl.ev.Type,
						"attempts", dl.attempts, "error", errString(dl.err), "failed", time.Now().UnixMilli(),
						"event", dl.body,
					},
				})
			}
			pipe.XAck(ctx, dl.stream, p.ep.group, dl.id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge %d webhook events: %w", len(p.done), err)
	}
	for _, dl := range p.done {
		delete(p.held, dl.stream+" "+dl.id)
		if dl.outcome == deadLetter {
			p.ep.dead.Add(1)
			p.log.Warn().Str("id", dl.ev.ID).Str("type", dl.ev.Type).Int("attempts", dl.attempts).Str("error", errString(dl.err)).
				Str("dead_letters", p.d.dead).Msg("webhook event dead-lettered: the endpoint did not take it within the attempts allowed")
		}
	}
	clear(p.done)
	p.done = p.done[:0]
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// attempt sends dl once and sets dl.err. Called by a worker.
func (p *pump) attempt(ctx context.Context, dl *delivery) {
	dl.err = send(ctx, p.d.client, p.ep.URL, p.ep.Secret, p.ep.Timeout, dl.ev, dl.body, dl.attempts)
}

// send POSTs one signed event body within timeout and returns nil if the
// endpoint answered 2xx. Its errors name neither the URL nor the secret.
func send(ctx context.Context, client *http.Client, target string, secret []byte, timeout time.Duration, ev Event, body []byte, attempt int) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return errors.New("bad request URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "chatcluster-webhooks/1")
	req.Header.Set(HeaderEventID, ev.ID)
	req.Header.Set(HeaderEventType, ev.Type)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	req.Header.Set(HeaderSignature, Sign(secret, time.Now().Unix(), body))
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer within %v", timeout)
		}
		return err
	}
	defer resp.Body.Close()
	kept, _ := io.ReadAll(io.LimitReader(resp.Body, answerKept))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, answerRead))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	msg := strings.TrimSpace(strings.ToValidUTF8(string(kept), "?"))
	if msg == "" {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return fmt.Errorf("answered %s: %s", resp.Status, msg)
}

func isNoGroup(err error) bool { return err != nil && strings.Contains(err.Error(), "NOGROUP") }

// waitHeap orders deliveries by when they are due.
type waitHeap []*delivery

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap) Push(x any) {
	dl := x.(*delivery)
	dl.index = len(*h)
	*h = append(*h, dl)
}
func (h *waitHeap) Pop() any {
	old := *h
	dl := old[len(old)-1]
	old[len(old)-1] = nil
	dl.index = -1
	*h = old[:len(old)-1]
	return dl
}
