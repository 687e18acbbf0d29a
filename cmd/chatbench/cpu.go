package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU is measured per process from /proc/PID/stat (user and system time,
// all threads, in clock ticks) at the start and end of the steady part of
// a run, the send phase, and divided by the deliveries that arrived in
// it: a cost per message that can be compared across runs on a noisy
// machine, where latency cannot.

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

// Process groups: what a process is to the cluster.
const (
	groupNode      = "node"
	groupRedis     = "redis"
	groupStore     = "store"
	groupZooKeeper = "zookeeper"
	groupGateway   = "gateway"
	groupRelay     = "relay"
	groupOther     = "other"
)

// serverProc is one process of the system under test.
type serverProc struct {
	Name  string // from its pid file: node-n1, redis, mongostore, ...
	Group string
	PID   int
}

// groupOf names the group of a process by its pid file's name.
func groupOf(name string) string {
	switch {
	case strings.HasPrefix(name, "node-"):
		return groupNode
	case name == "redis":
		return groupRedis
	case name == "mongostore" || name == "mongo" || name == "store":
		return groupStore
	case name == "zookeeper" || strings.HasPrefix(name, "zookeeper-"):
		return groupZooKeeper
	case name == "gateway":
		return groupGateway
	case name == "relay":
		return groupRelay
	}
	return groupOther
}

// pidDirProcs lists the processes whose pid files (NAME.pid) are in dir, as
// deploy/run.sh writes them, sorted by name. Files that hold no pid are
// skipped.
func pidDirProcs(dir string) ([]serverProc, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return nil, err
	}
	var out []serverProc
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(p), ".pid")
		out = append(out, serverProc{Name: name, Group: groupOf(name), PID: pid})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no pid files in %s", dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// procCPU returns the CPU time pid has used (user + system, all threads).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and
// may hold spaces, so fields are counted after its closing one.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name in /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	if f[0] == "Z" {
		return 0, errors.New("the process has exited")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad times in /proc/PID/stat")
	}
	return time.Duration(ut+st) * clockTick, nil
}

// selfCPU is the CPU time this process has used (all threads; not its
// children, so not the baseline relay).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg returns the 1, 5 and 15 minute load averages, "" if unknown.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuSnapshot is the CPU time of each server process and of chatbench at
// one moment.
type cpuSnapshot struct {
	at    time.Time
	procs []serverProc
	used  []time.Duration // per proc; -1: could not be read
	self  time.Duration
}

// takeCPU reads the CPU time of procs and of this process.
func takeCPU(procs []serverProc) cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), procs: procs, used: make([]time.Duration, len(procs)), self: selfCPU()}
	for i, p := range procs {
		d, err := procCPU(p.PID)
		if err != nil {
			d = -1
		}
		s.used[i] = d
	}
	return s
}

// CPUResult is the CPU the system under test and chatbench used in the
// steady part of a run (the send phase), per message delivered in it.
type CPUResult struct {
	WindowSeconds float64 `json:"windowSeconds"`
	Delivered     int64   `json:"delivered"` // deliveries that arrived in the window
	// Processes are the server processes, each with its CPU seconds in
	// the window and µs per delivery.
	Processes []ProcCPU `json:"processes,omitempty"`
	// ServerUsPerMsg is every server process together (for the cluster:
	// nodes, Redis, store, ZooKeeper and gateway; for the baseline: the
	// relay).
	ServerUsPerMsg float64 `json:"serverUsPerMsg,omitempty"`
	// ChatPathUsPerMsg is the nodes, Redis, the store and ZooKeeper: the
	// processes a message passes through or that keep the cluster
	// together (not the gateway, which only hands out nodes).
	ChatPathUsPerMsg float64 `json:"chatPathUsPerMsg,omitempty"`
	// BenchUsPerMsg is chatbench itself (sending, receiving, checking).
	BenchUsPerMsg float64  `json:"benchUsPerMsg"`
	Notes         []string `json:"notes,omitempty"`
}

// ProcCPU is one process's CPU in a window.
type ProcCPU struct {
	Name       string  `json:"name"`
	Group      string  `json:"group"`
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpuSeconds"`
	UsPerMsg   float64 `json:"usPerMsg"`
}

// cpuBetween turns two snapshots of the same processes, and the deliveries
// that arrived between them, into a CPUResult.
func cpuBetween(a, b cpuSnapshot, delivered int64) *CPUResult {
	r := &CPUResult{WindowSeconds: round3(b.at.Sub(a.at).Seconds()), Delivered: delivered}
	perMsg := func(d time.Duration) float64 {
		if delivered <= 0 {
			return 0
		}
		return math.Round(float64(d.Microseconds())/float64(delivered)*10) / 10
	}
	r.BenchUsPerMsg = perMsg(b.self - a.self)
	var all, chat time.Duration
	for i, p := range a.procs {
		if i >= len(b.procs) || b.procs[i].PID != p.PID || a.used[i] < 0 || b.used[i] < 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("%s (pid %d) could not be read at both ends of the window", p.Name, p.PID))
			continue
		}
		d := b.used[i] - a.used[i]
		r.Processes = append(r.Processes, ProcCPU{Name: p.Name, Group: p.Group, PID: p.PID, CPUSeconds: round3(d.Seconds()), UsPerMsg: perMsg(d)})
		all += d
		switch p.Group {
		case groupNode, groupRedis, groupStore, groupZooKeeper:
			chat += d
		}
	}
	if len(r.Processes) > 0 {
		r.ServerUsPerMsg = perMsg(all)
		r.ChatPathUsPerMsg = perMsg(chat)
	}
	return r
}
