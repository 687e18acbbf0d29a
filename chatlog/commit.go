package chatlog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Group commit: script calls that arrive while others are on their way to
// Redis wait and go together, in one pipeline, so that under load a message
// costs a fraction of a round trip and of a system call on both sides,
// and no message waits for a timer when there is no load.
//
// At most maxInFlight pipelines are in flight at once. A caller that finds
// fewer sends what is queued, its own call among it, at once. Otherwise it
// queues and waits; when a pipeline returns, the goroutine that sent it
// hands the sending of what queued meanwhile to the oldest caller waiting,
// so no caller sends more than one pipeline for others. Within a pipeline
// the calls run in the order they queued: one conversation's appends keep
// the order in which their callers asked.
//
// A lazy call (runLazy) is never the reason for a pipeline: it waits for
// the next one to go, at most defaultLazyWait, and rides in it behind the
// appends, so that under load it costs Redis and this process no round
// trip and no system call of its own.
const (
	maxInFlight = 2
	maxBatch    = 256
	// defaultLazyWait bounds how long a lazy call waits for a pipeline
	// to ride in; then it sends one of its own (with the lazy calls
	// queued beside it).
	defaultLazyWait = 10 * time.Millisecond
	// batchTimeout bounds a pipeline's round trip: a caller whose own
	// context is longer still gets an answer after it.
	batchTimeout = 5 * time.Second
)

type committer struct {
	rdb redis.UniversalClient
	// replicas, when above 0, ends every pipeline with a WAIT for that
	// many replicas, for at most replicaWait; short hears of a WAIT that
	// saw fewer (WithReplicas).
	replicas    int
	replicaWait time.Duration
	short       func(got int)
	// lazyWait is how long a lazy call waits (defaultLazyWait when 0).
	lazyWait time.Duration

	mu       sync.Mutex
	queue    []*call // guarded by mu
	lazy     []*call // lazy calls waiting for a pipeline; guarded by mu
	inFlight int     // pipelines sent and not yet returned; guarded by mu
}

// call is one script call waiting in the committer.
type call struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	// adds are sets that gain member before the script runs; an error
	// there fails the call (its script may have run: a resend is safe).
	adds   []string
	member string

	res   []any
	err   error
	wake  chan bool // true: res and err are set; false: send batch
	batch []*call   // handed to this caller to send, itself first
	taken bool      // in a batch; guarded by committer.mu
}

// run runs script with keys and args, batched with concurrent calls, and
// returns its reply as a slice.
//
// Before the script, member is added to each set in adds, in the same
// pipeline: on a Redis Cluster those sets are in other slots than the
// script's keys.
func (c *committer) run(ctx context.Context, script *redis.Script, keys []string, args []any, adds []string, member string) ([]any, error) {
	cl := &call{ctx: ctx, script: script, keys: keys, args: args, adds: adds, member: member, wake: make(chan bool, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, cl)
	c.sendLocked()
	return c.await(cl, <-cl.wake)
}

// sendLocked sends what is queued if fewer than maxInFlight pipelines are
// in flight, and releases c.mu.
func (c *committer) sendLocked() {
	if c.inFlight < maxInFlight {
		c.inFlight++
		c.send(c.takeLocked())
		return
	}
	c.mu.Unlock()
}

// await returns cl's reply, first sending each batch handed to it; done
// is what its wake said first.
func (c *committer) await(cl *call, done bool) ([]any, error) {
	for !done {
		c.send(cl.batch)
		done = <-cl.wake
	}
	return cl.res, cl.err
}

// runLazy is run for a call that may wait: it goes in the next pipeline
// sent for other calls, or after lazyWait in one of its own. Its script
// must not depend on the calls it rides with.
func (c *committer) runLazy(ctx context.Context, script *redis.Script, keys []string, args []any) ([]any, error) {
	cl := &call{ctx: ctx, script: script, keys: keys, args: args, wake: make(chan bool, 1)}
	c.mu.Lock()
	c.lazy = append(c.lazy, cl)
	c.mu.Unlock()
	wait := c.lazyWait
	if wait <= 0 {
		wait = defaultLazyWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case done := <-cl.wake:
		return c.await(cl, done)
	case <-t.C:
	}
	c.mu.Lock()
	if cl.taken {
		c.mu.Unlock()
	} else {
		// No pipeline came: the lazy calls queue like any other, this
		// one sends them if a slot is free.
		c.queue = append(c.queue, c.lazy...)
		c.lazy = nil
		c.sendLocked()
	}
	return c.await(cl, <-cl.wake)
}

// takeLocked takes up to maxBatch queued calls, oldest first, then lazy
// calls up to maxBatch in all, and releases c.mu.
func (c *committer) takeLocked() []*call {
	n := min(len(c.queue), maxBatch)
	l := min(len(c.lazy), maxBatch-n)
	batch := make([]*call, 0, n+l)
	batch = append(batch, c.queue[:n]...)
	batch = append(batch, c.lazy[:l]...)
	c.queue = shift(c.queue, n)
	c.lazy = shift(c.lazy, l)
	for _, cl := range batch {
		cl.taken = true
	}
	c.mu.Unlock()
	return batch
}

// shift drops the first n calls of q.
func shift(q []*call, n int) []*call {
	clear(q[:n])
	q = q[n:]
	if len(q) == 0 {
		return nil
	}
	return q
}

// send sends batch, then hands what queued meanwhile to the oldest of
// those callers (it sends it in its turn), or gives the slot up.
func (c *committer) send(batch []*call) {
	c.exec(batch)
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.inFlight--
		c.mu.Unlock()
		return
	}
	next := c.takeLocked()
	next[0].batch = next
	next[0].wake <- false
}

