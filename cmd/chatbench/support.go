package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/accounts"
	"chatcluster/chatclient"
	"chatcluster/history"
	"chatcluster/protocol"
)

// The support scenario loads customer service: visitors arrive at a rate,
// each opens its conversation (support) and waits in the leader's queue
// until it is assigned to one of the bench's agents; then it writes its
// messages one at a time, each answered by the agent, and closes the
// conversation, which frees the agent's capacity for the next one.
//
// The agents are registered users chatbench makes agents itself, through
// the store (history.Store.AddAgent, what `chat admin agent add` does), so
// the scenario needs the cluster's MongoDB (--mongo, --mongo-db). The
// visitors are created at the gateway (POST /api/visitor) before the
// measurement, all from this one address, so the gateway must allow that
// many a minute (--visitors-per-minute, CHAT_VISITORS_PER_MINUTE; 0 is no
// bound).

// visitorGap spaces a visitor's messages: the leader takes at most 5 a
// second from one visitor (in bursts of 10) and refuses the rest with 429.
const visitorGap = time.Second / 5

// supportRequestTimeout bounds one request of the support scenario.
const supportRequestTimeout = 10 * time.Second

// agentReadyWait bounds the wait for the leader to know a new agent (it
// reads the operator's agent changes every 2 s).
const agentReadyWait = 30 * time.Second

// cleanupTimeout bounds each request made to leave the cluster as it was
// (closing conversations, setting agents away), whatever the run's bound.
const cleanupTimeout = 10 * time.Second

type supportParams struct {
	visitors int
	rate     float64       // visitors arriving per second
	agents   int           // bench agents
	capacity int           // conversations each agent holds at once
	messages int           // messages each visitor writes once assigned, each answered
	timeout  time.Duration // after the last arrival, the longest the scenario waits
	mongo    string        // the cluster's MongoDB, to make the agents agents
	mongoDB  string
}

// validate checks the support flags; onBaseline is a run against a relay
// only (--baseline), which has no customer service.
func (p supportParams) validate(onBaseline bool) error {
	switch {
	case onBaseline:
		return errors.New("support runs on the cluster only: the baseline relay has no customer service (drop --baseline, or support from --scenarios)")
	case p.visitors < 1 || p.agents < 1 || p.messages < 1:
		return errors.New("--support-visitors, --support-agents and --support-messages must be at least 1")
	case !(p.rate > 0) || math.IsInf(p.rate, 0):
		return errors.New("--support-rate must be a positive number")
	case p.capacity < 1 || p.capacity > protocol.MaxAgentCapacity:
		return fmt.Errorf("--support-capacity must be 1 to %d", protocol.MaxAgentCapacity)
	case p.timeout <= 0:
		return errors.New("--support-timeout must be positive")
	case p.mongo == "" || p.mongoDB == "":
		return errors.New("support makes its agent users agents in the cluster's MongoDB: give --mongo (e.g. mongodb://127.0.0.1:27017/) and --mongo-db (the nodes' database, \"chat\" unless they were told otherwise)")
	}
	return nil
}

// noBaselineNote is the support result's note when a baseline was run.
const noBaselineNote = "no baseline: the baseline relay has no customer service, so this scenario ran on the cluster only"

func (p supportParams) label() string {
	return fmt.Sprintf("support %d visitors at %g/s, %d agents × %d, %d messages", p.visitors, p.rate, p.agents, p.capacity, p.messages)
}

