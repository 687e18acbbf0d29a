package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// FailoverResult is the failover scenario's own figures. Times are in
// milliseconds from the kill.
type FailoverResult struct {
	Leader    string  `json:"leader"`    // the node killed
	NewLeader string  `json:"newLeader"` // the leader the gateway listed next
	PID       int     `json:"pid,omitempty"`
	KillAtSec float64 `json:"killAtSeconds"` // into the send phase

	// RestoredMs is the disruption window: from the kill to the first
	// push of a message due after the kill, sent and received by clients
	// of two different surviving nodes that kept their connection.
	RestoredMs float64 `json:"restoredMs"`
	// NewLeaderMs: from the kill until the gateway listed another leader.
	NewLeaderMs float64 `json:"newLeaderMs"`
	// Moved clients lost their connection (those of the killed node) and
	// reconnected through the gateway; ReconnectedMs is when the last one
	// was logged in again.
	Moved         int     `json:"moved"`
	Reconnected   int     `json:"reconnected"`
	ReconnectedMs float64 `json:"reconnectedMs"`
	// SteadyPairs is how many pairs had both users on surviving nodes.
	SteadyPairs int `json:"steadyPairs"`
}

// killFunc kills the node with the given id; it returns the pid killed (0
// if not known) once the process is gone.
type killFunc func(ctx context.Context, node string) (int, error)

type failoverParams struct {
	pairs     int
	rate      float64       // messages per second, all senders together
	duration  time.Duration // the send phase
	killAfter time.Duration // into the send phase
	kill      killFunc      // nil: nothing is killed (the baseline)
}

// foSession is one user of the failover scenario: a connection that is
// replaced through the gateway when it breaks, and the messages it sent,
// so that those without a reply can be sent again (same clientMsgId) on
// the new connection.
type foSession struct {
	idx  int
	peer string // user name of the other user of the pair

	mu      sync.Mutex
	cur     *client   // nil while reconnecting; guarded by mu
	node    string    // node id of cur; guarded by mu
	sent    []sentMsg // guarded by mu
	moved   bool      // lost its first connection; guarded by mu
	movedAt time.Time // when it was logged in again; guarded by mu
}

type sentMsg struct {
	key uint64
	due time.Time
}

