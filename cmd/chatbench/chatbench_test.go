package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatcluster/bench/baseline"
	"chatcluster/internal/testenv"
)

func TestPacer(t *testing.T) {
	start := time.Unix(100, 0)
	p := newPacer(start, 100) // every 10ms
	for i := range 5 {
		if got, want := p.next(), start.Add(time.Duration(i)*10*time.Millisecond); !got.Equal(want) {
			t.Fatalf("send %d due %v, want %v", i, got, want)
		}
	}
	for _, c := range []struct {
		at   time.Duration
		want int64
	}{{-time.Millisecond, 0}, {0, 1}, {9 * time.Millisecond, 1}, {10 * time.Millisecond, 2}, {time.Second, 101}} {
		if got := p.dueBy(start.Add(c.at)); got != c.want {
			t.Errorf("dueBy(start%+v) = %d, want %d", c.at, got, c.want)
		}
	}
	if got := senderStart(start, 10, 1, 4); !got.Equal(start.Add(25 * time.Millisecond)) {
		t.Errorf("senderStart = %v, want start+25ms", got)
	}
}

func TestPacerRunIsBounded(t *testing.T) {
	start := time.Now()
	n := 0
	newPacer(start, 1000).run(context.Background(), start.Add(50*time.Millisecond), func(time.Time) { n++ })
	if n != 50 {
		t.Fatalf("sent %d in 50ms at 1000/s, want 50", n)
	}
}

func TestIsCrossShare(t *testing.T) {
	for _, share := range []float64{0, 0.25, 0.67, 1} {
		n := 0
		for p := range 100 {
			if isCross(p, share) {
				n++
			}
		}
		if want := int(share * 100); n != want {
			t.Errorf("share %v: %d cross pairs of 100, want %d", share, n, want)
		}
	}
	if dmPlace(1, 3, 1) == dmPlace(0, 3, 1) || dmPlace(1, 3, 0) != dmPlace(0, 3, 0) {
		t.Error("dmPlace does not honour the cross share")
	}
}

func TestTracker(t *testing.T) {
	trk := newTracker("run1")
	now := time.Now()
	k1 := trk.add(now, 1, 0)
	k2 := trk.add(now, 2, 0)
	k3 := trk.add(now, 1, 0)
	k4 := trk.add(now, 1, 0)
	text := trk.text(k2, now)
	if k, ok := trk.parseText(text); !ok || k != k2 {
		t.Fatalf("parseText(%q) = %d %v", text, k, ok)
	}
	if _, ok := newTracker("other").parseText(text); ok {
		t.Fatal("a text of another run was taken")
	}
	trk.reply(0, k1, 0, now.Add(time.Millisecond), "", 0)
	trk.reply(0, k2, 0, now.Add(time.Millisecond), "", 0)
	trk.reply(0, k3, 429, now, "", 0)
	trk.deliver(0, k1, now.Add(2*time.Millisecond))
	trk.deliver(0, k1, now.Add(3*time.Millisecond)) // duplicate
	trk.deliver(0, k2, now.Add(4*time.Millisecond)) // one of two
	trk.deliver(0, 999, now)
	expected, lost, lostDel, unacked := trk.tally()
	if expected != 3 || lost != 1 || lostDel != 1 || unacked != 1 {
		t.Errorf("tally = expected %d lost %d lostDeliveries %d unacked %d, want 3 1 1 1", expected, lost, lostDel, unacked)
	}
	if c := trk.counts(); c.duplicates != 1 || trk.unknown.Load() != 1 || c.delivered != 2 || trk.failed.Load() != 1 || c.owed != 1 {
		t.Errorf("counters: dup %d unknown %d delivered %d failed %d owed %d", c.duplicates, trk.unknown.Load(), c.delivered, trk.failed.Load(), c.owed)
	}
	_ = k4
	s := summarize(trk.e2e.merged())
	if s.Count != 2 || s.P50Ms < 1.9 || s.P50Ms > 2.1 || s.MaxMs < 3.9 || s.MaxMs > 4.1 {
		t.Errorf("latency summary %+v, want 2 values of 2ms and 4ms", s)
	}
}

func TestParseMetrics(t *testing.T) {
	in := "# HELP process_resident_memory_bytes x\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1.2345e+07\nchat_connections_logged_in 12\nchat_pushes_out_total{kind=\"message\"} 3\n"
	got, err := parseMetrics(strings.NewReader(in), "process_resident_memory_bytes", "chat_connections_logged_in")
	if err != nil || got["process_resident_memory_bytes"] != 12345000 || got["chat_connections_logged_in"] != 12 || len(got) != 2 {
		t.Fatalf("parseMetrics = %v, %v", got, err)
	}
}

