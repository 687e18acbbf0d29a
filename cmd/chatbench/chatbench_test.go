package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	k1 := trk.add(now, 1)
	k2 := trk.add(now, 2)
	k3 := trk.add(now, 1)
	k4 := trk.add(now, 1)
	text := trk.text(k2, now)
	if k, ok := trk.parseText(text); !ok || k != k2 {
		t.Fatalf("parseText(%q) = %d %v", text, k, ok)
	}
	if _, ok := newTracker("other").parseText(text); ok {
		t.Fatal("a text of another run was taken")
	}
	trk.reply(0, k1, 0, now.Add(time.Millisecond))
	trk.reply(0, k2, 0, now.Add(time.Millisecond))
	trk.reply(0, k3, 429, now)
	trk.deliver(0, k1, now.Add(2*time.Millisecond))
	trk.deliver(0, k1, now.Add(3*time.Millisecond)) // duplicate
	trk.deliver(0, k2, now.Add(4*time.Millisecond)) // one of two
	trk.deliver(0, 999, now)
	expected, lost, lostDel, unacked := trk.tally()
	if expected != 3 || lost != 1 || lostDel != 1 || unacked != 1 {
		t.Errorf("tally = expected %d lost %d lostDeliveries %d unacked %d, want 3 1 1 1", expected, lost, lostDel, unacked)
	}
	if trk.duplicates.Load() != 1 || trk.unknown.Load() != 1 || trk.delivered.Load() != 2 || trk.failed.Load() != 1 {
		t.Errorf("counters: dup %d unknown %d delivered %d failed %d", trk.duplicates.Load(), trk.unknown.Load(), trk.delivered.Load(), trk.failed.Load())
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
	if err := renderMarkdown(&md, []Run{back}, "make bench"); err != nil {
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
	cl := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: []string{"CHAT_RATE_LIMIT=100000"}})
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
		if err := tg.prepare(ctx, 6, t.Logf); err != nil {
			t.Fatal(err)
		}
		if tg.numNodes() != map[string]int{"cluster": 3, "baseline": 1}[tg.name] {
			t.Fatalf("%s: %d nodes", tg.name, tg.numNodes())
		}
		dm, err := runDM(ctx, tg, cm, dmParams{pairs: 3, rate: 30, cross: 0.67})
		if err != nil {
			t.Fatal(err)
		}
		// The room gets users of its own: members who logged out of the dm
		// scenario a moment ago and logged in again are a different case
		// (see the report of this tool's first runs).
		rt := *tg
		rt.prefix, rt.tokens = "benchroom", nil
		if err := rt.prepare(ctx, 6, t.Logf); err != nil {
			t.Fatal(err)
		}
		room, err := runRoom(ctx, &rt, cm, roomParams{members: 6, publishers: 2, rate: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []Result{dm, room} {
			t.Logf("%s %s: sent %d acked %d delivered %d of %d, p99 %.1f ms", r.Label, r.Target, r.Sent, r.Acked, r.Delivered, r.Expected, r.Latency.P99Ms)
			if r.Sent == 0 || r.Lost != 0 || r.Unacked != 0 || r.Errors != 0 || r.Duplicates != 0 {
				t.Errorf("%s on %s: sent %d, errors %d, unacked %d, lost %d, duplicates %d; want some sent and no errors, unacked, lost or duplicates",
					r.Label, r.Target, r.Sent, r.Errors, r.Unacked, r.Lost, r.Duplicates)
			}
		}
	}
}
