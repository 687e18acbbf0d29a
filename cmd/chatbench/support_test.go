package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

func TestSupportText(t *testing.T) {
	sent := time.Unix(0, 1767225600123456789)
	text := supportText("run1.x", 'q', 12, 3, sent)
	kind, v, n, at, ok := parseSupportText("run1.x", text)
	if !ok || kind != 'q' || v != 12 || n != 3 || !at.Equal(sent) {
		t.Fatalf("parseSupportText(%q) = %c %d %d %v %v", text, kind, v, n, at, ok)
	}
	for _, bad := range []string{
		supportText("run2.x", 'q', 12, 3, sent), // another run
		"bench run1.x x 12 3 1",                 // neither question nor answer
		"bench run1.x q 12 0 1",                 // messages count from 1
		"bench run1.x q -1 1 1",
		"bench run1.x q 12 3",
		"bench run1.x a 12 3 1 extra",
		"hello",
	} {
		if _, _, _, _, ok := parseSupportText("run1.x", bad); ok {
			t.Errorf("parseSupportText(%q) accepted", bad)
		}
	}
}

func TestArrivals(t *testing.T) {
	start := time.Unix(100, 0)
	due := arrivals(start, 60, 10)
	if len(due) != 60 {
		t.Fatalf("%d arrivals, want 60", len(due))
	}
	for i, d := range due {
		if want := start.Add(time.Duration(i) * 100 * time.Millisecond); !d.Equal(want) {
			t.Fatalf("arrival %d due %v, want %v", i, d, want)
		}
	}
	// A rate that does not divide a second: still exactly n, evenly.
	due = arrivals(start, 7, 3)
	if len(due) != 7 || due[6].Sub(start) < 1999*time.Millisecond || due[6].Sub(start) > 2001*time.Millisecond {
		t.Errorf("7 arrivals at 3/s: %d, the last after %v; want the last after 2s", len(due), due[len(due)-1].Sub(start))
	}
}

func TestAssignRate(t *testing.T) {
	first := time.Unix(100, 0).UnixNano()
	if r, d := assignRate(30, first, first+int64(3*time.Second)); r != 10 || d != 3 {
		t.Errorf("30 over 3s = %v/s over %vs, want 10/s over 3s", r, d)
	}
	if r, d := assignRate(0, first, first+1); r != 0 || d != 0 {
		t.Errorf("none assigned = %v %v", r, d)
	}
	if r, _ := assignRate(1, first, first); r != 0 {
		t.Errorf("one assignment at the first request = %v/s, want 0 (no span)", r)
	}
}