// SupportResult is the support scenario's own figures.
type SupportResult struct {
	Visitors int     `json:"visitors"`
	Rate     float64 `json:"rate"` // visitors arriving per second
	Agents   int     `json:"agents"`
	Capacity int     `json:"capacity"` // per agent
	Messages int     `json:"messages"` // per visitor, each answered
	// BoundSeconds is how long after the last arrival the scenario waited
	// for the conversations to end.
	BoundSeconds float64 `json:"boundSeconds"`

	Opened   int64 `json:"opened"`   // visitors whose support request was answered
	Assigned int64 `json:"assigned"` // visitors pushed an assignment within the bound
	// NeverAssigned is every visitor without an assignment within the
	// bound, whatever the reason; FailedToOpen of them could not connect,
	// log in or open their conversation.
	NeverAssigned int64 `json:"neverAssigned"`
	FailedToOpen  int64 `json:"failedToOpen"`
	Finished      int64 `json:"finished"`   // every message answered, closed by the visitor
	Unfinished    int64 `json:"unfinished"` // assigned, not finished within the bound
	// AssignedPerSec is Assigned over AssignSeconds, from the first
	// support request to the last assignment.
	AssignedPerSec float64 `json:"assignedPerSec"`
	AssignSeconds  float64 `json:"assignSeconds"`
	CrossNode      int64   `json:"crossNode"` // assigned to an agent on another node than the visitor's

	Wait           LatencySummary `json:"wait"`           // support request -> the visitor's assigned push
	VisitorToAgent LatencySummary `json:"visitorToAgent"` // visitor's send -> the agent's push
	AgentToVisitor LatencySummary `json:"agentToVisitor"` // agent's send -> the visitor's push

	// StaleClosed are conversations of earlier runs the leader gave the
	// bench agents, which they closed; Requeued are unassigned pushes to
	// them; ClosedByOther conversations a visitor was told were closed
	// by someone else.
	StaleClosed   int64 `json:"staleClosed"`
	Requeued      int64 `json:"requeued"`
	ClosedByOther int64 `json:"closedByOther"`
	// ErrorsByCode counts failed requests by who sent them, the action
	// and the reply code ("closed": the connection failed, "timeout": no
	// answer in time), e.g. "visitor chat 429".
	ErrorsByCode map[string]int64 `json:"errorsByCode,omitempty"`
}

// supportVisitor is one visitor of a run. The scenario's goroutine for it
// and its connection's read loop share it; the agents' read loops touch
// only asked.
type supportVisitor struct {
	idx   int
	id    string // ~...
	token string
	node  int // place among the nodes

	mu         sync.Mutex
	asked      int       // the highest question an agent was pushed; guarded by mu
	answered   int       // the highest answer the visitor was pushed; guarded by mu
	isAssigned bool      // guarded by mu
	assignedAt time.Time // the visitor's assigned push; guarded by mu
	agent      string    // who took it; guarded by mu
	isClosed   bool      // closed by someone else; guarded by mu

	assigned chan struct{} // closed at the first assigned push
	closed   chan struct{} // closed when someone else closed the conversation
	answers  chan int      // the number of each answer pushed, once each; capacity messages
}

// supportAgent is one bench agent.
type supportAgent struct {
	idx  int
	name string
	node int
	c    *client
	jobs chan agentJob // filled by c's read loop, drained by the agent's workers
}

// agentJob is what an agent's worker does: answer question j of visitor v
// in conv, or (v < 0) close conv, a conversation of an earlier run.
type agentJob struct {
	conv string
	v, j int
}

// supportRun is the state of one support run. Safe for concurrent use.
type supportRun struct {
	p        supportParams
	id       string // in every text and clientMsgId: unique per run
	vs       []*supportVisitor
	byID     map[string]int        // visitor id -> index; read-only once the run starts
	agentOf  map[string]int        // agent name -> node place; read-only once the run starts
	nodes    []chatclient.NodeInfo // where visitors and agents connect, by place
	deadline time.Time             // the run's bound: the last arrival plus p.timeout

	wait, v2a, a2v *latency

	started, opened, assigned, failedOpen, finished, unfinished atomic.Int64
	qSent, qGot, aSent, aGot, dups, stale, requeued             atomic.Int64
	closedByOther, cross                                        atomic.Int64
	firstAt, lastAssigned                                       atomic.Int64 // unix ns; 0: none yet

	errMu sync.Mutex
	errs  map[string]int64 // guarded by errMu

	staleMu sync.Mutex
	staleIn map[string]bool // stale conversations closed; guarded by staleMu
}

// Texts of the support scenario: "bench <run> q <visitor> <n> <sent ns>"
// for a visitor's n-th question, "a" for the agent's answer to it. The
// receiver takes the latency from the text.

