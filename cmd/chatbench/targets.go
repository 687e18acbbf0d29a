package main

import (
	"fmt"
	"sort"
	"strings"
)

// targetRow is one performance target beside the measurement.
type targetRow struct {
	Target   string
	Measured string
	Status   string // met, not met, not measured
}

const (
	statusMet         = "met"
	statusNotMet      = "**not met**"
	statusNotMeasured = "not measured"
)

func status(ok bool) string {
	if ok {
		return statusMet
	}
	return statusNotMet
}

// The project's performance targets, as the targets table names them.
const (
	targetCPU      = "Server CPU per cross-node direct message at 2,000 msg/s (nodes, Redis, store, ZooKeeper together, from /proc, divided by messages delivered): ≤ 120 µs"
	targetP99      = "Cross-node direct messages: p99 ≤ 15 ms at 5,000 msg/s"
	targetRate     = "Cross-node direct messages: sustained ≥ 10,000 msg/s delivered with p99 ≤ 50 ms and 0 lost"
	targetRelay    = "Cross-node dm at 2,000 msg/s: p99 within 3× the relay's"
	targetRoom     = "A 1,000-member room over 3 nodes: ≥ 150,000 deliveries/s at p99 ≤ 50 ms"
	targetHistory  = "History: the writer keeps up at 10,000 msg/s with backlog under one second of messages"
	targetMemory   = "≤ 12 KiB resident memory per idle logged-in connection at 10,000 connections per node"
	targetFailover = "Failover: 0 lost, 0 duplicates, routing back within 1.8 s of a leader kill"
)

// keptUpShare is the share of its offered rate a run must deliver per
// second to count as keeping up with it. The delivery window runs from the
// first scheduled send to the last delivery, so it is one latency longer
// than the send phase: a run that keeps up delivers just under what it
// offers (99.5% for a 10 s run whose last message takes 50 ms).
const keptUpShare = 0.98

// sustainedP99 bounds the latency of a run that counts as sustained.
const sustainedP99 = 1000 // ms

// offered is the deliveries per second a run asked for: its rate of
// messages times the deliveries each owes.
func offered(r Result) float64 {
	rate, _ := r.Params["rate"].(float64)
	return rate * float64(max(1, expectedPer(r)))
}

// keptUp reports whether a run delivered at least keptUpShare of what it
// offered per second.
func keptUp(r Result) bool {
	o := offered(r)
	return o > 0 && r.DeliveredPerSec >= keptUpShare*o
}

// sustained reports whether a run delivered everything it was asked to,
// live, at its rate and without a growing backlog: it kept up, nothing was
// lost, unanswered, refused or left for sync, and p99 stayed under a
// second.
func sustained(r Result) bool {
	return keptUp(r) && r.Lost == 0 && r.Unacked == 0 && r.Recovered == 0 && r.Errors == 0 && r.Latency.P99Ms <= sustainedP99
}

// expectedPer is the deliveries one message owes (room members).
func expectedPer(r Result) int {
	if r.Scenario == "room" {
		switch m := r.Params["members"].(type) {
		case float64:
			return int(m)
		case int:
			return m
		}
	}
	return 1
}

func rateOf(r Result) float64 {
	switch v := r.Params["rate"].(type) {
	case float64:
		return v
	case int:
		return float64(v)
	}
	return 0
}

func paramFloat(r Result, key string) (float64, bool) {
	switch v := r.Params[key].(type) {
	case float64:
		return v, true
	case int:
		return float64(v), true
	}
	return 0, false
}

// runsOf returns the results of one scenario on one target, in run order.
func runsOf(results []Result, scenario, target string) []Result {
	var out []Result
	for _, r := range results {
		if r.Scenario == scenario && r.Target == target {
			out = append(out, r)
		}
	}
	return out
}

// atRate returns the first run at exactly rate, or nil.
func atRate(rs []Result, rate float64) *Result {
	for i := range rs {
		if rateOf(rs[i]) == rate {
			return &rs[i]
		}
	}
	return nil
}

// crossNote says so when not every pair of a dm run was across nodes.
func crossNote(r Result) string {
	if c, ok := paramFloat(r, "crossShare"); ok && c < 1 {
		return fmt.Sprintf(" (only %.0f%% of the pairs across nodes)", c*100)
	}
	return ""
}

// lostNote is "N lost" with the deliveries found by sync, if any.
func lostNote(r Result) string {
	s := fmt.Sprintf("%d lost", r.Lost)
	if r.Recovered > 0 {
		s += fmt.Sprintf(", %d not pushed but found by sync", r.Recovered)
	}
	return s
}