func TestSupportFlags(t *testing.T) {
	c, err := parseFlags([]string{"--scenarios", "support,dm", "--mongo", "mongodb://127.0.0.1:1/", "--pairs", "5"})
	if err != nil {
		t.Fatal(err)
	}
	p := c.support
	if p.visitors != 200 || p.rate != 20 || p.agents != 10 || p.capacity != 3 || p.messages != 5 || p.timeout != time.Minute || p.mongoDB != "chat" {
		t.Errorf("defaults %+v", p)
	}
	if c.usersNeeded() != 10 || c.connsNeeded() != 210 {
		t.Errorf("users %d conns %d, want 10 (the dm pairs) and 210 (agents and visitors)", c.usersNeeded(), c.connsNeeded())
	}
	for _, bad := range [][]string{
		{"--scenarios", "support"}, // no --mongo
		{"--scenarios", "support", "--mongo", "m", "--baseline", "ws://127.0.0.1:1/ws"},
		{"--scenarios", "support", "--mongo", "m", "--support-capacity", "0"},
		{"--scenarios", "support", "--mongo", "m", "--support-capacity", "101"},
		{"--scenarios", "support", "--mongo", "m", "--support-rate", "0"},
		{"--scenarios", "support", "--mongo", "m", "--support-messages", "0"},
		{"--scenarios", "support", "--mongo", "m", "--support-timeout", "0s"},
		{"--scenarios", "support", "--mongo", "m", "--support-visitors", "20000"}, // over --max-conns
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	// The support flags mean nothing to the other scenarios.
	if _, err := parseFlags([]string{"--scenarios", "dm", "--support-capacity", "0"}); err != nil {
		t.Errorf("dm with a support flag out of range: %v", err)
	}
}

func TestVisitorError(t *testing.T) {
	err := visitorError("http://gw", 60, &chatclient.HTTPError{Status: 429, Msg: "too many visitors"})
	for _, want := range []string{"429", "CHAT_VISITORS_PER_MINUTE=0", "--visitors-per-minute", "60"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	other := errors.New("refused")
	if err := visitorError("http://gw", 60, other); !errors.Is(err, other) || strings.Contains(err.Error(), "VISITORS") {
		t.Errorf("a failure other than 429: %v", err)
	}
}

// testSupportRun is a run of two visitors and one agent, without sockets.
func testSupportRun() (*supportRun, *supportAgent) {
	r := &supportRun{p: supportParams{messages: 2, capacity: 1}, id: "r1.x", byID: map[string]int{}, agentOf: map[string]int{"ann": 0},
		errs: map[string]int64{}, staleIn: map[string]bool{}, wait: newLatency(), v2a: newLatency(), a2v: newLatency()}
	for i, id := range []string{"~v0", "~v1"} {
		r.vs = append(r.vs, &supportVisitor{idx: i, id: id, assigned: make(chan struct{}), closed: make(chan struct{}), answers: make(chan int, 2)})
		r.byID[id] = i
	}
	return r, &supportAgent{name: "ann", jobs: make(chan agentJob, 4)}
}

func pushData(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSupportAgentPushes(t *testing.T) {
	r, ag := testSupportRun()
	now := time.Now()
	sent := now.Add(-3 * time.Millisecond)
	q1 := protocol.Message{Conv: "cs:~v1:1", From: "~v1", Text: supportText(r.id, 'q', 1, 1, sent)}

	// A conversation of another run is closed; one of this run brings the
	// questions written before the agent had it.
	r.agentPush(ag, []byte(protocol.PushAssigned), pushData(t, protocol.AssignedPush{SupportConv: protocol.SupportConv{Conv: "cs:~old:4", Visitor: "~old"}}), now)
	r.agentPush(ag, []byte(protocol.PushAssigned), pushData(t, protocol.AssignedPush{SupportConv: protocol.SupportConv{Conv: "cs:~v1:1", Visitor: "~v1"}, Messages: []protocol.Message{q1}}), now)
	// The same question pushed again is a duplicate; a forged one (not
	// from its visitor) and another run's are ignored.
	r.agentPush(ag, []byte(protocol.PushMessage), pushData(t, q1), now)
	r.agentPush(ag, []byte(protocol.PushMessage), pushData(t, protocol.Message{Conv: "cs:~v1:1", From: "~v0", Text: supportText(r.id, 'q', 1, 2, sent)}), now)
	r.agentPush(ag, []byte(protocol.PushMessage), pushData(t, protocol.Message{Conv: "cs:~v1:1", From: "~v1", Text: supportText("r2.x", 'q', 1, 2, sent)}), now)
	r.agentPush(ag, []byte(protocol.PushUnassigned), pushData(t, protocol.UnassignedPush{Conv: "cs:~v0:1", Reason: "requeued"}), now)

	var jobs []agentJob
	for len(ag.jobs) > 0 {
		jobs = append(jobs, <-ag.jobs)
	}
	if len(jobs) != 2 || jobs[0] != (agentJob{conv: "cs:~old:4", v: -1}) || jobs[1] != (agentJob{conv: "cs:~v1:1", v: 1, j: 1}) {
		t.Fatalf("jobs %+v, want the stale close and the answer to ~v1's first question", jobs)
	}
	if r.qGot.Load() != 1 || r.dups.Load() != 1 || r.requeued.Load() != 1 {
		t.Errorf("questions %d dups %d requeued %d, want 1 1 1", r.qGot.Load(), r.dups.Load(), r.requeued.Load())
	}
	if s := summarize(r.v2a.merged()); s.Count != 1 || s.P50Ms < 2.9 || s.P50Ms > 3.1 {
		t.Errorf("visitor to agent %+v, want one of 3 ms", s)
	}
	// A full queue is counted, never waited on.
	for range 5 {
		r.enqueue(ag, agentJob{conv: "x", v: -1})
	}
	if errs, n := r.errorCounts(); n != 1 || errs["agent queue full"] != 1 {
		t.Errorf("errors %v, want one full queue", errs)
	}
	r.closedStale("cs:~old:4")
	r.closedStale("cs:~old:4")
	if r.stale.Load() != 1 {
		t.Errorf("stale %d, want 1 for one conversation closed twice", r.stale.Load())
	}
}

func TestSupportVisitorPushes(t *testing.T) {
	r, _ := testSupportRun()
	vs := r.vs[0]
	now := time.Now()
	r.visitorPush(vs, []byte(protocol.PushQueue), pushData(t, protocol.QueuePush{Conv: "cs:~v0:1", Position: 1}), now)
	select {
	case <-vs.assigned:
		t.Fatal("assigned on a queue push")
	default:
	}
	r.visitorPush(vs, []byte(protocol.PushAssigned), pushData(t, protocol.AssignedPush{SupportConv: protocol.SupportConv{Conv: "cs:~v0:1", Agent: "ann"}}), now)
	r.visitorPush(vs, []byte(protocol.PushAssigned), pushData(t, protocol.AssignedPush{SupportConv: protocol.SupportConv{Conv: "cs:~v0:1", Agent: "bob"}}), now.Add(time.Second))
	select {
	case <-vs.assigned:
	default:
		t.Fatal("not assigned")
	}
	if !vs.assignedAt.Equal(now) || vs.agent != "ann" {
		t.Errorf("assigned at %v to %s, want the first push's: %v, ann", vs.assignedAt, vs.agent, now)
	}
	answer := pushData(t, protocol.Message{Conv: "cs:~v0:1", From: "ann", Text: supportText(r.id, 'a', 0, 1, now.Add(-2*time.Millisecond))})
	r.visitorPush(vs, []byte(protocol.PushMessage), answer, now)
	r.visitorPush(vs, []byte(protocol.PushMessage), answer, now)
	// Another visitor's answer, and a question, are not this visitor's.
	r.visitorPush(vs, []byte(protocol.PushMessage), pushData(t, protocol.Message{Text: supportText(r.id, 'a', 1, 1, now)}), now)
	r.visitorPush(vs, []byte(protocol.PushMessage), pushData(t, protocol.Message{Text: supportText(r.id, 'q', 0, 2, now)}), now)
	if len(vs.answers) != 1 || <-vs.answers != 1 || r.aGot.Load() != 1 || r.dups.Load() != 1 {
		t.Errorf("answers queued %d, got %d, dups %d; want answer 1 once and one duplicate", len(vs.answers), r.aGot.Load(), r.dups.Load())
	}
	// Its own close is no news; another's is.
	r.visitorPush(vs, []byte(protocol.PushClosed), pushData(t, protocol.ClosedPush{Conv: "cs:~v0:1", By: "~v0"}), now)
	select {
	case <-vs.closed:
		t.Fatal("closed by its own close")
	default:
	}
	r.visitorPush(vs, []byte(protocol.PushClosed), pushData(t, protocol.ClosedPush{Conv: "cs:~v0:1", By: "ann"}), now)
	r.visitorPush(vs, []byte(protocol.PushClosed), pushData(t, protocol.ClosedPush{Conv: "cs:~v0:1", By: ""}), now)
	select {
	case <-vs.closed:
	default:
		t.Fatal("not told of the agent's close")
	}
}
