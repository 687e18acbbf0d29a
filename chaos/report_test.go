package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	s := Schedule(20, 7)
	if len(s) != 20*len(Faults) {
		t.Fatalf("%d faults, want %d", len(s), 20*len(Faults))
	}
	for r := range 20 {
		round := slices.Clone(s[r*len(Faults) : (r+1)*len(Faults)])
		slices.Sort(round)
		if !slices.Equal(round, Faults) {
			t.Fatalf("round %d is not one of each fault: %v", r, round)
		}
	}
	if !slices.Equal(s, Schedule(20, 7)) {
		t.Fatal("the same seed gave another schedule")
	}
	if slices.Equal(s, Schedule(20, 8)) {
		t.Fatal("another seed gave the same schedule")
	}
	if len(Schedule(0, 1)) != 0 {
		t.Fatal("zero rounds scheduled faults")
	}
	for _, f := range Faults {
		if f.String() == "unknown fault" {
			t.Fatalf("fault %d has no name", f)
		}
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 3}, {1, 5}, {0.01, 1}, {0.8, 4}} {
		if got := Quantile(ds, c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing")
	}
	if got := Quantile([]time.Duration{2, 1}, 0.5); got != 1 {
		t.Errorf("median of two = %v, want the lower", got)
	}
}

func TestReportTable(t *testing.T) {
	r := Report{
		Clients: 6, Nodes: 3, Rounds: 2, Seed: 1, Elapsed: 90 * time.Second,
		Scheduled: 3,
		Faults: []FaultRun{
			{Fault: KillLeader, Target: "n1", Recovered: true, Failover: 2 * time.Second},
			{Fault: KillLeader, Target: "n2", Recovered: true, Failover: 3 * time.Second},
			{Fault: RestartRedis, Target: "redis", Recovered: true, Failover: 1500 * time.Millisecond},
		},
		Result: Result{Acked: 10, Expected: 20, Delivered: 20, Raw: 30, FinalChecked: 40, Checkpoints: 4, ReadsChecked: 12,
			Edits: 2, Recalls: 1, ReadsSent: 9, ReadsAcked: 8, ReadsRefused: 1, TypingSent: 3},
	}
	if !r.OK() {
		t.Fatal("a clean report is not OK")
	}
	table := r.Table()
	for _, want := range []string{
		FailoverDefinition,
		"kill -9 leader                   2          2         2.00s         3.00s",
		"Redis restart                    1          1         1.50s         1.50s",
		"SIGSTOP leader                   0          0             -             -",
		"all faults                       3          3         2.00s         3.00s",
		"lost                                0  must be 0",
		"duplicates shown                    0  must be 0",
		"out of order                        0  must be 0",
		"messages acknowledged              10  edits and recalls included",
		"final views differing               0  must be 0; of 40 (client, message) pairs compared",
		"final-view checkpoints              4  info: after each fault and at the end; 0 skipped, 0 compared twice",
		"read positions went back            0  must be 0; of 12 positions compared at checkpoints",
		"edits acknowledged                  2",
		"recalls acknowledged                1",
		"reads sent                          9  info: 8 acknowledged, 1 refused",
		"typing sent                         3  info: 0 not answered or refused",
		"result: PASS",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	bad := r
	bad.Result.Lost = 1
	bad.Result.Problems = []string{"lost: m1 ..."}
	if bad.OK() || !strings.Contains(bad.Table(), "result: FAIL") || !strings.Contains(bad.Table(), "lost: m1 ...") {
		t.Errorf("a loss passes:\n%s", bad.Table())
	}
	bad = r
	bad.Result.FinalDiffers = 1
	if bad.OK() || !strings.Contains(bad.Table(), "final views differing               1  must be 0") {
		t.Errorf("a final view differing passes:\n%s", bad.Table())
	}
	bad = r
	bad.Result.ReadBack = 1
	if bad.OK() || !strings.Contains(bad.Table(), "read positions went back            1  must be 0") {
		t.Errorf("a read position gone back passes:\n%s", bad.Table())
	}
	bad = r
	bad.Result.CheckpointsSkipped = 1
	bad.Result.Skipped = []CheckpointResult{{Name: "after fault 2 (Redis restart)", Skipped: "c1 did not settle"}}
	if !strings.Contains(bad.Table(), "checkpoint after fault 2 (Redis restart) skipped: c1 did not settle") {
		t.Errorf("a skipped checkpoint is not shown:\n%s", bad.Table())
	}
	bad = r
	bad.Faults = append(slices.Clone(r.Faults[:2]), FaultRun{Fault: StopMongo, Target: "mongo", Note: "no delivery in 30s"})
	if bad.OK() || !strings.Contains(bad.Table(), "not recovered: MongoDB stop and start (mongo): no delivery in 30s") {
		t.Errorf("a fault without recovery passes:\n%s", bad.Table())
	}
	bad = r
	bad.Faults = r.Faults[:2]
	if bad.OK() {
		t.Error("a run that injected fewer faults than scheduled passes")
	}
	bad = r
	bad.Stopped = "time bound"
	if bad.OK() {
		t.Error("a run stopped early passes")
	}
}