// evalTargets compares the cluster's results (and the baseline's, for the
// ratio) with the performance targets.
func evalTargets(results []Result) []targetRow {
	dm := runsOf(results, "dm", "cluster")
	rows := []targetRow{
		cpuTarget(dm),
		p99Target(dm),
		rateTarget(dm),
		relayTarget(dm, runsOf(results, "dm", "baseline")),
		roomTarget(runsOf(results, "room", "cluster")),
		historyTarget(dm),
		memoryTarget(runsOf(results, "connect", "cluster")),
		failoverTarget(runsOf(results, "failover", "cluster")),
	}
	return rows
}

func noRun(target, what string) targetRow {
	return targetRow{target, what, statusNotMeasured}
}

func cpuTarget(dm []Result) targetRow {
	r := atRate(dm, 2000)
	if r == nil {
		return noRun(targetCPU, "no dm run at 2,000 msg/s")
	}
	if r.CPU == nil || len(r.CPU.Processes) == 0 {
		why := "no process CPU (give --pid-dir)"
		if r.CPU != nil && len(r.CPU.Notes) > 0 {
			why = r.CPU.Notes[0]
		}
		return noRun(targetCPU, why)
	}
	by := map[string]float64{}
	for _, p := range r.CPU.Processes {
		by[p.Group] += p.UsPerMsg
	}
	meas := fmt.Sprintf("%s µs per message (nodes %s, Redis %s, store %s, ZooKeeper %s; gateway %s; chatbench itself %s) over %s messages in %s s",
		num(r.CPU.ChatPathUsPerMsg), num(by[groupNode]), num(by[groupRedis]), num(by[groupStore]), num(by[groupZooKeeper]), num(by[groupGateway]),
		num(r.CPU.BenchUsPerMsg), thousands(float64(r.CPU.Delivered)), num(r.CPU.WindowSeconds))
	return targetRow{targetCPU, meas + crossNote(*r), status(r.CPU.ChatPathUsPerMsg > 0 && r.CPU.ChatPathUsPerMsg <= 120)}
}

func p99Target(dm []Result) targetRow {
	r := atRate(dm, 5000)
	if r == nil {
		return noRun(targetP99, "no dm run at 5,000 msg/s")
	}
	meas := fmt.Sprintf("p99 %s ms, %s msg/s delivered of 5,000 offered, %s", num(r.Latency.P99Ms), thousands(r.DeliveredPerSec), lostNote(*r))
	return targetRow{targetP99, meas + crossNote(*r), status(r.Latency.P99Ms <= 15 && keptUp(*r))}
}

func rateTarget(dm []Result) targetRow {
	var best *Result // highest sustained rate
	for i := range dm {
		if sustained(dm[i]) && (best == nil || rateOf(dm[i]) > rateOf(*best)) {
			best = &dm[i]
		}
	}
	bestNote := "no rate sustained"
	if best != nil {
		bestNote = fmt.Sprintf("the highest rate sustained was %s msg/s (p99 %s ms)", thousands(rateOf(*best)), num(best.Latency.P99Ms))
	}
	var top *Result // the highest rate at or over 10,000
	for i := range dm {
		if rateOf(dm[i]) >= 10000 && (top == nil || rateOf(dm[i]) > rateOf(*top)) {
			top = &dm[i]
		}
	}
	if top == nil {
		return noRun(targetRate, "no dm run at 10,000 msg/s or more; "+bestNote)
	}
	ok := false
	for _, r := range dm {
		if rateOf(r) >= 10000 && keptUp(r) && r.Latency.P99Ms <= 50 && r.Lost == 0 && r.Unacked == 0 {
			ok = true
		}
	}
	meas := fmt.Sprintf("%s msg/s delivered of %s offered (%s s to deliver a %s s send phase), p99 %s ms, %s; %s",
		thousands(top.DeliveredPerSec), thousands(rateOf(*top)), num(top.DeliverySeconds), num(top.Seconds), num(top.Latency.P99Ms), lostNote(*top), bestNote)
	return targetRow{targetRate, meas + crossNote(*top), status(ok)}
}

func relayTarget(dm, base []Result) targetRow {
	c, b := atRate(dm, 2000), atRate(base, 2000)
	switch {
	case c == nil:
		return noRun(targetRelay, "no dm run at 2,000 msg/s")
	case b == nil || b.Latency.P99Ms <= 0:
		return noRun(targetRelay, "no baseline run at 2,000 msg/s (--with-baseline)")
	}
	ratio := c.Latency.P99Ms / b.Latency.P99Ms
	meas := fmt.Sprintf("%s× (p99 %s ms against the relay's %s ms)", num(ratio), num(c.Latency.P99Ms), num(b.Latency.P99Ms))
	return targetRow{targetRelay, meas + crossNote(*c), status(ratio <= 3)}
}