func TestCompareAndJSON(t *testing.T) {
	c := Result{Label: "dm 10/s", Target: "cluster", DeliveredPerSec: 10, Latency: LatencySummary{P50Ms: 4, P99Ms: 8}}
	b := Result{Label: "dm 10/s", Target: "baseline", DeliveredPerSec: 10, Latency: LatencySummary{P50Ms: 1, P99Ms: 2}}
	run := Run{Command: "chatbench", Results: []Result{c, b}, Comparisons: compareAll([]Result{c, b})}
	if len(run.Comparisons) != 1 {
		t.Fatalf("comparisons %+v", run.Comparisons)
	}
	byName := map[string]Figure{}
	for _, f := range run.Comparisons[0].Figures {
		byName[f.Name] = f
	}
	if byName["latency p50"].Ratio != 4 || byName["delivered per second"].Ratio != 1 || byName["errors"].Ratio != 0 {
		t.Errorf("figures %+v", byName)
	}
	raw, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	var back Run
	if err := json.Unmarshal(raw, &back); err != nil || back.Comparisons[0].Figures[1].Ratio != 4 {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	var md bytes.Buffer
	if err := renderMarkdown(&md, []Run{back}, reportOptions{command: "make bench"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| dm 10/s | latency p50 (ms) | 4 | 1 | 4× |") {
		t.Errorf("markdown lacks the ratio row:\n%s", md.String())
	}
}

func TestFlags(t *testing.T) {
	if _, err := parseFlags([]string{"--scenarios", "dm,bogus"}); err == nil {
		t.Error("unknown scenario accepted")
	}
	if _, err := parseFlags([]string{"--conns", "30000", "--scenarios", "connect"}); err == nil {
		t.Error("30000 connections accepted under --max-conns 15000")
	}
	c, err := parseFlags([]string{"--rates", "100, 200", "--scenarios", "dm,room"})
	if err != nil || len(c.rates) != 2 || c.connsNeeded() != 100 {
		t.Errorf("parseFlags = %+v, %v", c, err)
	}
}

// TestScenarios runs dm and room briefly against a real three-node cluster
// and against the baseline relay, and checks only that nothing acknowledged
// was lost.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cl := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: []string{"CHAT_RATE_LIMIT=100000", "CHAT_VISITORS_PER_MINUTE=0"}})
	cl.WaitNodes(t, "n1", "n2", "n3")
	cl.WaitLeader(t)
	rl := baseline.New()
	if err := rl.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rl.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := newDialer(4)
	targets := []*target{
		{name: "cluster", gateway: cl.GatewayURL(), prefix: "bench", password: "bench-password", dialer: d},
		{name: "baseline", wsURL: "ws://" + rl.Addr() + "/ws", admin: []string{rl.Addr()}, prefix: "bench", password: "bench-password", dialer: d},
	}
	cm := common{duration: 2 * time.Second, drain: 5 * time.Second, runID: "t" + time.Now().Format("150405"), logf: t.Logf, progress: func(s string) { t.Log(s) }}
	for _, tg := range targets {
		if err := tg.prepare(ctx, 6, t.Logf, nil); err != nil {
			t.Fatal(err)
		}
		if tg.numNodes() != map[string]int{"cluster": 3, "baseline": 1}[tg.name] {
			t.Fatalf("%s: %d nodes", tg.name, tg.numNodes())
		}
		dm, err := runDM(ctx, tg, cm, dmParams{pairs: 3, rate: 30, cross: 0.67})
		if err != nil {
			t.Fatal(err)
		}
		// Again with typing and read frames beside the messages: every one
		// answered 200, the messages unharmed.
		chat, err := runDM(ctx, tg, cm, dmParams{pairs: 3, rate: 30, cross: 0.67, chatter: 4, phase: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if c := chat.Chatter; c == nil || c.Typing == 0 || c.Reads == 0 || c.Refused != 0 || c.Unwritten != 0 {
			t.Errorf("%s on %s: chatter %+v; want typing and read frames sent, none refused or unwritten", chat.Label, tg.name, c)
		} else if c.Quiet.Count == 0 || c.During.Count == 0 || c.Quiet.Count+c.During.Count >= chat.Latency.Count {
			t.Errorf("%s on %s: %d messages measured in the quiet phases and %d in the chatter phases of %d; want some in each, and fewer than all (the guards count in neither)",
				chat.Label, tg.name, c.Quiet.Count, c.During.Count, chat.Latency.Count)
		}
		// The same users again, in a room: their messages' clientMsgIds
		// must not collide with those of the dm run (a node answers a
		// clientMsgId it has seen with the first result and stores
		// nothing).
		rooms, err := runRoom(ctx, tg, cm, roomParams{members: 6, publishers: 2, rates: []float64{10}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range append([]Result{dm, chat}, rooms...) {
			t.Logf("%s %s: sent %d acked %d delivered %d of %d, p99 %.1f ms", r.Label, r.Target, r.Sent, r.Acked, r.Delivered, r.Expected, r.Latency.P99Ms)
			if r.Sent == 0 || r.Lost != 0 || r.Unacked != 0 || r.Errors != 0 || r.Duplicates != 0 {
				t.Errorf("%s on %s: sent %d, errors %d, unacked %d, lost %d, duplicates %d; want some sent and no errors, unacked, lost or duplicates",
					r.Label, r.Target, r.Sent, r.Errors, r.Unacked, r.Lost, r.Duplicates)
			}
		}
	}

	// Customer service, on the cluster only: every visitor assigned, every
	// message answered, every conversation closed.
	sp := supportParams{visitors: 8, rate: 8, agents: 2, capacity: 2, messages: 2, timeout: 30 * time.Second,
		mongo: testenv.Mongo(t), mongoDB: cl.Namespace()}
	sr, err := runSupport(ctx, targets[0], cm, sp)
	if err != nil {
		t.Fatal(err)
	}
	s := sr.Support
	t.Logf("%s: assigned %d, finished %d, wait p50 %.1f ms max %.1f ms, visitor to agent p50 %.1f ms, agent to visitor p50 %.1f ms, errors %v",
		sr.Label, s.Assigned, s.Finished, s.Wait.P50Ms, s.Wait.MaxMs, s.VisitorToAgent.P50Ms, s.AgentToVisitor.P50Ms, s.ErrorsByCode)
	if s.Assigned != 8 || s.Finished != 8 || s.NeverAssigned != 0 || s.Unfinished != 0 || sr.Errors != 0 ||
		s.VisitorToAgent.Count != 16 || s.AgentToVisitor.Count != 16 || s.Wait.Count != 8 {
		t.Errorf("support: %+v; want all 8 visitors assigned and finished, 16 messages each way, no errors", *s)
	}

	// Last, as it leaves the cluster a node short: failover, killing the
	// leader. Only that it completes and nothing acknowledged is lost.
	kill := func(_ context.Context, id string) (int, error) {
		i := cl.Index(id)
		if i < 0 {
			return 0, fmt.Errorf("no node %s", id)
		}
		cl.Kill(i)
		return 0, nil
	}
	fo, err := runFailover(ctx, targets[0], cm, failoverParams{pairs: 3, rate: 30, duration: 5 * time.Second, killAfter: time.Second, kill: kill})
	if err != nil {
		t.Fatal(err)
	}
	if fo.Failover == nil {
		t.Fatal("failover: no failover figures")
	}
	f := fo.Failover
	t.Logf("%s: killed %s, next leader %s; routing restored after %.0f ms; sent %d acked %d pushed %d found by sync %d lost %d",
		fo.Label, f.Leader, f.NewLeader, f.RestoredMs, fo.Sent, fo.Acked, fo.Delivered, fo.Recovered, fo.Lost)
	if fo.Sent == 0 || fo.Lost != 0 {
		t.Errorf("failover: sent %d, lost %d (acknowledged, delivered neither live nor by sync); want some sent and none lost", fo.Sent, fo.Lost)
	}
}

func TestTrackerRecoverAndMissing(t *testing.T) {
	trk := newTracker("run1")
	now := time.Now()
	k1 := trk.add(now, 1, 0)
	k2 := trk.add(now, 1, 1)
	if a, b := trk.clientMsgID(k1), newTracker("run1").clientMsgID(k1); a == b {
		t.Errorf("two runs share the clientMsgId %q", a)
	}
	trk.reply(0, k1, 0, now, "dm:a:b", 7)
	trk.reply(1, k2, 0, now, "dm:a:b", 8)
	trk.deliver(1, k1, now) // k1 pushed, k2 not
	miss := trk.missing()
	if len(miss) != 1 || miss[0].key != k2 || miss[0].from != 1 || miss[0].seq != 8 || miss[0].conv != "dm:a:b" {
		t.Fatalf("missing = %+v, want k2 from 1 at seq 8", miss)
	}
	if trk.recover(k1, 1) {
		t.Error("a pushed message counted as found by sync")
	}
	if trk.recover(k2, 1) {
		t.Error("k2 counted as found by the sync of its own sender")
	}
	if !trk.recover(k2, 0) || trk.recover(k2, 0) {
		t.Error("k2 should count once as found by sync")
	}
	if _, lost, _, _ := trk.tally(); lost != 0 || trk.recovered.Load() != 1 || trk.delivered() != 1 || trk.outstanding() != 0 {
		t.Errorf("lost %d recovered %d pushed %d owed %d, want 0 1 1 0", lost, trk.recovered.Load(), trk.delivered(), trk.outstanding())
	}
	// A push after the sync found it is late, not a duplicate.
	trk.deliver(0, k2, now)
	if c := trk.counts(); c.late != 1 || c.duplicates != 0 || c.delivered != 1 {
		t.Errorf("push after sync: late %d dup %d delivered %d, want 1 0 1", c.late, c.duplicates, c.delivered)
	}
	if !trk.settled(k1) || trk.settled(trk.add(now, 1, 0)) {
		t.Error("settled is wrong")
	}
}

func TestOnDeliverSeesSender(t *testing.T) {
	trk := newTracker("run1")
	var got [2]int
	trk.onDeliver = func(to, from int, _, _ time.Time) { got = [2]int{to, from} }
	k := trk.add(time.Now(), 1, 4)
	trk.reply(4, k, 0, time.Now(), "", 0)
	trk.deliver(5, k, time.Now())
	if got != [2]int{5, 4} {
		t.Errorf("onDeliver saw to/from %v, want [5 4]", got)
	}
}

func TestArgsNameNode(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"/repo/bin/node", "--id", "n1", "--listen", "x"}, true},
		{[]string{"/repo/bin/node", "--id=n1"}, true},
		{[]string{"/repo/bin/node", "--id", "n12"}, false},
		{[]string{"/repo/bin/gateway", "--id", "n1"}, false},
		{[]string{"/repo/bin/node", "n1"}, false},
		{nil, false},
	} {
		if got := argsNameNode(c.args, "n1"); got != c.want {
			t.Errorf("argsNameNode(%q, n1) = %v, want %v", c.args, got, c.want)
		}
	}
}

// A process that calls itself "node --id n9" stands in for a node.
func TestPidDirKiller(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("bash", "-c", `exec -a node bash -c "sleep 60; :" node --id n9`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	pid := cmd.Process.Pid
	write := func(id string, p int) {
		if err := os.WriteFile(filepath.Join(dir, "node-"+id+".pid"), []byte(strconv.Itoa(p)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The exec takes a moment: wait until the command line is the node's.
	waitFor(t, 5*time.Second, "the stand-in names itself node n9", func() bool { return checkNodeProcess(pid, "n9") == nil })
	kill := pidDirKiller(dir)
	ctx := context.Background()

	write("n8", pid) // a pid file naming another node's process
	if _, err := kill(ctx, "n8"); err == nil || !strings.Contains(err.Error(), "is not node n8") {
		t.Fatalf("killing n8 through a pid file of n9's process: %v, want a refusal", err)
	}
	if !processAlive(pid) {
		t.Fatal("the refusal killed the process")
	}
	if _, err := kill(ctx, "n7"); err == nil {
		t.Fatal("no pid file, yet no error")
	}
	write("n9", pid)
	got, err := kill(ctx, "n9")
	if err != nil || got != pid {
		t.Fatalf("kill n9 = %d, %v; want %d", got, err, pid)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the process is still there after the kill")
	}
	if processAlive(pid) {
		t.Error("processAlive says a reaped process lives")
	}
	if _, err := kill(ctx, "n9"); err == nil {
		t.Error("a stale pid file was taken")
	}
}

// waitFor polls cond every 10 ms until it holds or d passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEvalTargets(t *testing.T) {
	dm := func(target string, rate, delivered, p99 float64, lost int64) Result {
		return Result{Scenario: "dm", Target: target, Label: fmt.Sprintf("dm %g/s", rate), DeliveredPerSec: delivered, Lost: lost,
			Seconds: 10, DeliverySeconds: 10.05, Latency: LatencySummary{P99Ms: p99}, Params: map[string]any{"rate": rate, "crossShare": 1.0}}
	}
	at2k := dm("cluster", 2000, 1995, 6, 0)
	at2k.CPU = &CPUResult{Delivered: 20000, WindowSeconds: 10, ChatPathUsPerMsg: 110, ServerUsPerMsg: 111, BenchUsPerMsg: 20,
		Processes: []ProcCPU{{Name: "node-n1", Group: groupNode, UsPerMsg: 60}, {Name: "redis", Group: groupRedis, UsPerMsg: 30},
			{Name: "mongostore", Group: groupStore, UsPerMsg: 18}, {Name: "zookeeper", Group: groupZooKeeper, UsPerMsg: 2}, {Name: "gateway", Group: groupGateway, UsPerMsg: 1}}}
	at10k := dm("cluster", 10000, 4000, 3000, 0) // fell behind
	at10k.History = &HistoryResult{PerSec: 4000, BacklogSteadyEnd: 30000, BacklogEnd: 100}
	rs := []Result{
		at2k,
		dm("baseline", 2000, 2000, 1.5, 0),
		dm("cluster", 5000, 4990, 12, 0),
		at10k,
		{Scenario: "room", Target: "cluster", Label: "room 1000 members, 150 msg/s", DeliveredPerSec: 149500, Latency: LatencySummary{P99Ms: 40},
			Params: map[string]any{"rate": 150.0, "members": 1000.0, "nodes": 3.0}},
		{Scenario: "connect", Target: "cluster", Connect: &ConnectResult{Nodes: []NodeMemory{
			{BytesPerConn: 11 * 1024, ConnsBefore: 0, ConnsAfter: 10000}, {BytesPerConn: 0, ConnsBefore: 0, ConnsAfter: 0}}}},
		{Scenario: "failover", Target: "cluster", Label: "failover", Acked: 100, Duplicates: 1, Failover: &FailoverResult{RestoredMs: 1200, NewLeaderMs: 1100}},
	}
	byTarget := map[string]targetRow{}
	for _, r := range evalTargets(rs) {
		byTarget[r.Target] = r
	}
	want := map[string]string{
		targetCPU:      statusMet,
		targetP99:      statusMet,
		targetRate:     statusNotMet,
		targetRelay:    statusNotMet, // 6 ms against 1.5: 4×
		targetRoom:     statusMet,    // 149,500 of 150,000 offered: kept up
		targetHistory:  statusNotMet, // 3 s of messages waiting
		targetMemory:   statusMet,
		targetFailover: statusNotMet, // a duplicate
	}
	for target, st := range want {
		row, ok := byTarget[target]
		if !ok {
			t.Errorf("no row for %q", target)
			continue
		}
		if row.Status != st {
			t.Errorf("%q: status %q (%s), want %q", target, row.Status, row.Measured, st)
		}
	}
	if m := byTarget[targetCPU].Measured; !strings.Contains(m, "110 µs per message (nodes 60, Redis 30, store 18, ZooKeeper 2; gateway 1; chatbench itself 20)") {
		t.Errorf("CPU measured as %q", m)
	}
	if m := byTarget[targetRate].Measured; !strings.Contains(m, "4,000 msg/s delivered of 10,000 offered") || !strings.Contains(m, "the highest rate sustained was 5,000 msg/s") {
		t.Errorf("dm throughput measured as %q", m)
	}
	if m := byTarget[targetHistory].Measured; !strings.Contains(m, "backlog 30,000 messages at the end of the send phase of dm 10000/s (3 s of messages)") {
		t.Errorf("history measured as %q", m)
	}
	none := evalTargets(nil)
	if len(none) != len(want) {
		t.Errorf("without results: %d rows, want %d", len(none), len(want))
	}
	for _, r := range none {
		if r.Status != statusNotMeasured {
			t.Errorf("without results, %q is %q", r.Target, r.Status)
		}
	}
	// Memory at fewer connections than the target's count.
	few := evalTargets([]Result{{Scenario: "connect", Target: "cluster", Connect: &ConnectResult{Nodes: []NodeMemory{{BytesPerConn: 8 * 1024, ConnsAfter: 3000}}}}})
	for _, r := range few {
		if r.Target == targetMemory && r.Status != "met at this count; not measured at 10,000" {
			t.Errorf("memory at 3,000 connections: %q (%s)", r.Status, r.Measured)
		}
	}
}

func TestReportFailoverAndSettings(t *testing.T) {
	fo := Result{Scenario: "failover", Label: "failover dm 10/s", Target: "cluster", Sent: 50, Acked: 50, Recovered: 3,
		Failover: &FailoverResult{Leader: "n1", NewLeader: "n2", RestoredMs: 1650, NewLeaderMs: 1660, Moved: 2, Reconnected: 2, SteadyPairs: 1, KillAtSec: 1}}
	var md strings.Builder
	run := Run{Command: "chatbench --scenarios failover", Machine: Machine{CPU: "x", Cores: 2, LoadAvg: "0.1 0.2 0.3"}, Results: []Result{fo}}
	if err := renderMarkdown(&md, []Run{run}, reportOptions{command: "make bench", clusterEnv: "CHAT_BCRYPT_COST=4"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| failover dm 10/s, kill at 1s | n1 | n2 | 1 | 2/2 | 1650 | 1660 |",
		"| failover dm 10/s | disruption window (kill to routing restored) (ms) | 1650 | – | – |",
		"- `CHAT_BCRYPT_COST=4`: ",
		"load average when the run started (1, 5, 15 min): 0.1 0.2 0.3",
		"| " + targetFailover + " | 0 lost of 50 acknowledged (3 found by sync), 0 duplicates; routing back after 1.65 s (new leader listed after 1.66 s) | met |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

func TestParseRates(t *testing.T) {
	if r, err := parseRates("--rates", "10, 20.5"); err != nil || len(r) != 2 || r[1] != 20.5 {
		t.Errorf("parseRates = %v, %v", r, err)
	}
	for _, bad := range []string{"", "0", "-1", "x", "Inf"} {
		if _, err := parseRates("--rates", bad); err == nil {
			t.Errorf("parseRates(%q) accepted", bad)
		}
	}
	if _, err := parseFlags([]string{"--scenarios", "failover"}); err == nil || !strings.Contains(err.Error(), "--pid-dir") {
		t.Errorf("failover without --pid-dir: %v", err)
	}
	c, err := parseFlags([]string{"--scenarios", "failover,dm", "--pid-dir", "/tmp"})
	if err != nil || strings.Join(c.scenarios, ",") != "dm,failover" {
		t.Errorf("failover is not run last: %v, %v", c.scenarios, err)
	}
}

func TestSummarizePercentiles(t *testing.T) {
	l := newLatency()
	for i := 1; i <= 1000; i++ {
		l.record(i, time.Duration(i)*time.Millisecond)
	}
	s := summarize(l.merged())
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", s.P50Ms, 500}, {"p90", s.P90Ms, 900}, {"p99", s.P99Ms, 990}, {"max", s.MaxMs, 1000}} {
		if c.got < c.want*0.99 || c.got > c.want*1.01 {
			t.Errorf("%s = %v ms, want %v", c.name, c.got, c.want)
		}
	}
	if s.Count != 1000 {
		t.Errorf("count %d", s.Count)
	}
}

func TestChatterPhases(t *testing.T) {
	start := time.Unix(1000, 0)
	p := chatterPhases{start: start, phase: time.Second, guard: 250 * time.Millisecond}
	for _, c := range []struct {
		after time.Duration
		of    int
		on    bool
	}{
		{-time.Millisecond, -1, false},
		{0, -1, false}, // the guard of the first quiet phase
		{249 * time.Millisecond, -1, false},
		{250 * time.Millisecond, 0, false},
		{999 * time.Millisecond, 0, false},
		{time.Second, -1, true}, // a chatter phase begins, its guard first
		{1249 * time.Millisecond, -1, true},
		{1250 * time.Millisecond, 1, true},
		{1999 * time.Millisecond, 1, true},
		{2 * time.Second, -1, false},
		{2500 * time.Millisecond, 0, false},
		{3500 * time.Millisecond, 1, true},
	} {
		at := start.Add(c.after)
		if got := p.of(at); got != c.of {
			t.Errorf("of(start%+v) = %d, want %d", c.after, got, c.of)
		}
		if got := p.chatterOn(at); got != c.on {
			t.Errorf("chatterOn(start%+v) = %v, want %v", c.after, got, c.on)
		}
	}
	for _, c := range []struct {
		run  time.Duration
		want float64
	}{{0, 0}, {time.Second, 0}, {1500 * time.Millisecond, 0.5}, {2 * time.Second, 1}, {2500 * time.Millisecond, 1}, {10 * time.Second, 5}, {11500 * time.Millisecond, 5.5}} {
		if got := p.chatterSeconds(start.Add(c.run)); got != c.want {
			t.Errorf("chatterSeconds of a run of %v = %g, want %g", c.run, got, c.want)
		}
	}
}