// exec sends batch in one pipeline and wakes every caller with its reply.
// A caller that stopped waiting before its turn is answered with its
// context's error and not sent. Scripts Redis does not hold yet (a
// restarted Redis) are loaded and their calls sent again: a call answered
// NOSCRIPT did not run.
func (c *committer) exec(batch []*call) {
	live := batch[:0:0]
	for _, cl := range batch {
		if err := cl.ctx.Err(); err != nil {
			cl.err = err
			cl.wake <- true
			continue
		}
		live = append(live, cl)
	}
	// A second attempt answers every call, NOSCRIPT or not.
	for attempt := 0; len(live) > 0; attempt++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(live[0].ctx), batchTimeout)
		cmds, adds := c.pipeline(ctx, live)
		var again []*call
		for i, cl := range live {
			var addErr error
			for range cl.adds {
				if err := adds[0].Err(); err != nil && addErr == nil {
					addErr = err
				}
				adds = adds[1:]
			}
			err := cmds[i].Err()
			if attempt == 0 && err != nil && isNoScript(err) {
				again = append(again, cl)
				continue
			}
			if err == nil {
				cl.res, err = cmds[i].Slice()
			}
			if err == nil && addErr != nil {
				err = fmt.Errorf("adding to a conversation list: %w", addErr)
			}
			cl.err = err
			cl.wake <- true
		}
		if len(again) > 0 {
			loaded := map[*redis.Script]bool{}
			for _, cl := range again {
				if !loaded[cl.script] {
					loaded[cl.script] = true
					if err := cl.script.Load(ctx, c.rdb).Err(); err != nil {
						break // the calls fail below with their NOSCRIPT
					}
				}
			}
		}
		cancel()
		live = again
	}
}

// pipeline sends the calls' commands, the adds of each call ahead of its
// script, and returns their replies in that order. With replicas to wait
// for, every master written to is sent a WAIT behind the writes, on the
// connection that carried them (WAIT counts that connection's writes):
// one pipeline on one server, or on a Redis Cluster one per master
// touched, side by side.
func (c *committer) pipeline(ctx context.Context, live []*call) ([]*redis.Cmd, []*redis.IntCmd) {
	cmds := make([]*redis.Cmd, len(live))
	var adds []*redis.IntCmd
	cc, sharded := c.rdb.(*redis.ClusterClient)
	if !sharded || c.replicas == 0 {
		pipe := c.rdb.Pipeline()
		for i, cl := range live {
			for _, k := range cl.adds {
				adds = append(adds, pipe.SAdd(ctx, k, cl.member))
			}
			cmds[i] = cl.script.EvalSha(ctx, pipe, cl.keys, cl.args...)
		}
		var wait *redis.Cmd
		if c.replicas > 0 {
			wait = pipe.Do(ctx, "WAIT", c.replicas, max(1, c.replicaWait.Milliseconds()))
		}
		_, _ = pipe.Exec(ctx)
		c.waited(wait)
		return cmds, adds
	}

	pipes := map[*redis.Client]redis.Pipeliner{}
	var failed error
	pipeFor := func(key string) redis.Pipeliner {
		node, err := cc.MasterForKey(ctx, key)
		if err != nil {
			failed = err
			return nil
		}
		p := pipes[node]
		if p == nil {
			p = node.Pipeline()
			pipes[node] = p
		}
		return p
	}
	for i, cl := range live {
		for _, k := range cl.adds {
			if p := pipeFor(k); p != nil {
				adds = append(adds, p.SAdd(ctx, k, cl.member))
			} else {
				adds = append(adds, failedInt(ctx, failed))
			}
		}
		if p := pipeFor(cl.keys[0]); p != nil {
			cmds[i] = cl.script.EvalSha(ctx, p, cl.keys, cl.args...)
		} else {
			cmds[i] = redis.NewCmd(ctx)
			cmds[i].SetErr(failed)
		}
	}
	var wg sync.WaitGroup
	moved := false
	var mu sync.Mutex
	for _, p := range pipes {
		wait := p.Do(ctx, "WAIT", c.replicas, max(1, c.replicaWait.Milliseconds()))
		wg.Go(func() {
			_, err := p.Exec(ctx)
			c.waited(wait)
			if err != nil && redirected(err) {
				mu.Lock()
				moved = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if moved || failed != nil {
		// The slots moved (a failover, a resharding): learn where they
		// are before the next pipeline. These calls fail, and their
		// callers' clients send them again.
		cc.ReloadState(ctx)
	}
	return cmds, adds
}

// waited reports a WAIT that saw fewer replicas than asked for.
func (c *committer) waited(wait *redis.Cmd) {
	if wait == nil || c.short == nil {
		return
	}
	if got, err := wait.Int64(); err == nil && int(got) < c.replicas {
		c.short(int(got))
	}
}

func failedInt(ctx context.Context, err error) *redis.IntCmd {
	cmd := redis.NewIntCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// redirected reports a reply of a Redis Cluster node that does not serve
// the slot (any more): MOVED, ASK, or a cluster that is down.
func redirected(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "MOVED ") || strings.HasPrefix(s, "ASK ") || strings.HasPrefix(s, "CLUSTERDOWN")
}

func isNoScript(err error) bool {
	return strings.HasPrefix(err.Error(), "NOSCRIPT")
}