func roomTarget(room []Result) targetRow {
	var big []Result
	for _, r := range room {
		m, _ := paramFloat(r, "members")
		n, _ := paramFloat(r, "nodes")
		if m >= 1000 && n >= 3 {
			big = append(big, r)
		}
	}
	if len(big) == 0 {
		return noRun(targetRoom, "no run of a room of 1,000 members or more over 3 nodes")
	}
	ok := false
	var parts []string
	for _, r := range big {
		if offered(r) >= 150000 && keptUp(r) && r.Latency.P99Ms <= 50 && r.Lost == 0 {
			ok = true
		}
		parts = append(parts, fmt.Sprintf("%s deliveries/s of %s offered at p99 %s ms, %d lost (%s)",
			thousands(r.DeliveredPerSec), thousands(offered(r)), num(r.Latency.P99Ms), r.Lost, r.Label))
	}
	meas := strings.Join(parts, "; ")
	top := 0.0
	for _, r := range big {
		top = max(top, offered(r))
	}
	if top < 150000 {
		return targetRow{targetRoom, meas + "; no run offered 150,000 deliveries/s", statusNotMeasured}
	}
	return targetRow{targetRoom, meas, status(ok)}
}

func historyTarget(dm []Result) targetRow {
	var top *Result
	for i := range dm {
		if rateOf(dm[i]) >= 10000 && (top == nil || rateOf(dm[i]) > rateOf(*top)) {
			top = &dm[i]
		}
	}
	if top == nil {
		return noRun(targetHistory, "no dm run at 10,000 msg/s or more")
	}
	h := top.History
	if h == nil {
		return noRun(targetHistory, "no node metrics (--admin): the backlog is the nodes' chat_history_backlog")
	}
	rate := rateOf(*top)
	meas := fmt.Sprintf("backlog %s messages at the end of the send phase of %s (%s s of messages), %s at the end of the run; %s msg/s stored during the send phase",
		thousands(h.BacklogSteadyEnd), top.Label, num(h.BacklogSteadyEnd/rate), thousands(h.BacklogEnd), thousands(h.PerSec))
	return targetRow{targetHistory, meas, status(h.BacklogSteadyEnd < rate)}
}

func memoryTarget(conn []Result) targetRow {
	var cr *ConnectResult
	for _, r := range conn {
		if r.Connect != nil && len(r.Connect.Nodes) > 0 {
			cr = r.Connect
		}
	}
	if cr == nil {
		return noRun(targetMemory, "no connect run with node metrics (--admin)")
	}
	worst, perNode := 0.0, 0.0
	var parts []string
	for _, n := range cr.Nodes {
		added := n.ConnsAfter - n.ConnsBefore
		if added < minConnsForMemory {
			continue
		}
		worst = max(worst, n.BytesPerConn)
		perNode = max(perNode, added)
		parts = append(parts, fmt.Sprintf("%s KiB at %s", num(n.BytesPerConn/1024), thousands(added)))
	}
	if len(parts) == 0 {
		return noRun(targetMemory, "no node gained connections")
	}
	sort.Strings(parts)
	meas := fmt.Sprintf("%s KiB per connection at worst (%s connections per node: %s)", num(worst/1024), thousands(perNode), strings.Join(parts, ", "))
	ok := worst > 0 && worst <= 12*1024
	if perNode < 0.99*10000 {
		st := statusNotMet
		if ok {
			st = "met at this count; not measured at 10,000"
		}
		return targetRow{targetMemory, meas, st}
	}
	return targetRow{targetMemory, meas, status(ok)}
}

func failoverTarget(fo []Result) targetRow {
	if len(fo) == 0 {
		return noRun(targetFailover, "no failover run")
	}
	r := fo[len(fo)-1]
	f := r.Failover
	if f == nil {
		return noRun(targetFailover, "the failover run killed nothing")
	}
	back := "routing was not seen back"
	if f.RestoredMs > 0 {
		back = fmt.Sprintf("routing back after %s s (new leader listed after %s s)", num(f.RestoredMs/1000), num(f.NewLeaderMs/1000))
	}
	meas := fmt.Sprintf("%d lost of %d acknowledged (%d found by sync), %d duplicates; %s", r.Lost, r.Acked, r.Recovered, r.Duplicates, back)
	return targetRow{targetFailover, meas, status(r.Acked > 0 && r.Lost == 0 && r.Duplicates == 0 && f.RestoredMs > 0 && f.RestoredMs <= 1800)}
}
