package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// Fields after the command: state, ppid, pgrp, session, tty_nr, tpgid,
	// flags, minflt, cminflt, majflt, cmajflt, utime (14), stime (15), ...
	line := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 9 0 100 0 0\n"
	d, err := parseStatCPU([]byte(line))
	if err != nil || d != 320*clockTick {
		t.Fatalf("parseStatCPU = %v, %v; want 3.2s", d, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12")); err == nil {
		t.Error("a zombie's times taken")
	}
	if _, err := parseStatCPU([]byte("4242 x S 1")); err == nil {
		t.Error("a line without a command name taken")
	}
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Errorf("own /proc stat: %v", err)
	}
	if selfCPU() <= 0 {
		t.Error("no CPU time for this process")
	}
}

func TestPidDirProcs(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"node-n1.pid": "101\n", "node-n2.pid": "102", "redis.pid": "103", "mongostore.pid": "104",
		"zookeeper.pid": "105", "gateway.pid": "106", "junk.pid": "not a pid", "node-n1.addr": "x", "env": "A=1",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := pidDirProcs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Name+"="+p.Group)
	}
	if want := "gateway=gateway mongostore=store node-n1=node node-n2=node redis=redis zookeeper=zookeeper"; strings.Join(got, " ") != want {
		t.Errorf("procs %v, want %s", got, want)
	}
	if _, err := pidDirProcs(t.TempDir()); err == nil {
		t.Error("an empty folder gave no error")
	}
}

func TestCPUBetween(t *testing.T) {
	procs := []serverProc{{Name: "node-n1", Group: groupNode, PID: 1}, {Name: "redis", Group: groupRedis, PID: 2},
		{Name: "gateway", Group: groupGateway, PID: 3}, {Name: "gone", Group: groupOther, PID: 4}}
	at := time.Unix(100, 0)
	a := cpuSnapshot{at: at, procs: procs, used: []time.Duration{time.Second, time.Second, 0, time.Second}, self: time.Second}
	b := cpuSnapshot{at: at.Add(10 * time.Second), procs: procs,
		used: []time.Duration{3 * time.Second, 2 * time.Second, 100 * time.Millisecond, -1}, self: 1500 * time.Millisecond}
	r := cpuBetween(a, b, 20000)
	// 2 s + 1 s on the chat path, 0.1 s more on the gateway, over 20,000.
	if r.ChatPathUsPerMsg != 150 || r.ServerUsPerMsg != 155 || r.BenchUsPerMsg != 25 || r.WindowSeconds != 10 || len(r.Processes) != 3 {
		t.Errorf("cpuBetween = %+v", r)
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "gone") {
		t.Errorf("notes %v, want one about the process that could not be read", r.Notes)
	}
	if z := cpuBetween(a, b, 0); z.ChatPathUsPerMsg != 0 || z.BenchUsPerMsg != 0 {
		t.Errorf("nothing delivered: %+v", z)
	}
}

// Delivered per second is over the time the deliveries took, from the
// first scheduled send to the last delivery, and counted per second.
func TestFinishDeliveryRate(t *testing.T) {
	trk := newTracker("rate")
	start := time.Unix(1000, 0)
	trk.setStart(start)
	for i := range 8 {
		due := start.Add(time.Duration(i) * 100 * time.Millisecond)
		k := trk.add(due, 1, 0)
		trk.reply(0, k, 0, due, "dm:a:b", int64(i+1))
		// The first four arrive at once, the rest trickle in until 4 s.
		at := due.Add(time.Millisecond)
		if i >= 4 {
			at = start.Add(time.Duration(i-3) * time.Second)
		}
		trk.deliver(1, k, at)
	}
	r := finish(trk, phaseOut{start: start, sendSecs: 0.8})
	if r.DeliverySeconds != 4 || r.DeliveredPerSec != 2 || r.Delivered != 8 {
		t.Errorf("delivered %d in %v s: %v/s; want 8 in 4 s, 2/s", r.Delivered, r.DeliverySeconds, r.DeliveredPerSec)
	}
	if got := r.DeliveredBySecond; len(got) != 5 || got[0] != 4 || got[1] != 1 || got[4] != 1 {
		t.Errorf("per second %v, want [4 1 1 1 1]", got)
	}
}
