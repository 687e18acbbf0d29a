package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/chatclient"
)

// target is what a scenario runs against: the cluster through its gateway,
// or one WebSocket URL (the baseline relay) where any name logs in.
type target struct {
	name     string   // "cluster" or "baseline"
	gateway  string   // cluster: http://host:port
	wsURL    string   // baseline: ws://host:port/ws
	admin    []string // host:port of each /metrics endpoint (optional)
	prefix   string   // user names are prefix + index
	password string
	dialer   *dialer
	// procs lists the target's server processes, for their CPU (nil:
	// not measured). The cluster's come from --pid-dir, read again for
	// every run; the baseline relay's is its subprocess.
	procs func() ([]serverProc, error)

	nodes  []chatclient.NodeInfo // cluster nodes, by id
	tokens []string              // cluster: token of user i
}

func (t *target) user(i int) string { return t.prefix + strconv.Itoa(i) }

// serverProcs lists the target's server processes (none if not known).
func (t *target) serverProcs() ([]serverProc, error) {
	if t.procs == nil {
		return nil, nil
	}
	return t.procs()
}

// numNodes is how many places clients are spread over.
func (t *target) numNodes() int {
	if t.wsURL != "" {
		return 1
	}
	return len(t.nodes)
}

// prepareConc is how many users prepare registers and logs in at once.
const prepareConc = 32

// prepare makes users 0..n-1 exist and, on the cluster, holds a token for
// each. Registering and logging in cost a bcrypt hash each on the gateway
// (the bench cluster runs with the lowest cost, so they are quick), so
// this is done once per run and not measured. progress, if not nil, gets
// a line a second.
func (t *target) prepare(ctx context.Context, n int, logf func(string, ...any), progress func(string)) error {
	if t.wsURL != "" || len(t.tokens) >= n {
		return nil
	}
	gw := &chatclient.Gateway{URL: t.gateway, HTTP: &http.Client{Timeout: 30 * time.Second}}
	tokens := make([]string, n)
	copy(tokens, t.tokens)
	start := len(t.tokens)
	var (
		mu       sync.Mutex
		firstErr error
		nodes    []chatclient.NodeInfo
		done     atomic.Int64
	)
	began := time.Now()
	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case now := <-tick.C:
					d := done.Load()
					progress(fmt.Sprintf("[prepare %s] %4.0fs %d/%d users registered and logged in (%.0f/s)",
						t.name, now.Sub(began).Seconds(), int64(start)+d, n, float64(d)/now.Sub(began).Seconds()))
				}
			}
		}()
	}
	sem := make(chan struct{}, prepareConc)
	var wg sync.WaitGroup
	for i := start; i < n; i++ {
		if ctx.Err() != nil {
			break
		}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u := t.user(i)
			err := gw.Register(ctx, u, t.password)
			var he *chatclient.HTTPError
			if errors.As(err, &he) && he.Status == http.StatusConflict {
				err = nil
			}
			var tok string
			var ns []chatclient.NodeInfo
			if err == nil {
				tok, ns, err = gw.Login(ctx, u, t.password)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("preparing user %s at %s: %w", u, t.gateway, err)
				}
				return
			}
			tokens[i] = tok
			if len(ns) > len(nodes) {
				nodes = ns
			}
			done.Add(1)
		}()
	}
	wg.Wait()
	stopProgress()
	pwg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(nodes) == 0 && len(t.nodes) == 0 {
		return fmt.Errorf("the gateway %s lists no chat node", t.gateway)
	}
	if d := done.Load(); d > 0 {
		logf("%s: prepared %d users in %.1fs (%.0f/s)", t.name, d, time.Since(began).Seconds(), float64(d)/time.Since(began).Seconds())
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	if len(t.nodes) == 0 {
		t.nodes = nodes
	}
	t.tokens = tokens
	return nil
}

// connect opens connection idx as user idx on place node (0..numNodes-1)
// and logs it in.
func (t *target) connect(ctx context.Context, idx, node int, trk func() *tracker) (*client, error) {
	url := t.wsURL
	if url == "" {
		url = t.nodes[node%len(t.nodes)].WS
	}
	return t.connectURL(ctx, idx, url, trk)
}

// connectPush opens connection idx as user idx on place node of the
// cluster, its pushes going to onPush, and logs it in.
func (t *target) connectPush(ctx context.Context, idx, node int, onPush pushFunc) (*client, error) {
	c, err := t.dialer.dialPush(ctx, idx, t.nodes[node%len(t.nodes)].WS, nil, onPush)
	if err != nil {
		return nil, err
	}
	if err := c.login(ctx, t.user(idx), t.password, t.tokens[idx]); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// gatewayClient is a client of the cluster's gateway API.
func (t *target) gatewayClient() *chatclient.Gateway {
	return &chatclient.Gateway{URL: t.gateway, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

// connectURL opens connection idx as user idx at the WebSocket url and
// logs it in.
func (t *target) connectURL(ctx context.Context, idx int, url string, trk func() *tracker) (*client, error) {
	c, err := t.dialer.dial(ctx, idx, url, trk)
	if err != nil {
		return nil, err
	}
	tok := ""
	if t.wsURL == "" {
		tok = t.tokens[idx]
	}
	if err := c.login(ctx, t.user(idx), t.password, tok); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// nodeMetrics is what one /metrics scrape tells.
type nodeMetrics struct {
	RSS      float64 // process_resident_memory_bytes
	LoggedIn float64 // chat_connections_logged_in
	Written  float64 // chat_history_written_total: messages this node's history writer stored in MongoDB
	Backlog  float64 // chat_history_backlog: messages not yet in MongoDB
}

// scrape reads the metrics of every admin address; failures are errors.
func (t *target) scrape(ctx context.Context) ([]nodeMetrics, error) {
	out := make([]nodeMetrics, len(t.admin))
	hc := &http.Client{Timeout: 5 * time.Second}
	for i, a := range t.admin {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("scraping %s: %w", a, err)
		}
		vals, err := parseMetrics(resp.Body, "process_resident_memory_bytes", "chat_connections_logged_in",
			"chat_history_written_total", "chat_history_backlog")
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("scraping %s: %w", a, err)
		}
		rss, ok := vals["process_resident_memory_bytes"]
		if !ok {
			return nil, fmt.Errorf("scraping %s: no process_resident_memory_bytes", a)
		}
		out[i] = nodeMetrics{RSS: rss, LoggedIn: vals["chat_connections_logged_in"],
			Written: vals["chat_history_written_total"], Backlog: vals["chat_history_backlog"]}
	}
	return out, nil
}

// parseMetrics reads the unlabelled samples of the named metrics from the
// Prometheus text format.
func parseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || !want[f[0]] {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", f[0], err)
		}
		out[f[0]] = v
	}
	return out, sc.Err()
}