func (s *foSession) current() *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// runFailover runs dm traffic between pairs of users on different nodes
// at a target rate and, killAfter into it, kills the leader with SIGKILL.
// Clients whose node died log in again through the gateway and send again
// what had no reply; at the end every recipient syncs, and an
// acknowledged message that no recipient got, live or by sync, is lost.
// On the baseline (no kill function) it is plain dm traffic at the same
// rate, for the ratios.
func runFailover(ctx context.Context, t *target, cm common, p failoverParams) (Result, error) {
	label := fmt.Sprintf("failover dm %g/s", p.rate)
	load0 := loadAvg()
	trk := newTracker(cm.runID)
	var cur atomic.Pointer[tracker]
	get := func() *tracker { return cur.Load() }
	n := 2 * p.pairs
	k := t.numNodes()
	leader := ""
	if p.kill != nil {
		ns, err := t.gatewayClient().Nodes(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("%s: asking the gateway for the leader: %w", t.name, err)
		}
		if leader = ns.Leader; leader == "" {
			return Result{}, fmt.Errorf("%s: the gateway names no leader", t.name)
		}
		if len(ns.Nodes) < 2 {
			return Result{}, fmt.Errorf("%s: failover needs at least 2 live nodes, the gateway lists %d", t.name, len(ns.Nodes))
		}
	}
	cs, err := connectAll(ctx, t, n, func(i int) int { return dmPlace(i, k, 1) }, get)
	if err != nil {
		return Result{}, err
	}
	ss := make([]*foSession, n)
	for i, c := range cs {
		ss[i] = &foSession{idx: i, peer: cs[i^1].user, cur: c, node: c.node}
	}
	// steady: a client of a surviving node that never lost its connection.
	steady := make([]atomic.Bool, n)
	steadyPairs := 0
	for i := range ss {
		steady[i].Store(leader != "" && ss[i].node != leader)
		if i%2 == 1 && steady[i].Load() && steady[i-1].Load() && ss[i].node != ss[i-1].node {
			steadyPairs++
		}
	}
	var killAt, restoredAt atomic.Int64 // unix nanoseconds; 0: not yet
	trk.onDeliver = func(to, from int, due, at time.Time) {
		ka := killAt.Load()
		if ka == 0 || due.UnixNano() < ka || !steady[to].Load() || !steady[from].Load() {
			return
		}
		restoredAt.CompareAndSwap(0, at.UnixNano())
	}

	// Supervisors: one per session, replacing a broken connection until
	// the scenario ends.
	sctx, stopSup := context.WithCancel(ctx)
	var swg sync.WaitGroup
	defer func() {
		stopSup()
		swg.Wait()
		var open []*client
		for _, s := range ss {
			if c := s.current(); c != nil {
				open = append(open, c)
			}
		}
		closeAll(open)
	}()
	for _, s := range ss {
		swg.Add(1)
		go func() {
			defer swg.Done()
			supervise(sctx, t, s, trk, get, func() { steady[s.idx].Store(false) })
		}()
	}
	cur.Store(trk)

	// The killer: killAfter into the phase, then watch the gateway for
	// the next leader.
	var (
		fr        = &FailoverResult{Leader: leader, SteadyPairs: steadyPairs, KillAtSec: p.killAfter.Seconds()}
		killErr   error
		newLeader atomic.Int64
		kwg       sync.WaitGroup
	)
	start := time.Now().Add(50 * time.Millisecond)
	if p.kill != nil {
		kwg.Add(1)
		go func() {
			defer kwg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(p.killAfter))):
			}
			cm.logf("%s: killing the leader %s (SIGKILL)", t.name, leader)
			before := time.Now()
			killAt.Store(before.UnixNano())
			pid, err := p.kill(ctx, leader)
			if err != nil {
				killErr = err
				return
			}
			fr.PID = pid
			gw := t.gatewayClient()
			deadline := time.Now().Add(p.duration + cm.drain + 10*time.Second)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if ns, err := gw.Nodes(ctx); err == nil && ns.Leader != "" && ns.Leader != leader {
					newLeader.Store(time.Now().UnixNano())
					fr.NewLeader = ns.Leader
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(25 * time.Millisecond):
				}
			}
		}()
	}
	perSender := p.rate / float64(n)
	send := func(i int) func(time.Time) {
		s := ss[i]
		return func(due time.Time) {
			key := trk.add(due, 1, i)
			s.mu.Lock()
			s.sent = append(s.sent, sentMsg{key: key, due: due})
			c := s.cur
			s.mu.Unlock()
			if c != nil {
				// A failed write is sent again once the session has a new
				// connection.
				_ = c.chat(trk, key, s.peer, "", due)
			}
		}
	}
	pcm := cm
	pcm.duration = p.duration
	ph := runPhaseFrom(ctx, pcm, label+" "+t.name, trk, n, perSender, send, start, nil)
	kwg.Wait()
	if killErr != nil {
		return Result{}, fmt.Errorf("%s: killing the leader %s: %w", t.name, leader, killErr)
	}
	var notes []string
	if t.wsURL == "" {
		// Every recipient with a message missing syncs, on the connection
		// its supervisor keeps (waiting while it reconnects).
		sr := recoverBySync(ctx, trk, func(from int) int { return from ^ 1 }, func(ctx context.Context, i int) (*client, error) {
			for {
				if c := ss[i].current(); c != nil && !c.isClosed() {
					return c, nil
				}
				select {
				case <-ctx.Done():
					return nil, fmt.Errorf("user %d has no connection: %w", i, ctx.Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
		notes = append(notes, sr.notes()...)
	}
	r := finish(trk, ph)
	r.Scenario, r.Label, r.Target = "failover", label, t.name
	r.Params = map[string]any{"pairs": p.pairs, "rate": p.rate, "crossShare": 1.0, "nodes": k, "killAfterSeconds": p.killAfter.Seconds()}
	r.Notes = append(r.Notes, notes...)
	r.LoadAvgStart, r.LoadAvgEnd = load0, loadAvg()
	if p.kill == nil {
		return r, ctx.Err()
	}
	ka := killAt.Load()
	ms := func(at int64) float64 {
		if at == 0 || ka == 0 {
			return 0
		}
		return math.Round(float64(at-ka)/1e5) / 10
	}
	fr.RestoredMs = ms(restoredAt.Load())
	fr.NewLeaderMs = ms(newLeader.Load())
	var lastMove int64
	for _, s := range ss {
		s.mu.Lock()
		if s.moved {
			fr.Moved++
			if !s.movedAt.IsZero() {
				fr.Reconnected++
				lastMove = max(lastMove, s.movedAt.UnixNano())
			}
		}
		s.mu.Unlock()
	}
	fr.ReconnectedMs = ms(lastMove)
	if fr.RestoredMs == 0 {
		r.Notes = append(r.Notes, "routing was not seen restored: no message due after the kill reached a surviving node's client live")
	}
	if fr.Reconnected < fr.Moved {
		r.Notes = append(r.Notes, fmt.Sprintf("%d of %d clients of the killed node did not reconnect", fr.Moved-fr.Reconnected, fr.Moved))
	}
	r.Failover = fr
	return r, ctx.Err()
}

// supervise replaces s's connection whenever it breaks, until ctx ends:
// it asks the gateway for the live nodes, logs in again with the user's
// token on one other than the node it lost (the gateway may still list a
// dead node for a moment), and sends again every message of s that has
// had no reply. lost is called when the first connection breaks.
func supervise(ctx context.Context, t *target, s *foSession, trk *tracker, get func() *tracker, lost func()) {
	for {
		c := s.current()
		if c == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-c.closed():
		}
		s.mu.Lock()
		s.cur = nil
		gone := s.node
		if !s.moved {
			s.moved = true
			lost()
		}
		s.mu.Unlock()
		nc, err := reconnect(ctx, t, s.idx, gone, get)
		if err != nil {
			return // the scenario ended
		}
		s.mu.Lock()
		s.cur, s.node, s.movedAt = nc, nc.node, time.Now()
		resend := slices.Clone(s.sent)
		s.mu.Unlock()
		for _, m := range resend {
			if trk.settled(m.key) {
				continue
			}
			if nc.chat(trk, m.key, s.peer, "", m.due) != nil {
				break // broke again: the next round sends the rest
			}
		}
	}
}

// reconnect logs user idx in on a live node other than gone ("" for any),
// as the gateway lists them, best first, backing off from 50 ms to 1 s
// between rounds until it succeeds or ctx ends.
func reconnect(ctx context.Context, t *target, idx int, gone string, get func() *tracker) (*client, error) {
	gw := t.gatewayClient()
	if t.wsURL != "" {
		gw = nil // the baseline: one address
	}
	wait := 50 * time.Millisecond
	var lastErr error
	for {
		var urls []string
		if gw == nil {
			urls = []string{t.wsURL}
		} else if ns, err := gw.Nodes(ctx); err != nil {
			lastErr = err
		} else {
			for _, nd := range ns.Nodes {
				if nd.ID != gone {
					urls = append(urls, nd.WS)
				}
			}
		}
		for _, u := range urls {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := t.connectURL(cctx, idx, u, get)
			cancel()
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr == nil || errors.Is(lastErr, ctx.Err()) {
				return nil, fmt.Errorf("no node took user %d: %w", idx, ctx.Err())
			}
			return nil, fmt.Errorf("no node took user %d: %w", idx, errors.Join(ctx.Err(), lastErr))
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// pidDirKiller kills nodes whose pid files deploy/run.sh keeps in dir, as
// node-<id>.pid. Before it kills, it checks that the process is that node
// (its command line holds --id <id>), so a stale pid file never kills
// anything else; then it waits (bounded) until the process is gone.
func pidDirKiller(dir string) killFunc {
	return func(ctx context.Context, node string) (int, error) {
		path := filepath.Join(dir, "node-"+node+".pid")
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("reading the pid of node %s: %w", node, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			return 0, fmt.Errorf("%s does not hold a pid", path)
		}
		if err := checkNodeProcess(pid, node); err != nil {
			return 0, err
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return 0, fmt.Errorf("kill -9 %d (node %s): %w", pid, node, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for processAlive(pid) {
			if time.Now().After(deadline) {
				return pid, fmt.Errorf("node %s (pid %d) still there 10s after SIGKILL", node, pid)
			}
			select {
			case <-ctx.Done():
				return pid, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return pid, nil
	}
}

// checkNodeProcess checks that pid runs a node with the id node.
func checkNodeProcess(pid int, node string) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("node %s: process %d is not running (stale pid file?)", node, pid)
	}
	if !argsNameNode(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), node) {
		return fmt.Errorf("process %d is not node %s (its command line has no --id %s); stale pid file?", pid, node, node)
	}
	return nil
}

// argsNameNode reports whether a command line runs a node with the id
// node: its program is named node and it has --id node (or --id=node).
func argsNameNode(args []string, node string) bool {
	if len(args) == 0 || filepath.Base(args[0]) != "node" {
		return false
	}
	for i, a := range args {
		if (a == "--id" || a == "-id") && i+1 < len(args) && args[i+1] == node {
			return true
		}
		if a == "--id="+node || a == "-id="+node {
			return true
		}
	}
	return false
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	return b[i+2] != 'Z'
}