// supportText is the text of question (kind 'q') or answer ('a') n of
// visitor v, sent at sent.
func supportText(id string, kind byte, v, n int, sent time.Time) string {
	b := make([]byte, 0, 64)
	b = append(b, "bench "...)
	b = append(b, id...)
	b = append(b, ' ', kind, ' ')
	b = strconv.AppendInt(b, int64(v), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, sent.UnixNano(), 10)
	return string(b)
}

// parseSupportText reads a text made by supportText for run id.
func parseSupportText(id, s string) (kind byte, v, n int, sent time.Time, ok bool) {
	f := strings.Fields(s)
	if len(f) != 6 || f[0] != "bench" || f[1] != id || len(f[2]) != 1 || (f[2][0] != 'q' && f[2][0] != 'a') {
		return 0, 0, 0, time.Time{}, false
	}
	vv, err1 := strconv.Atoi(f[3])
	nn, err2 := strconv.Atoi(f[4])
	ns, err3 := strconv.ParseInt(f[5], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || vv < 0 || nn < 1 {
		return 0, 0, 0, time.Time{}, false
	}
	return f[2][0], vv, nn, time.Unix(0, ns), true
}

// arrivals returns the times n visitors arriving at rate per second from
// start are due: the pacer's schedule, exactly n of them.
func arrivals(start time.Time, n int, rate float64) []time.Time {
	p := newPacer(start, rate)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = p.next()
	}
	return out
}

