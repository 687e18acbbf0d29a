package chaos

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// FailoverDefinition says what the failover times of the table measure.
const FailoverDefinition = "failover time: from the fault's injection until every client has received, " +
	"as a live push, a room message the cluster stored after the injection"

// FaultRun is one injected fault.
type FaultRun struct {
	Fault     Fault
	Target    string        // what it hit: a node id, "redis", "mongo", "zk2"
	Recovered bool          // the cluster delivered to every client again in time
	Failover  time.Duration // see FailoverDefinition; set when Recovered
	Note      string        // why it did not recover, or other remarks
}

// Report is the outcome of a run: the faults and the checker's result.
type Report struct {
	Clients   int    // connections of the chat workload: devices
	Users     int    // users of those clients (0: one per client)
	Login     string // the cluster's login policy ("": not said)
	Nodes     int
	Rounds    int
	Seed      int64
	Redis     string // "sentinel" when Redis ran with Sentinel, "cluster" as a Redis Cluster; "" or "single": one server
	Elapsed   time.Duration
	Scheduled int        // faults the schedule held
	Faults    []FaultRun // faults injected
	Stopped   string     // why the run stopped before the schedule's end ("" if it did not)
	Result    Result
	// Support is the customer-service workload's result; nil when it did
	// not run.
	Support *SupportResult
}

// Unrecovered returns the faults after which the cluster did not deliver
// to every client again in time.
func (r Report) Unrecovered() []FaultRun {
	var out []FaultRun
	for _, f := range r.Faults {
		if !f.Recovered {
			out = append(out, f)
		}
	}
	return out
}

// OK reports whether the run passed: every scheduled fault injected and
// recovered from, and no violation.
func (r Report) OK() bool {
	return r.Result.OK() && r.Stopped == "" && len(r.Faults) == r.Scheduled && len(r.Unrecovered()) == 0 &&
		(r.Support == nil || r.Support.OK())
}

