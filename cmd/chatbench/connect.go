package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// ConnectResult is the connect scenario's own figures.
type ConnectResult struct {
	Conns        int64          `json:"conns"`  // logged in
	Failed       int64          `json:"failed"` // connect or login failed
	PerSec       float64        `json:"perSec"` // logins completed per second of the storm
	Latency      LatencySummary `json:"latency"`
	Nodes        []NodeMemory   `json:"nodes,omitempty"`
	BytesPerConn float64        `json:"bytesPerConn,omitempty"` // all nodes: RSS growth / connections added
}

// NodeMemory is one process's resident memory before and after the
// connections were opened.
type NodeMemory struct {
	Admin        string  `json:"admin"`
	RSSBefore    float64 `json:"rssBefore"`
	RSSAfter     float64 `json:"rssAfter"`
	ConnsBefore  float64 `json:"connsBefore"`
	ConnsAfter   float64 `json:"connsAfter"`
	BytesPerConn float64 `json:"bytesPerConn"`
}

// minConnsForMemory is the fewest connections a node must have gained for
// its memory per connection to mean something (a node the storm did not
// use shows only drift).
const minConnsForMemory = 100

type connectParams struct {
	conns int
	rate  float64       // connection attempts per second
	hold  time.Duration // idle time before the memory is read
	nodes int           // spread over this many nodes (the first ones); 0: all
}

// runConnect opens conns connections at rate per second, each logging in,
// holds them idle, and reads each process's resident memory before and
// after.
func runConnect(ctx context.Context, t *target, cm common, p connectParams) (Result, error) {
	k := max(t.numNodes(), 1)
	if p.nodes > 0 {
		k = min(k, p.nodes)
	}
	label := fmt.Sprintf("connect %d at %g/s", p.conns, p.rate)
	if p.nodes > 0 { // the same label on both targets
		label += fmt.Sprintf(" on %d node", p.nodes)
		if p.nodes > 1 {
			label += "s"
		}
	}
	r := Result{Scenario: "connect", Label: label, Target: t.name, LoadAvgStart: loadAvg(),
		Params: map[string]any{"conns": p.conns, "rate": p.rate, "holdSeconds": p.hold.Seconds(), "nodes": t.numNodes(), "connectNodes": k}}
	var before []nodeMetrics
	if len(t.admin) > 0 {
		var err error
		if before, err = t.scrape(ctx); err != nil {
			return r, err
		}
	} else {
		r.Notes = append(r.Notes, "no metrics address given: memory not measured")
	}
	lat := newLatency()
	cs := make([]*client, p.conns)
	var okN, failN atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	start := time.Now()
	var lastDone atomic.Int64
	i := 0
	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		if cm.progress == nil {
			return
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case now := <-tick.C:
				cm.progress(fmt.Sprintf("[%s %s] %4.0fs logged in %d failed %d", label, t.name, now.Sub(start).Seconds(), okN.Load(), failN.Load()))
			}
		}
	}()
	newPacer(start, p.rate).run(ctx, start.Add(time.Duration(float64(p.conns)/p.rate*float64(time.Second))+time.Millisecond), func(due time.Time) {
		if i >= p.conns {
			return
		}
		idx := i
		i++
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			c, err := t.connect(cctx, idx, idx%k, func() *tracker { return nil })
			if err != nil {
				failN.Add(1)
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
				return
			}
			cs[idx] = c
			okN.Add(1)
			now := time.Now()
			lat.record(idx, now.Sub(due))
			lastDone.Store(now.UnixNano())
		}()
	})
	wg.Wait()
	defer closeAll(cs)
	storm := time.Duration(lastDone.Load() - start.UnixNano())
	r.Seconds = round3(storm.Seconds())
	cr := &ConnectResult{Conns: okN.Load(), Failed: failN.Load(), Latency: summarize(lat.merged())}
	if storm > 0 {
		cr.PerSec = math.Round(float64(cr.Conns) / storm.Seconds())
	}
	r.Errors = cr.Failed
	if firstErr != nil {
		r.Notes = append(r.Notes, "first connect error: "+firstErr.Error())
	}
	select {
	case <-ctx.Done():
	case <-time.After(p.hold):
	}
	stopProgress()
	pwg.Wait()
	if before != nil {
		after, err := t.scrape(ctx)
		if err != nil {
			return r, err
		}
		var dRSS, dConns float64
		for j, a := range t.admin {
			nm := NodeMemory{Admin: a, RSSBefore: before[j].RSS, RSSAfter: after[j].RSS, ConnsBefore: before[j].LoggedIn, ConnsAfter: after[j].LoggedIn}
			if d := nm.ConnsAfter - nm.ConnsBefore; d >= minConnsForMemory {
				nm.BytesPerConn = math.Round((nm.RSSAfter - nm.RSSBefore) / d)
				dRSS += nm.RSSAfter - nm.RSSBefore
				dConns += d
			}
			cr.Nodes = append(cr.Nodes, nm)
		}
		if dConns > 0 {
			cr.BytesPerConn = math.Round(dRSS / dConns)
		}
	}
	r.Connect = cr
	r.LoadAvgEnd = loadAvg()
	return r, ctx.Err()
}
