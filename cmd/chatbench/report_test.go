package main

import (
	"strings"
	"testing"
	"time"
)

// The previous benchmark, as committed, reads as a run and its figures
// appear beside this run's.
func TestReportPrevious(t *testing.T) {
	prev, err := readRun("../../docs/benchmarks-previous.json")
	if err != nil {
		t.Fatal(err)
	}
	if prev.Source == "" || len(prev.Results) == 0 {
		t.Fatalf("previous run without source or results: %+v", prev)
	}
	dm := func(target string, p99 float64) Result {
		return Result{Scenario: "dm", Label: "dm 2000/s", Target: target, DeliveredPerSec: 1990, DeliverySeconds: 10.05, Seconds: 10,
			Latency: LatencySummary{P50Ms: 1, P99Ms: p99}, Params: map[string]any{"rate": 2000.0, "crossShare": 1.0}}
	}
	c, b := dm("cluster", 8), dm("baseline", 2)
	conn := Result{Scenario: "connect", Label: "connect 10000 at 1000/s on 1 node", Target: "cluster",
		Connect: &ConnectResult{Conns: 10000, BytesPerConn: 11 * 1024, Nodes: []NodeMemory{{Admin: "a", ConnsAfter: 10000, BytesPerConn: 11 * 1024}}}}
	run := Run{Command: "chatbench", Started: time.Now(), Results: []Result{c, b, conn}, Comparisons: compareAll([]Result{c, b})}
	var md strings.Builder
	if err := renderMarkdown(&md, []Run{run}, reportOptions{previous: &prev}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| scenario | figure | cluster | previous | baseline | ratio |",
		"| dm 2000/s | latency p99 (ms) | 8 | 204 | 2 | 4× |",
		"| dm 2000/s | delivered per second | 1990 | 2000 | 1990 | 1× |",
		"| connect 10000 at 1000/s on 1 node | resident memory per connection (KiB) | 11 | 27.6 | – | – |",
		"For connect, the previous benchmark's one connect run: connect 3000 at 1000/s.",
		"counted delivered per second over the send phase",
		"the previous benchmark ran 2026-11-24 21:39 UTC",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

func TestReportCPUAndTimeline(t *testing.T) {
	r := Result{Scenario: "dm", Label: "dm 10000/s", Target: "cluster", Seconds: 10, DeliverySeconds: 14.5, Delivered: 30, DeliveredPerSec: 2,
		DeliveredBySecond: []int64{5, 5, 5, 5, 5, 5}, Params: map[string]any{"rate": 10000.0}, LoadAvgStart: "1.00 0.50 0.20", LoadAvgEnd: "2.00 0.90 0.30",
		CPU: &CPUResult{WindowSeconds: 10, Delivered: 20000, ChatPathUsPerMsg: 100, ServerUsPerMsg: 101, BenchUsPerMsg: 12,
			Processes: []ProcCPU{{Name: "redis", Group: groupRedis, UsPerMsg: 30}, {Name: "node-n1", Group: groupNode, UsPerMsg: 70}, {Name: "gateway", Group: groupGateway, UsPerMsg: 1}}}}
	var md strings.Builder
	if err := renderMarkdown(&md, []Run{{Results: []Result{r}}}, reportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| run | target | window s | pushes | n1 | redis | gateway | chat path | server | chatbench | load at start | load at end |",
		"| dm 10000/s | cluster | 10 | 20,000 | 70 | 30 | 1 | 100 | 101 | 12 | 1.00 0.50 0.20 | 2.00 0.90 0.30 |",
		"- dm 10000/s on cluster (send phase 10 s, offered 10,000/s): 5, 5, 5, 5, 5, 5",
		"| dm 10000/s | server CPU per delivery (µs) | 101 | – | – |",
		"| dm 10000/s | cluster | 10.0 | 14.5 |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

func TestReportSupport(t *testing.T) {
	s := &SupportResult{Visitors: 60, Rate: 10, Agents: 4, Capacity: 3, Messages: 5, BoundSeconds: 60, Opened: 60, Assigned: 58, NeverAssigned: 2,
		FailedToOpen: 1, Finished: 57, Unfinished: 1, CrossNode: 40, AssignedPerSec: 9.7, AssignSeconds: 6,
		Wait: LatencySummary{P50Ms: 12, P90Ms: 250, P99Ms: 900, MaxMs: 1200}, VisitorToAgent: LatencySummary{P50Ms: 2, P99Ms: 8},
		AgentToVisitor: LatencySummary{P50Ms: 3, P99Ms: 9}, ErrorsByCode: map[string]int64{"visitor chat 429": 2, "visitor connect closed": 1}}
	r := Result{Scenario: "support", Label: supportParams{visitors: 60, rate: 10, agents: 4, capacity: 3, messages: 5}.label(), Target: "cluster",
		Errors: 3, Params: map[string]any{"nodes": 3, "rate": 10.0}, Support: s, Notes: []string{noBaselineNote}}
	var md strings.Builder
	if err := renderMarkdown(&md, []Run{{Results: []Result{r}}}, reportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## Customer service",
		"| support 60 visitors at 10/s, 4 agents × 3, 5 messages, bound 60s | 3 | 58/60 | 2 (1) | 57 | 1 | 40 | 9.70 | 12 | 250 | 900 | 1200 | 2 | 8 | 3 | 9 | visitor chat 429: 2, visitor connect closed: 1 |",
		"| support 60 visitors at 10/s, 4 agents × 3, 5 messages | wait for an agent p90 (ms) | 250 | – | – |",
		"| support 60 visitors at 10/s, 4 agents × 3, 5 messages | visitors never assigned | 2 | – | – |",
		"support 60 visitors at 10/s, 4 agents × 3, 5 messages on cluster: no baseline",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	if strings.Contains(md.String(), "| scenario | target | send s |") {
		t.Error("a details table of message runs, with none")
	}
	var sum strings.Builder
	printSummary(&sum, Run{Results: []Result{r}})
	if !strings.Contains(sum.String(), "never assigned 2 (1 could not open)") || !strings.Contains(sum.String(), "wait p50 12.0 ms p90 250.0 ms") {
		t.Errorf("summary %q", sum.String())
	}
}

// The typing and read table sets the chatter phases of a run beside its
// quiet phases, and names the run without chatter for reference only.
func TestWriteChatter(t *testing.T) {
	dm := func(label string, p99 float64, ch *ChatterResult) Result {
		return Result{Scenario: "dm", Label: label, Target: "cluster", Latency: LatencySummary{P99Ms: p99},
			Params: map[string]any{"rate": 2000.0}, Chatter: ch}
	}
	within := &ChatterResult{PerSec: 1000, PhaseMs: 1000, GuardMs: 250,
		Quiet: LatencySummary{Count: 22500, P50Ms: 2, P99Ms: 20}, During: LatencySummary{Count: 22500, P50Ms: 2.2, P99Ms: 21}}
	over := &ChatterResult{PerSec: 1000, PhaseMs: 1000, GuardMs: 250,
		Quiet: LatencySummary{Count: 22500, P50Ms: 2, P99Ms: 20}, During: LatencySummary{Count: 22500, P50Ms: 3, P99Ms: 30}}
	var b strings.Builder
	writeChatter(&b, []Result{dm("dm 2000/s", 50, nil), dm("dm 2000/s + chatter", 25, within)})
	if !strings.Contains(b.String(), "| dm 2000/s + chatter | cluster | 1000 | 0 | 22500 / 22500 | 2 / 2.20 | 20 | 21 | +5% | yes | 50 |") {
		t.Fatalf("table:\n%s", b.String())
	}
	b.Reset()
	writeChatter(&b, []Result{dm("dm 2000/s + chatter", 25, over)})
	if !strings.Contains(b.String(), "| 20 | 30 | +50% | no | – |") || !strings.Contains(b.String(), "phases of 1000 ms") {
		t.Fatalf("table:\n%s", b.String())
	}
	if note := chatterNote(dm("dm 2000/s + chatter", 25, over), dm("dm 2000/s", 50, nil)); !strings.Contains(note, "+50%") {
		t.Fatalf("note %q", note)
	}
}
