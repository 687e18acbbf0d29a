package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where the run happened.
type Machine struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memoryBytes"`
	OS          string `json:"os"`
	Go          string `json:"go"`
	LoadAvg     string `json:"loadAvg"` // 1, 5 and 15 minute load averages when the run started
}

func readMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		m.CPU = procField(f, "model name")
		f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		kb := strings.TrimSuffix(procField(f, "MemTotal"), " kB")
		if n, err := strconv.ParseInt(strings.TrimSpace(kb), 10, 64); err == nil {
			m.MemoryBytes = n * 1024
		}
		f.Close()
	}
	return m
}

// procField returns the value of the first "key : value" line of a /proc
// file.
func procField(r io.Reader, key string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Figure is one number of a scenario on both targets.
type Figure struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Cluster  float64 `json:"cluster"`
	Baseline float64 `json:"baseline"`
	Ratio    float64 `json:"ratio"` // cluster / baseline; 0 when the baseline is 0
}

// Comparison sets a scenario's cluster figures beside the baseline's.
type Comparison struct {
	Label   string   `json:"label"`
	Figures []Figure `json:"figures"`
}

// figures lists the comparable numbers of a result.
func figures(r Result) []Figure {
	if r.Connect != nil {
		fs := []Figure{
			{Name: "logins per second", Unit: "/s", Cluster: r.Connect.PerSec},
			{Name: "connect+login p50", Unit: "ms", Cluster: r.Connect.Latency.P50Ms},
			{Name: "connect+login p99", Unit: "ms", Cluster: r.Connect.Latency.P99Ms},
			{Name: "failed connections", Unit: "", Cluster: float64(r.Connect.Failed)},
		}
		if r.Connect.BytesPerConn != 0 {
			fs = append(fs, Figure{Name: "resident memory per connection", Unit: "KiB", Cluster: math.Round(r.Connect.BytesPerConn/1024*10) / 10})
		}
		return fs
	}
	if s := r.Support; s != nil {
		fs := []Figure{
			{Name: "assignments per second", Unit: "/s", Cluster: s.AssignedPerSec},
			{Name: "wait for an agent p50", Unit: "ms", Cluster: s.Wait.P50Ms},
			{Name: "wait for an agent p90", Unit: "ms", Cluster: s.Wait.P90Ms},
			{Name: "wait for an agent p99", Unit: "ms", Cluster: s.Wait.P99Ms},
			{Name: "wait for an agent max", Unit: "ms", Cluster: s.Wait.MaxMs},
			{Name: "visitor to agent p50", Unit: "ms", Cluster: s.VisitorToAgent.P50Ms},
			{Name: "visitor to agent p99", Unit: "ms", Cluster: s.VisitorToAgent.P99Ms},
			{Name: "agent to visitor p50", Unit: "ms", Cluster: s.AgentToVisitor.P50Ms},
			{Name: "agent to visitor p99", Unit: "ms", Cluster: s.AgentToVisitor.P99Ms},
			{Name: "visitors never assigned", Unit: "", Cluster: float64(s.NeverAssigned)},
			{Name: "conversations unfinished", Unit: "", Cluster: float64(s.Unfinished)},
			{Name: "errors", Unit: "", Cluster: float64(r.Errors)},
		}
		if c := r.CPU; c != nil && c.Delivered > 0 && len(c.Processes) > 0 {
			fs = append(fs, Figure{Name: "server CPU per delivery", Unit: "µs", Cluster: c.ServerUsPerMsg})
		}
		return fs
	}
	fs := []Figure{
		{Name: "delivered per second", Unit: "/s", Cluster: r.DeliveredPerSec},
		{Name: "latency p50", Unit: "ms", Cluster: r.Latency.P50Ms},
		{Name: "latency p99", Unit: "ms", Cluster: r.Latency.P99Ms},
		{Name: "latency p99.9", Unit: "ms", Cluster: r.Latency.P999Ms},
		{Name: "errors", Unit: "", Cluster: float64(r.Errors)},
		{Name: "lost messages", Unit: "", Cluster: float64(r.Lost)},
	}
	if c := r.CPU; c != nil && c.Delivered > 0 {
		if len(c.Processes) > 0 {
			fs = append(fs, Figure{Name: "server CPU per delivery", Unit: "µs", Cluster: c.ServerUsPerMsg})
		}
		fs = append(fs, Figure{Name: "chatbench CPU per delivery", Unit: "µs", Cluster: c.BenchUsPerMsg})
	}
	if f := r.Failover; f != nil {
		fs = append(fs,
			Figure{Name: "disruption window (kill to routing restored)", Unit: "ms", Cluster: f.RestoredMs},
			Figure{Name: "kill to new leader listed by the gateway", Unit: "ms", Cluster: f.NewLeaderMs},
			Figure{Name: "kill to all clients of the killed node back", Unit: "ms", Cluster: f.ReconnectedMs},
			Figure{Name: "deliveries found by sync, not pushed", Unit: "", Cluster: float64(r.Recovered)},
		)
	}
	return fs
}