// errCode names how a request failed: its reply code, "closed" (the
// connection failed), "timeout" (no answer in time) or "failed".
func errCode(err error) string {
	var re *replyError
	var he *chatclient.HTTPError
	switch {
	case errors.As(err, &re):
		return strconv.Itoa(re.Code)
	case errors.As(err, &he):
		return strconv.Itoa(he.Status)
	case errors.Is(err, errConnClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "failed"
}

// count adds one failed request of who's action with code.
func (r *supportRun) count(who, action, code string) {
	r.errMu.Lock()
	r.errs[who+" "+action+" "+code]++
	r.errMu.Unlock()
}

func (r *supportRun) fail(who, action string, err error) { r.count(who, action, errCode(err)) }

// errorCounts returns a copy of the failed requests by key and their sum.
func (r *supportRun) errorCounts() (map[string]int64, int64) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	out := make(map[string]int64, len(r.errs))
	var n int64
	for k, v := range r.errs {
		out[k] = v
		n += v
	}
	return out, n
}

// retry runs f, with its own timeout, until it succeeds, fails in a way a
// client would not retry (a reply other than 503 or 429), c's connection
// is gone, or ctx (the run's bound) ends. Every failure is counted under
// who and action, except one caused by ctx ending.
func (r *supportRun) retry(ctx context.Context, c *client, who, action string, f func(context.Context) error) error {
	wait := retryMin
	for {
		rctx, cancel := context.WithTimeout(ctx, supportRequestTimeout)
		err := f(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		r.fail(who, action, err)
		if c.isClosed() || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// runSupport runs the support scenario on the cluster t.
func runSupport(ctx context.Context, t *target, cm common, p supportParams) (Result, error) {
	label := p.label()
	load0 := loadAvg()
	r := &supportRun{p: p, id: cm.runID + "." + strconv.FormatInt(time.Now().UnixNano(), 36),
		byID: map[string]int{}, agentOf: map[string]int{}, errs: map[string]int64{}, staleIn: map[string]bool{},
		wait: newLatency(), v2a: newLatency(), a2v: newLatency()}

	// Agents: registered users, made agents in the store.
	at := &target{name: t.name, gateway: t.gateway, prefix: t.prefix + "agent", password: t.password, dialer: t.dialer, nodes: t.nodes}
	if err := at.prepare(ctx, p.agents, cm.logf, cm.progress); err != nil {
		return Result{}, err
	}
	if err := makeAgents(ctx, p, at); err != nil {
		return Result{}, err
	}
	r.nodes = at.nodes
	k := len(r.nodes)
	if k == 0 {
		return Result{}, fmt.Errorf("the gateway %s lists no chat node", t.gateway)
	}
	// Visitors, created before anything is measured.
	began := time.Now()
	vrs, err := createVisitors(ctx, t.gatewayClient(), p.visitors)
	if err != nil {
		return Result{}, err
	}
	for i, v := range vrs {
		r.vs = append(r.vs, &supportVisitor{idx: i, id: v.Visitor, token: v.Token, node: i % k,
			assigned: make(chan struct{}), closed: make(chan struct{}), answers: make(chan int, p.messages)})
		r.byID[v.Visitor] = i
	}
	cm.logf("%s: created %d visitors in %.1fs", t.name, p.visitors, time.Since(began).Seconds())

	agents := make([]*supportAgent, p.agents)
	for i := range agents {
		agents[i] = &supportAgent{idx: i, name: at.user(i), node: i % k, jobs: make(chan agentJob, 4*p.capacity+64)}
		r.agentOf[agents[i].name] = i % k
	}
	defer func() {
		var cs []*client
		for _, ag := range agents {
			if ag.c != nil {
				cs = append(cs, ag.c)
			}
		}
		closeAll(cs)
	}()
	if err := r.agentsUp(ctx, at, agents); err != nil {
		return Result{}, err
	}
	cm.logf("%s: %d agents of capacity %d available on %d nodes", t.name, p.agents, p.capacity, k)

	// The agents' workers, each answering one conversation at a time.
	wctx, stopWorkers := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for _, ag := range agents {
		for range p.capacity {
			workers.Go(func() { r.agentWork(wctx, ag) })
		}
	}

	m := newMeter(t)
	m.begin(ctx)
	start := time.Now().Add(50 * time.Millisecond)
	due := arrivals(start, p.visitors, p.rate)
	r.deadline = due[len(due)-1].Add(p.timeout)
	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Go(func() { r.progressLoop(pctx, label+" "+t.name, start, cm.progress) })

	var visitors sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	for i, d := range due {
		if w := time.Until(d); w > 0 {
			timer.Reset(w)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		vs := r.vs[i]
		visitors.Go(func() { r.visit(ctx, t.dialer, vs) })
	}
	timer.Stop()
	visitors.Wait()
	end := time.Now()
	m.end(ctx, r.qGot.Load()+r.aGot.Load())
	stopProgress()
	pwg.Wait()
	stopWorkers()
	workers.Wait()
	left := r.agentsDown(ctx, agents)

	res := r.result(label, t.name, k, end.Sub(start))
	res.finishMeter(ctx, m)
	if left > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("the agents still held %d conversations at the end, and closed them", left))
	}
	if res.Support.StaleClosed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("the leader gave the bench agents %d conversations left open by earlier runs; they closed them", res.Support.StaleClosed))
	}
	res.LoadAvgStart, res.LoadAvgEnd = load0, loadAvg()
	return res, ctx.Err()
}

// makeAgents makes at's users 0..p.agents-1 agents of p.capacity in the
// store, enabled, as `chat admin agent add` and `set` do: an agent an
// earlier run made keeps its capacity unless it is set again.
func makeAgents(ctx context.Context, p supportParams, at *target) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := history.Open(octx, p.mongo, p.mongoDB)
	if err != nil {
		return fmt.Errorf("support: the agents are made agents in the cluster's MongoDB (--mongo, --mongo-db): %w", err)
	}
	defer store.Close(context.WithoutCancel(ctx))
	disabled := false
	for i := range p.agents {
		created, _, err := store.AddAgent(octx, at.user(i), p.capacity)
		if err == nil && !created {
			err = store.UpdateAgent(octx, at.user(i), &p.capacity, &disabled)
		}
		if err != nil {
			return fmt.Errorf("support: making %s an agent in %s database %q: %w", at.user(i), p.mongo, p.mongoDB, err)
		}
	}
	return nil
}

// createVisitors makes n visitors at the gateway, prepareConc at a time.
func createVisitors(ctx context.Context, gw *chatclient.Gateway, n int) ([]protocol.VisitorReply, error) {
	out := make([]protocol.VisitorReply, n)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, prepareConc)
	for i := range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			v, err := gw.Visitor(ctx, "chatbench visitor "+strconv.Itoa(i), "bench")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = visitorError(gw.URL, n, err)
				}
				return
			}
			out[i] = v
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, ctx.Err()
}