// Quantile returns the q-quantile (0 < q <= 1) of ds by nearest rank, 0
// for none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Table renders the report for people.
func (r Report) Table() string {
	var b strings.Builder
	rounds := "rounds"
	if r.Rounds == 1 {
		rounds = "round"
	}
	redis := ""
	switch r.Redis {
	case "sentinel":
		redis = ", Redis with Sentinel (the Redis fault: kill -9 of the master)"
	case "cluster":
		redis = ", Redis Cluster of 3 masters and 3 replicas (the Redis fault: kill -9 of a master)"
	}
	clients := fmt.Sprintf("%d clients", r.Clients)
	if r.Users > 0 && r.Users != r.Clients {
		clients += fmt.Sprintf(" (devices of %d users)", r.Users)
	}
	if r.Login != "" {
		clients += ", login policy " + r.Login
	}
	fmt.Fprintf(&b, "chaos run: %s, %d nodes, %d %s of each fault (seed %d)%s, %s\n",
		clients, r.Nodes, r.Rounds, rounds, r.Seed, redis, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "%s\n\n", FailoverDefinition)
	fmt.Fprintf(&b, "%-24s %9s %10s %13s %13s\n", "fault", "injected", "recovered", "failover p50", "failover max")
	var all []time.Duration
	injected, recovered := 0, 0
	for _, kind := range Faults {
		var ds []time.Duration
		n := 0
		for _, f := range r.Faults {
			if f.Fault != kind {
				continue
			}
			n++
			if f.Recovered {
				ds = append(ds, f.Failover)
			}
		}
		injected += n
		recovered += len(ds)
		all = append(all, ds...)
		fmt.Fprintf(&b, "%-24s %9d %10d %13s %13s\n", kind, n, len(ds), seconds(ds, 0.5), seconds(ds, 1))
	}
	fmt.Fprintf(&b, "%-24s %9d %10d %13s %13s\n", "all faults", injected, recovered, seconds(all, 0.5), seconds(all, 1))
	if r.Scheduled != injected {
		fmt.Fprintf(&b, "%-24s %9d\n", "scheduled", r.Scheduled)
	}
	b.WriteString("\n")
	res := r.Result
	row := func(name string, n int, note string) {
		line := fmt.Sprintf("%-26s %10d  %s", name, n, note)
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	row("faults injected", injected, fmt.Sprintf("of %d scheduled", r.Scheduled))
	row("faults not recovered", injected-recovered, "must be 0")
	row("messages acknowledged", res.Acked, "edits and recalls included")
	row("deliveries expected", res.Expected, "acknowledged message x recipient device")
	row("delivered", res.Delivered, "shown by the recipient")
	row("lost", res.Lost, "must be 0")
	row("duplicates shown", res.Duplicates, "must be 0")
	row("out of order", res.OutOfOrder, "must be 0")
	row("final views differing", res.FinalDiffers, fmt.Sprintf("must be 0; of %d (client, message) pairs compared", res.FinalChecked))
	row("final-view checkpoints", res.Checkpoints, fmt.Sprintf("info: after each fault and at the end; %d skipped, %d compared twice", res.CheckpointsSkipped, res.CheckpointsRetaken))
	row("read positions went back", res.ReadBack, fmt.Sprintf("must be 0; of %d positions compared at checkpoints", res.ReadsChecked))
	row("unexpected kicks", res.UnexpectedKicks, "must be 0; a kick of a live connection, or for another reason")
	for _, n := range slices.Sorted(maps.Keys(res.Devices)) {
		label := "users with 1 device"
		if n != 1 {
			label = fmt.Sprintf("users with %d devices", n)
		}
		row(label, res.Devices[n], "info: each device its own connection, offsets and view")
	}
	for _, reason := range slices.Sorted(maps.Keys(res.Kicks)) {
		row("kicked", res.Kicks[reason], fmt.Sprintf("info: reason %q", reason))
	}
	if len(res.Kicks) > 0 {
		row("kicked while reconnecting", res.KicksAway, "info: of those, a connection its client had left (expected)")
	}
	row("edits acknowledged", res.Edits, "info: of the messages acknowledged")
	row("edits stored twice", res.EditRepeats, "info: sent again after a lost reply, same text")
	row("recalls acknowledged", res.Recalls, "info: of the messages acknowledged")
	row("recalls landed, reply lost", res.RecallsLanded, "info: sent again, answered \"recalled already\"")
	row("reads sent", res.ReadsSent, fmt.Sprintf("info: %d acknowledged, %d refused", res.ReadsAcked, res.ReadsRefused))
	row("typing sent", res.TypingSent, fmt.Sprintf("info: %d not answered or refused", res.TypingFailed))
	row("raw deliveries", res.Raw, "info: pushes and sync entries received")
	row("raw redeliveries", res.Redelivered, "info: messages received again, hidden by the offsets")
	row("hidden other", res.HiddenOther, "info: below the offset, not the message held there")
	row("shown, not acknowledged", res.Unacked, "info: stored, but the reply was lost (messages and events)")
	row("sends given up", res.GaveUp, "info: messages, edits and recalls never acknowledged")
	row("seq conflicts", res.SeqConflicts, "info: two acknowledged messages, one seq")
	for i, c := range res.Skipped {
		if i == 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "checkpoint %s skipped: %s\n", c.Name, c.Skipped)
	}
	if r.Stopped != "" {
		fmt.Fprintf(&b, "\nstopped early: %s\n", r.Stopped)
	}
	for _, f := range r.Unrecovered() {
		fmt.Fprintf(&b, "not recovered: %s (%s): %s\n", f.Fault, f.Target, f.Note)
	}
	if len(res.Problems) > 0 {
		b.WriteString("\nviolations:\n")
		for _, p := range res.Problems {
			fmt.Fprintf(&b, "  %s\n", p)
		}
		if res.Unlisted > 0 {
			fmt.Fprintf(&b, "  ... and %d more\n", res.Unlisted)
		}
	}
	if sr := r.Support; sr != nil {
		res := sr.Result
		b.WriteString("\ncustomer service (visitors, agents with capacity, the leader's queue):\n")
		row("visitors", sr.Visitors, "arrived, asked for an agent, wrote, closed")
		row("visitors assigned", sr.Assigned, "must be every visitor")
		fmt.Fprintf(&b, "%-26s %10s  %s\n", "wait for an agent", fmt.Sprintf("%s/%s", seconds(sr.Waits, 0.5), seconds(sr.Waits, 0.99)), "p50/p99, support to the assigned push")
		row("leader snapshots checked", sr.Snapshots, "capacity held, one place per conversation")
		row("state violations", sr.StateViolations, "must be 0")
		row("messages acknowledged", res.Acked, "")
		row("deliveries expected", res.Expected, "to the other side at the time (the stored to)")
		row("delivered", res.Delivered, "shown by the recipient")
		row("not stored", sr.Unstored, "must be 0")
		row("seq given again", sr.Reused, "info: not stored, its seq holds a later message (two Redis losses)")
		row("lost", res.Lost, "must be 0")
		row("duplicates shown", res.Duplicates, "must be 0")
		row("out of order", res.OutOfOrder, "must be 0")
		row("sends given up", res.GaveUp, "info: the conversation moved or closed first")
		row("seq conflicts", res.SeqConflicts, "info: two acknowledged messages, one seq")
		row("connections", int(sr.Reconnects), "info: visitors' and agents'")
		if len(sr.Problems)+len(res.Problems) > 0 {
			b.WriteString("\ncustomer-service violations:\n")
			for _, p := range append(slices.Clone(sr.Problems), res.Problems...) {
				fmt.Fprintf(&b, "  %s\n", p)
			}
		}
	}
	if r.OK() {
		b.WriteString("\nresult: PASS\n")
	} else {
		b.WriteString("\nresult: FAIL\n")
	}
	return b.String()
}

func seconds(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", Quantile(ds, q).Seconds())
}