// compare sets the figures of a cluster result beside a baseline result of
// the same label, figure by figure name.
func compare(cluster, base Result) Comparison {
	c := Comparison{Label: cluster.Label}
	bf := map[string]float64{}
	for _, f := range figures(base) {
		bf[f.Name] = f.Cluster
	}
	for _, f := range figures(cluster) {
		f.Baseline = bf[f.Name]
		if f.Baseline != 0 {
			f.Ratio = math.Round(f.Cluster/f.Baseline*100) / 100
		}
		c.Figures = append(c.Figures, f)
	}
	return c
}

// compareAll pairs every cluster result with the baseline result of the
// same label.
func compareAll(rs []Result) []Comparison {
	var out []Comparison
	for _, c := range rs {
		if c.Target != "cluster" {
			continue
		}
		for _, b := range rs {
			if b.Target == "baseline" && b.Label == c.Label {
				out = append(out, compare(c, b))
				break
			}
		}
	}
	return out
}

// printSummary writes a plain-text summary of a run.
func printSummary(w io.Writer, run Run) {
	for _, r := range run.Results {
		if r.Connect != nil {
			fmt.Fprintf(w, "%-34s %-8s logged in %d failed %d, %.0f/s, p50 %.1f ms p99 %.1f ms", r.Label, r.Target,
				r.Connect.Conns, r.Connect.Failed, r.Connect.PerSec, r.Connect.Latency.P50Ms, r.Connect.Latency.P99Ms)
			if r.Connect.BytesPerConn != 0 {
				fmt.Fprintf(w, ", %.1f KiB/conn", r.Connect.BytesPerConn/1024)
			}
			fmt.Fprintln(w)
			continue
		}
		if s := r.Support; s != nil {
			fmt.Fprintf(w, "%-34s %-8s assigned %d of %d (%.1f/s), never assigned %d (%d could not open), finished %d, unfinished %d; wait p50 %.1f ms p90 %.1f ms p99 %.1f ms max %.1f ms; visitor→agent p50 %.2f ms p99 %.2f ms; agent→visitor p50 %.2f ms p99 %.2f ms; errors %d (%s)\n",
				r.Label, r.Target, s.Assigned, s.Visitors, s.AssignedPerSec, s.NeverAssigned, s.FailedToOpen, s.Finished, s.Unfinished,
				s.Wait.P50Ms, s.Wait.P90Ms, s.Wait.P99Ms, s.Wait.MaxMs, s.VisitorToAgent.P50Ms, s.VisitorToAgent.P99Ms,
				s.AgentToVisitor.P50Ms, s.AgentToVisitor.P99Ms, r.Errors, errorList(s.ErrorsByCode))
			continue
		}
		fmt.Fprintf(w, "%-34s %-8s sent %d acked %d delivered %d (%.0f/s over %.1fs) p50 %.2f ms p99 %.2f ms p99.9 %.2f ms errors %d unacked %d found by sync %d lost %d dup %d",
			r.Label, r.Target, r.Sent, r.Acked, r.Delivered, r.DeliveredPerSec, r.DeliverySeconds, r.Latency.P50Ms, r.Latency.P99Ms, r.Latency.P999Ms,
			r.Errors, r.Unacked, r.Recovered, r.Lost, r.Duplicates)
		if c := r.CPU; c != nil {
			if len(c.Processes) > 0 {
				fmt.Fprintf(w, ", CPU µs/delivery: server %.1f", c.ServerUsPerMsg)
				if c.ChatPathUsPerMsg > 0 {
					fmt.Fprintf(w, " (chat path %.1f)", c.ChatPathUsPerMsg)
				}
				fmt.Fprintf(w, ", chatbench %.1f", c.BenchUsPerMsg)
			} else {
				fmt.Fprintf(w, ", chatbench CPU %.1f µs/delivery", c.BenchUsPerMsg)
			}
		}
		fmt.Fprintln(w)
	}
	for _, c := range run.Comparisons {
		fmt.Fprintf(w, "%s, cluster/baseline:", c.Label)
		for _, f := range c.Figures {
			if f.Ratio != 0 {
				fmt.Fprintf(w, " %s %.2f;", f.Name, f.Ratio)
			}
		}
		fmt.Fprintln(w)
	}
}