// visitorError explains a failed POST /api/visitor; a 429 is the gateway's
// bound on the visitors one address creates.
func visitorError(gateway string, n int, err error) error {
	var he *chatclient.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusTooManyRequests {
		return fmt.Errorf("support: %s refused to create more visitors (429, %s): the gateway bounds the visitors one address creates a minute "+
			"(gateway flag --visitors-per-minute, env CHAT_VISITORS_PER_MINUTE, default %d) and this run creates %d from this one address; "+
			"start the gateway with CHAT_VISITORS_PER_MINUTE=0 (no bound) or a bound of at least %d",
			gateway, he.Msg, accounts.DefaultVisitorsPerMinute, n, n)
	}
	return fmt.Errorf("support: creating a visitor at %s: %w", gateway, err)
}

// agentsUp logs every agent in on its node, closes what it held from an
// earlier run and sets it available, waiting (bounded) for the leader to
// know it as an agent of the right capacity.
func (r *supportRun) agentsUp(ctx context.Context, at *target, agents []*supportAgent) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, ag := range agents {
		wg.Go(func() {
			err := r.agentUp(ctx, at, ag)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("support: agent %s: %w", ag.name, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

func (r *supportRun) agentUp(ctx context.Context, at *target, ag *supportAgent) error {
	cctx, cancel := context.WithTimeout(ctx, agentReadyWait)
	defer cancel()
	c, err := at.connectPush(cctx, ag.idx, ag.node, func(action, data []byte, now time.Time) { r.agentPush(ag, action, data, now) })
	if err != nil {
		return err
	}
	ag.c = c
	// The leader reads the operator's agent changes every 2 s: until then
	// it answers 403 (not an agent) or has the old capacity. An empty
	// status changes nothing: the agent stays away meanwhile.
	wait := retryMin
	for {
		var st protocol.AgentState
		err := c.do(cctx, protocol.ActionAgentStatus, protocol.AgentStatusData{}, &st)
		if err == nil && st.Capacity == r.p.capacity {
			break
		}
		var re *replyError
		if err != nil && !(errors.As(err, &re) && (re.Code == protocol.CodeForbidden || retryable(err))) {
			return fmt.Errorf("agentStatus: %w", err)
		}
		if err == nil {
			err = fmt.Errorf("capacity %d", st.Capacity)
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("not an agent of capacity %d within %v (the leader applies agent changes within 2 s): %w", r.p.capacity, agentReadyWait, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
	// What it holds from an earlier run goes, so that its capacity is
	// this run's.
	var held protocol.SupportConvsReply
	if err := c.do(cctx, protocol.ActionSupportConvs, protocol.Empty{}, &held); err != nil {
		return fmt.Errorf("supportConvs: %w", err)
	}
	for _, sc := range held.Convs {
		if err := c.do(cctx, protocol.ActionSupportClose, protocol.ConvData{Conv: sc.Conv}, nil); err != nil {
			return fmt.Errorf("closing %s, held from an earlier run: %w", sc.Conv, err)
		}
		r.closedStale(sc.Conv)
	}
	var st protocol.AgentState
	if err := c.do(cctx, protocol.ActionAgentStatus, protocol.AgentStatusData{Status: protocol.AgentAvailable}, &st); err != nil {
		return fmt.Errorf("agentStatus available: %w", err)
	}
	if st.Status != protocol.AgentAvailable {
		return fmt.Errorf("agentStatus available: the leader says %q", st.Status)
	}
	return nil
}

// closedStale counts a conversation of an earlier run an agent closed,
// once however often it was closed.
func (r *supportRun) closedStale(conv string) {
	r.staleMu.Lock()
	fresh := !r.staleIn[conv]
	r.staleIn[conv] = true
	r.staleMu.Unlock()
	if fresh {
		r.stale.Add(1)
	}
}

// agentsDown closes whatever the agents still hold and then sets them
// away, so that they take nothing more (away first would put what they
// hold back at the front of the queue), and returns how many
// conversations they held. A failure only leaves the cluster as its
// grace rules have it.
func (r *supportRun) agentsDown(ctx context.Context, agents []*supportAgent) int {
	var left atomic.Int64
	var wg sync.WaitGroup
	for _, ag := range agents {
		if ag.c == nil {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			var held protocol.SupportConvsReply
			if ag.c.do(cctx, protocol.ActionSupportConvs, protocol.Empty{}, &held) == nil {
				for _, sc := range held.Convs {
					left.Add(1)
					_ = ag.c.do(cctx, protocol.ActionSupportClose, protocol.ConvData{Conv: sc.Conv}, nil)
				}
			}
			_ = ag.c.do(cctx, protocol.ActionAgentStatus, protocol.AgentStatusData{Status: protocol.AgentAway}, nil)
		})
	}
	wg.Wait()
	return int(left.Load())
}

// agentPush handles a push to agent ag. Read loop of ag's connection:
// it hands work to ag's workers and never waits for them.
func (r *supportRun) agentPush(ag *supportAgent, action, data []byte, now time.Time) {
	switch string(action) {
	case protocol.PushMessage:
		var m protocol.Message
		if json.Unmarshal(data, &m) == nil {
			r.question(ag, m, now)
		}
	case protocol.PushAssigned:
		var p protocol.AssignedPush
		if json.Unmarshal(data, &p) != nil {
			return
		}
		if _, ours := r.byID[p.Visitor]; !ours {
			r.enqueue(ag, agentJob{conv: p.Conv, v: -1})
			return
		}
		// Messages written before the agent had it come with it.
		for _, m := range p.Messages {
			r.question(ag, m, now)
		}
	case protocol.PushUnassigned:
		r.requeued.Add(1)
	}
}

// question handles a message pushed to agent ag: a question of this run's
// visitor, the first time, is measured and answered.
func (r *supportRun) question(ag *supportAgent, m protocol.Message, now time.Time) {
	kind, v, n, sent, ok := parseSupportText(r.id, m.Text)
	if !ok || kind != 'q' || v >= len(r.vs) || r.vs[v].id != m.From {
		return
	}
	vs := r.vs[v]
	vs.mu.Lock()
	fresh := n > vs.asked
	if fresh {
		vs.asked = n
	}
	vs.mu.Unlock()
	if !fresh {
		r.dups.Add(1)
		return
	}
	r.qGot.Add(1)
	r.v2a.record(v, now.Sub(sent))
	r.enqueue(ag, agentJob{conv: m.Conv, v: v, j: n})
}

// enqueue hands a job to ag's workers; a full queue (more than the agent
// can hold) is counted, never waited on.
func (r *supportRun) enqueue(ag *supportAgent, j agentJob) {
	select {
	case ag.jobs <- j:
	default:
		r.count("agent", "queue", "full")
	}
}

// agentWork answers questions and closes stale conversations for ag until
// ctx ends.
func (r *supportRun) agentWork(ctx context.Context, ag *supportAgent) {
	for {
		var j agentJob
		select {
		case <-ctx.Done():
			return
		case j = <-ag.jobs:
		}
		if j.v < 0 {
			err := r.retry(ctx, ag.c, "agent", protocol.ActionSupportClose, func(ctx context.Context) error {
				return ag.c.do(ctx, protocol.ActionSupportClose, protocol.ConvData{Conv: j.conv}, nil)
			})
			if err == nil {
				r.closedStale(j.conv)
			}
			continue
		}
		text := supportText(r.id, 'a', j.v, j.j, time.Now())
		cmid := r.id + "-a" + strconv.Itoa(j.v) + "-" + strconv.Itoa(j.j)
		err := r.retry(ctx, ag.c, "agent", protocol.ActionChat, func(ctx context.Context) error {
			return ag.c.do(ctx, protocol.ActionChat, protocol.ChatData{Conv: j.conv, Text: text, ClientMsgID: cmid}, nil)
		})
		if err == nil {
			r.aSent.Add(1)
		}
	}
}

// visitorPush handles a push to visitor vs. Read loop of its connection.
func (r *supportRun) visitorPush(vs *supportVisitor, action, data []byte, now time.Time) {
	switch string(action) {
	case protocol.PushAssigned:
		var p protocol.AssignedPush
		if json.Unmarshal(data, &p) != nil {
			return
		}
		vs.mu.Lock()
		first := !vs.isAssigned
		if first {
			vs.isAssigned, vs.assignedAt, vs.agent = true, now, p.Agent
		}
		vs.mu.Unlock()
		if first {
			close(vs.assigned)
		}
	case protocol.PushMessage:
		var m protocol.Message
		if json.Unmarshal(data, &m) != nil {
			return
		}
		kind, v, n, sent, ok := parseSupportText(r.id, m.Text)
		if !ok || kind != 'a' || v != vs.idx {
			return
		}
		vs.mu.Lock()
		fresh := n > vs.answered
		if fresh {
			vs.answered = n
		}
		vs.mu.Unlock()
		if !fresh {
			r.dups.Add(1)
			return
		}
		r.aGot.Add(1)
		r.a2v.record(vs.idx, now.Sub(sent))
		select {
		case vs.answers <- n:
		default: // more answers than questions: not this run's agent
		}
	case protocol.PushClosed:
		var p protocol.ClosedPush
		if json.Unmarshal(data, &p) != nil || p.By == vs.id {
			return
		}
		vs.mu.Lock()
		first := !vs.isClosed
		vs.isClosed = true
		vs.mu.Unlock()
		if first {
			close(vs.closed)
		}
	}
}

// visit is one visitor's whole stay: connect, open, wait to be assigned,
// write its messages one at a time, each after the answer to the one
// before, and close. It gives up at the run's bound and always closes
// what it opened.
func (r *supportRun) visit(ctx context.Context, d *dialer, vs *supportVisitor) {
	r.started.Add(1)
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := d.dialPush(cctx, r.p.agents+vs.idx, r.nodes[vs.node].WS, nil,
		func(action, data []byte, now time.Time) { r.visitorPush(vs, action, data, now) })
	if err != nil {
		r.fail("visitor", "connect", err)
		r.failedOpen.Add(1)
		return
	}
	defer c.close()
	if err := c.login(cctx, vs.id, "", vs.token); err != nil {
		r.fail("visitor", protocol.ActionLogin, err)
		r.failedOpen.Add(1)
		return
	}
	bctx, cancelBound := context.WithDeadline(ctx, r.deadline)
	defer cancelBound()
	asked := time.Now()
	r.firstAt.CompareAndSwap(0, asked.UnixNano())
	var sc protocol.SupportConv
	if err := r.retry(bctx, c, "visitor", protocol.ActionSupport, func(ctx context.Context) error {
		return c.do(ctx, protocol.ActionSupport, protocol.Empty{}, &sc)
	}); err != nil {
		r.failedOpen.Add(1)
		return
	}
	r.opened.Add(1)
	closed := false
	defer func() {
		if closed {
			return
		}
		// Leave nothing open: a queued conversation of a visitor who is
		// gone would be the next run's agents' first.
		xctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := c.do(xctx, protocol.ActionSupportClose, protocol.ConvData{Conv: sc.Conv}, nil); err != nil {
			r.fail("visitor", protocol.ActionSupportClose, err)
		}
	}()

	select {
	case <-vs.assigned:
	case <-vs.closed:
		r.closedByOther.Add(1)
		return
	case <-bctx.Done():
		return // never assigned
	}
	vs.mu.Lock()
	at, agent := vs.assignedAt, vs.agent
	vs.mu.Unlock()
	r.wait.record(vs.idx, at.Sub(asked))
	r.assigned.Add(1)
	for {
		last := r.lastAssigned.Load()
		if at.UnixNano() <= last || r.lastAssigned.CompareAndSwap(last, at.UnixNano()) {
			break
		}
	}
	if node, ok := r.agentOf[agent]; ok && node != vs.node {
		r.cross.Add(1)
	}

	var sent time.Time
	for n := 1; n <= r.p.messages; n++ {
		if !sent.IsZero() {
			if d := time.Until(sent.Add(visitorGap)); d > 0 {
				select {
				case <-bctx.Done():
					r.unfinished.Add(1)
					return
				case <-time.After(d):
				}
			}
		}
		sent = time.Now()
		text := supportText(r.id, 'q', vs.idx, n, sent)
		cmid := r.id + "-q" + strconv.Itoa(vs.idx) + "-" + strconv.Itoa(n)
		if err := r.retry(bctx, c, "visitor", protocol.ActionChat, func(ctx context.Context) error {
			return c.do(ctx, protocol.ActionChat, protocol.ChatData{Conv: sc.Conv, Text: text, ClientMsgID: cmid}, nil)
		}); err != nil {
			r.unfinished.Add(1)
			return
		}
		r.qSent.Add(1)
		for answered := false; !answered; {
			select {
			case got := <-vs.answers:
				answered = got >= n
			case <-vs.closed:
				r.closedByOther.Add(1)
				r.unfinished.Add(1)
				return
			case <-bctx.Done():
				r.unfinished.Add(1)
				return
			}
		}
	}
	if err := r.retry(bctx, c, "visitor", protocol.ActionSupportClose, func(ctx context.Context) error {
		return c.do(ctx, protocol.ActionSupportClose, protocol.ConvData{Conv: sc.Conv}, nil)
	}); err != nil {
		r.unfinished.Add(1)
		return
	}
	closed = true
	r.finished.Add(1)
}

// progressLoop prints one line a second until ctx ends.
func (r *supportRun) progressLoop(ctx context.Context, label string, start time.Time, out func(string)) {
	if out == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastStarted, lastAssigned int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s, a := r.started.Load(), r.assigned.Load()
			_, errs := r.errorCounts()
			out(fmt.Sprintf("[%s] %4.0fs arrived %d/%d (%d/s) waiting %d assigned %d (%d/s) finished %d messages visitor→agent %d agent→visitor %d errors %d",
				label, now.Sub(start).Seconds(), s, r.p.visitors, s-lastStarted, max(0, r.opened.Load()-a), a, a-lastAssigned,
				r.finished.Load(), r.qGot.Load(), r.aGot.Load(), errs))
			lastStarted, lastAssigned = s, a
		}
	}
}

// result turns the run's counts into a Result; took is from the first
// arrival to the end of the last visit.
func (r *supportRun) result(label, target string, nodes int, took time.Duration) Result {
	errs, nerr := r.errorCounts()
	s := &SupportResult{
		Visitors: r.p.visitors, Rate: r.p.rate, Agents: r.p.agents, Capacity: r.p.capacity, Messages: r.p.messages,
		BoundSeconds: r.p.timeout.Seconds(),
		Opened:       r.opened.Load(), Assigned: r.assigned.Load(), FailedToOpen: r.failedOpen.Load(),
		Finished: r.finished.Load(), Unfinished: r.unfinished.Load(), CrossNode: r.cross.Load(),
		Wait: summarize(r.wait.merged()), VisitorToAgent: summarize(r.v2a.merged()), AgentToVisitor: summarize(r.a2v.merged()),
		StaleClosed: r.stale.Load(), Requeued: r.requeued.Load(), ClosedByOther: r.closedByOther.Load(),
		ErrorsByCode: errs,
	}
	s.NeverAssigned = int64(r.p.visitors) - s.Assigned
	s.AssignedPerSec, s.AssignSeconds = assignRate(s.Assigned, r.firstAt.Load(), r.lastAssigned.Load())
	sent, got := r.qSent.Load()+r.aSent.Load(), r.qGot.Load()+r.aGot.Load()
	return Result{
		Scenario: "support", Label: label, Target: target,
		Params: map[string]any{"visitors": r.p.visitors, "rate": r.p.rate, "agents": r.p.agents, "capacity": r.p.capacity,
			"messages": r.p.messages, "boundSeconds": r.p.timeout.Seconds(), "nodes": nodes},
		Seconds: round3(took.Seconds()),
		Sent:    sent, Acked: sent, Errors: nerr, Delivered: got, Duplicates: r.dups.Load(),
		Expected: sent, Lost: max(0, sent-got), LostDeliveries: max(0, sent-got),
		Support: s,
	}
}

// assignRate is n assignments over the time from first to last (unix
// ns), and that time in seconds.
func assignRate(n, first, last int64) (perSec, secs float64) {
	if n == 0 || first == 0 || last <= first {
		return 0, 0
	}
	d := time.Duration(last - first).Seconds()
	return round3(float64(n) / d), round3(d)
}

// errorKeys lists the keys of ErrorsByCode, most frequent first.
func errorKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// errorList is "visitor chat 429: 3, agent chat 503: 1", or "none".
func errorList(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range errorKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
