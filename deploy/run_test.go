package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatcluster/internal/testenv"
)

// Bounds of the waits. They are far above what a run takes; a loaded
// two-core machine must not turn them into failures.
const (
	// run.sh builds the binaries before it starts anything: from a cold
	// build cache, on two busy cores, that alone can take minutes.
	upTimeout = 8 * time.Minute
	// run.sh's own bounds while stopping: 30 s for the nodes, 10 s for the
	// gateway, 20 s for each dependency, then SIGKILL.
	stopTimeout = 3 * time.Minute
	waitTimeout = time.Minute
	nodes       = 2
)

// run is one deploy/run.sh of a test, with its own data folder and ports.
// Its methods are meant for the test goroutine.
type run struct {
	root   string // the checkout
	data   string // CHAT_DATA_DIR
	base   int    // the first of its ports, see ports
	out    string // file with run.sh's stdout and stderr
	cmd    *exec.Cmd
	exited chan struct{} // closed once run.sh was waited for
	err    error         // cmd.Wait's result; read after exited is closed
}

// newRun prepares a run.sh on data (which may hold leftovers the test put
// there) and free ports; start starts it.
func newRun(t *testing.T, data string) *run {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	r := &run{root: root, data: data, base: testenv.PortBlock(t, 5+3*nodes), out: filepath.Join(t.TempDir(), "run.out")}
	t.Cleanup(func() { r.cleanup(t) })
	return r
}

// ports lists what run.sh is told to listen on, by name.
func (r *run) ports() map[string]int {
	p := map[string]int{
		"zookeeper": r.base, "redis": r.base + 1, "mongostore": r.base + 2,
		"gateway": r.base + 3, "gateway admin": r.base + 4,
	}
	for i := range nodes {
		p[fmt.Sprintf("n%d", i+1)] = r.base + 5 + i
		p[fmt.Sprintf("n%d peer link", i+1)] = r.base + 5 + nodes + i
		p[fmt.Sprintf("n%d admin", i+1)] = r.base + 5 + 2*nodes + i
	}
	return p
}

func (r *run) gateway() string { return fmt.Sprintf("127.0.0.1:%d", r.ports()["gateway"]) }

// env is the environment of run.sh and add-node.sh: this process's without
// any CHAT_ setting, then the run's.
func (r *run) env() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CHAT_") })
	p := r.ports()
	return append(env,
		"CHAT_DATA_DIR="+r.data,
		"CHAT_SKIP_INSTALL=1",
		"CHAT_DEMO=0",
		"CHAT_BCRYPT_COST=4",
		"CHAT_NODES="+strconv.Itoa(nodes),
		"CHAT_ZK_PORT="+strconv.Itoa(p["zookeeper"]),
		"CHAT_REDIS_PORT="+strconv.Itoa(p["redis"]),
		"CHAT_MONGO_PORT="+strconv.Itoa(p["mongostore"]),
		"CHAT_GATEWAY_ADDR="+r.gateway(),
		fmt.Sprintf("CHAT_GATEWAY_ADMIN_ADDR=127.0.0.1:%d", p["gateway admin"]),
		"CHAT_NODE_PORT="+strconv.Itoa(p["n1"]),
		"CHAT_PEER_PORT="+strconv.Itoa(p["n1 peer link"]),
		"CHAT_ADMIN_PORT="+strconv.Itoa(p["n1 admin"]),
	)
}

// start starts run.sh in a process group of its own, as make's would be, so
// that the test can signal the script alone or its whole group. INT, QUIT,
// TERM and HUP are set back to their default first: a test binary started
// in the background would pass SIGINT on ignored, and a shell cannot trap
// a signal ignored on entry.
func (r *run) start(t *testing.T) {
	t.Helper()
	out, err := os.Create(r.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // run.sh has its own copy
	args := []string{filepath.Join(r.root, "deploy", "run.sh")}
	if exec.Command("env", "--default-signal=INT,QUIT,TERM,HUP", "true").Run() == nil {
		args = append([]string{"env", "--default-signal=INT,QUIT,TERM,HUP"}, args...)
	}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.Dir = r.root
	r.cmd.Env = r.env()
	r.cmd.Stdout, r.cmd.Stderr = out, out
	// Should this test binary die, run.sh dies, and its watchdog then
	// kills what it started.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := testenv.Spawn(r.cmd); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
}

func (r *run) running() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// output is what run.sh printed so far.
func (r *run) output() string {
	b, _ := os.ReadFile(r.out)
	return string(b)
}

// waitUp waits until run.sh says the cluster is up and the gateway lists
// every node.
func (r *run) waitUp(t *testing.T) {
	t.Helper()
	testenv.WaitFor(t, upTimeout, "run.sh says the cluster is up", func() bool {
		if !r.running() {
			t.Fatalf("run.sh exited (%v) before the cluster was up:\n%s", r.err, r.output())
		}
		return strings.Contains(r.output(), "chat cluster is up")
	})
	want := make([]string, nodes)
	for i := range want {
		want[i] = fmt.Sprintf("n%d", i+1)
	}
	r.waitNodes(t, want...)
}

// waitNodes waits until the gateway's GET /api/nodes lists exactly ids.
func (r *run) waitNodes(t *testing.T, ids ...string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	testenv.WaitFor(t, waitTimeout, fmt.Sprintf("the gateway lists nodes %v", ids), func() bool {
		resp, err := client.Get("http://" + r.gateway() + "/api/nodes")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var reply struct {
			Nodes []struct{ ID string } `json:"nodes"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&reply) != nil {
			return false
		}
		got := make([]string, 0, len(reply.Nodes))
		for _, n := range reply.Nodes {
			got = append(got, n.ID)
		}
		slices.Sort(got)
		return slices.Equal(got, ids)
	})
}

// pids reads the run's pid files: name (zookeeper, node-n1, ...) to pid.
func (r *run) pids(t *testing.T) map[string]int {
	t.Helper()
	pids, err := r.readPids()
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// readPids reads the run's pid files; it returns an error for a file that
// does not hold a pid, with the pids of the others.
func (r *run) readPids() (map[string]int, error) {
	files, _ := filepath.Glob(filepath.Join(r.data, "run", "*.pid"))
	pids := map[string]int{}
	var bad error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && bad == nil {
			bad = err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			bad = fmt.Errorf("%s does not hold a pid: %q", f, b)
			continue
		}
		pids[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
	}
	return pids, bad
}

// signal sends sig to run.sh alone; signalGroup to its whole process group.
func (r *run) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to run.sh: %v", sig, err)
	}
}

func (r *run) signalGroup(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("%v to run.sh's process group: %v", sig, err)
	}
}

// waitExit waits until run.sh has exited and fails the test unless it
// ended with status 0 after printing "stopped".
func (r *run) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(stopTimeout):
		t.Fatalf("run.sh still running %s after it was told to stop:\n%s", stopTimeout, r.output())
	}
	if r.err != nil {
		t.Errorf("run.sh: %v", r.err)
	}
	if out := strings.TrimSpace(r.output()); !strings.HasSuffix(out, "run.sh: stopped") {
		t.Errorf("run.sh's output does not end with \"run.sh: stopped\":\n%s", out)
	}
}

// checkStopped checks, once run.sh has exited, that nothing it started is
// left: none of pids runs, none of its ports accepts connections, and no
// process (the processes' supervisors, its watchdog, ...) names its data
// folder or works in it.
func (r *run) checkStopped(t *testing.T, pids map[string]int) {
	t.Helper()
	for name, pid := range pids {
		if processAlive(pid) {
			t.Errorf("%s (pid %d) still runs after run.sh exited", name, pid)
		}
	}
	ours := map[int]bool{}
	for _, pid := range pids {
		ours[pid] = true
	}
	for name, port := range r.ports() {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			continue
		}
		c.Close()
		// Tests of other packages pick ports from the same range, and
		// one may have taken a port the run gave back: only a listener
		// of the run's own counts.
		for _, pid := range listeners(port) {
			if ours[pid] || runs(pid, r.data) || runs(pid, filepath.Join(r.root, "bin")) {
				t.Errorf("port %d (%s) still accepts connections after run.sh exited: %s", port, name, describe(pid))
			} else {
				t.Logf("port %d (%s) is taken again, by a process that is not the run's: %s", port, name, describe(pid))
			}
		}
	}
	var last []string
	testenv.WaitFor(t, waitTimeout, "no process names the run's data folder or works in it", func() bool {
		left := processesIn(r.data)
		if !slices.Equal(left, last) && len(left) > 0 {
			t.Logf("still there: %s", strings.Join(left, "; "))
		}
		last = left
		return len(left) == 0
	})
}

// cleanup stops what a failed test left running and shows the logs.
func (r *run) cleanup(t *testing.T) {
	if r.cmd != nil && r.running() {
		// Without run.sh, its watchdog kills what it started; do it here
		// too rather than wait for that.
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
	pids, _ := r.readPids()
	for _, pid := range pids {
		if runs(pid, r.data) || runs(pid, filepath.Join(r.root, "bin")) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !t.Failed() {
		return
	}
	t.Logf("---- run.sh's output ----\n%s", r.output())
	logs, _ := filepath.Glob(filepath.Join(r.data, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("---- last lines of %s ----\n%s", l, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}

// processAlive reports whether pid is a process that has not ended (a
// zombie has).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := bytes.Cut(b, []byte(") "))
	return ok && len(rest) > 0 && rest[0] != 'Z'
}

// runs reports whether pid is alive and its command line names a path in
// dir or its working folder is in dir (redis-server rewrites its command
// line, but works in its data folder).
func runs(pid int, dir string) bool {
	if !processAlive(pid) {
		return false
	}
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return cwd == dir || strings.HasPrefix(cwd, dir+"/") || bytes.Contains(cmdline, []byte(dir+"/"))
}

// processesIn lists the processes other than this one that runs finds
// for dir, described as describe does.
func processesIn(dir string) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var found []string
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err == nil && pid != os.Getpid() && runs(pid, dir) {
			found = append(found, describe(pid))
		}
	}
	return found
}

// listeners returns the processes that hold a socket listening on TCP
// port of 127.0.0.1 (or of every address), from /proc/net/tcp and their
// open files.
func listeners(port int) []int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
			continue
		}
		addr, hexPort, ok := strings.Cut(f[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); !ok || err != nil || int(p) != port || addr != "0100007F" && addr != "00000000" {
			continue
		}
		inodes["socket:["+f[9]+"]"] = true
	}
	if len(inodes) == 0 {
		return nil
	}
	var out []int
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if link, err := os.Readlink(fd); err == nil && inodes[link] {
			if pid, err := strconv.Atoi(strings.Split(fd, "/")[2]); err == nil && !slices.Contains(out, pid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// describe is "pid command line" of a process.
func describe(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return fmt.Sprintf("%d %s", pid, bytes.TrimSpace(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

// startProcess starts a long-lived process that is not the run's, killed
// when the test ends.
func startProcess(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := testenv.Spawn(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRunStopsEverythingDespiteASecondSignal: a second signal while run.sh
// is stopping (a second Ctrl-C; make passing its SIGTERM on; a SIGTERM to
// the whole process group, which also reaches the subshells run.sh stops
// its processes with) does not cut the stopping short: once run.sh has
// exited, nothing it started is left.
func TestRunStopsEverythingDespiteASecondSignal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second func(*testing.T, *run)
	}{
		{"SIGINT then SIGINT", func(t *testing.T, r *run) { r.signal(t, syscall.SIGINT) }},
		{"SIGINT then SIGTERM to the process group", func(t *testing.T, r *run) { r.signalGroup(t, syscall.SIGTERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(t, t.TempDir())
			r.start(t)
			r.waitUp(t)
			pids := r.pids(t)
			if len(pids) != 4+nodes {
				t.Fatalf("pid files %v, want zookeeper, redis, mongostore, gateway and %d nodes", pids, nodes)
			}

			r.signal(t, syscall.SIGINT)
			testenv.WaitFor(t, waitTimeout, "run.sh begins stopping", func() bool {
				return strings.Contains(r.output(), "stopping nodes")
			})
			if !r.running() {
				t.Fatalf("run.sh had stopped before the second signal:\n%s", r.output())
			}
			tc.second(t, r)
			r.waitExit(t)
			r.checkStopped(t, pids)
		})
	}
}

// TestRunStartsOverStalePidFiles: pid files left by an earlier run whose
// processes are gone, or whose pids now belong to processes that are not
// the run's, do not block a start, and run.sh leaves those processes
// alone.
func TestRunStartsOverStalePidFiles(t *testing.T) {
	data := t.TempDir()
	ended := exec.Command("true")
	if err := ended.Run(); err != nil {
		t.Fatal(err)
	}
	other := startProcess(t, t.TempDir(), "sleep", "600")
	writeFile(t, filepath.Join(data, "run", "zookeeper.pid"), fmt.Sprintf("%d\n", ended.Process.Pid))
	writeFile(t, filepath.Join(data, "run", "gateway.pid"), fmt.Sprintf("%d\n", other.Process.Pid))
	writeFile(t, filepath.Join(data, "run", "node-n1.pid"), "not a pid\n")

	r := newRun(t, data)
	r.start(t)
	r.waitUp(t)
	pids := r.pids(t)
	if pids["gateway"] == other.Process.Pid {
		t.Fatalf("gateway.pid still holds the stale pid %d", other.Process.Pid)
	}

	r.signal(t, syscall.SIGTERM)
	r.waitExit(t)
	r.checkStopped(t, pids)
	if !processAlive(other.Process.Pid) {
		t.Errorf("run.sh stopped pid %d, which a stale pid file named but which is not the run's", other.Process.Pid)
	}
}

// TestRunRefusesLeftoversThatRun: a pid file whose process still runs and
// is the run's (here: works in its data folder) makes run.sh refuse to
// start, naming the process, and leave it alone.
func TestRunRefusesLeftoversThatRun(t *testing.T) {
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "redis"), 0o755); err != nil {
		t.Fatal(err)
	}
	left := startProcess(t, filepath.Join(data, "redis"), "sleep", "600")
	writeFile(t, filepath.Join(data, "run", "redis.pid"), fmt.Sprintf("%d\n", left.Process.Pid))

	r := newRun(t, data)
	r.start(t)
	select {
	case <-r.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("run.sh still running %s after it should have refused to start:\n%s", waitTimeout, r.output())
	}
	out := r.output()
	if r.err == nil || !strings.Contains(out, "still running") || !strings.Contains(out, strconv.Itoa(left.Process.Pid)) {
		t.Fatalf("run.sh: %v, output:\n%s\nwant an error naming pid %d", r.err, out, left.Process.Pid)
	}
	if !processAlive(left.Process.Pid) {
		t.Errorf("run.sh stopped the process it refused to start over")
	}
	for name, port := range r.ports() {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d (%s) accepts connections, but run.sh refused to start", port, name)
		}
	}
}

// TestRunRestartsANode: a node stopped on purpose (SIGTERM, as in a
// rolling upgrade) is reported as stopped, one killed as exited
// unexpectedly; deploy/add-node.sh with the id alone starts either again
// on its ports, and run.sh stops the new processes with the rest.
func TestRunRestartsANode(t *testing.T) {
	r := newRun(t, t.TempDir())
	r.start(t)
	r.waitUp(t)
	pids := r.pids(t)

	restart := func(id string) int {
		t.Helper()
		// add-node.sh waits up to 60 s for the node itself.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		add := exec.CommandContext(ctx, filepath.Join(r.root, "deploy", "add-node.sh"), id)
		add.Dir, add.Env = r.root, r.env()
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("deploy/add-node.sh %s: %v\n%s", id, err, out)
		}
		pid := r.pids(t)["node-"+id]
		if pid == pids["node-"+id] || !processAlive(pid) {
			t.Fatalf("node-%s.pid holds %d after the restart (was %d)", id, pid, pids["node-"+id])
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.ports()[id]), 5*time.Second); err != nil {
			t.Fatalf("restarted %s does not listen on its port: %v", id, err)
		} else {
			c.Close()
		}
		return pid
	}
	waitOutput := func(want string) {
		t.Helper()
		testenv.WaitFor(t, waitTimeout, "run.sh reports: "+want, func() bool {
			return strings.Contains(r.output(), want)
		})
	}

	n1 := pids["node-n1"]
	if err := syscall.Kill(n1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitOutput(fmt.Sprintf("n1 (pid %d) stopped (exit status 0)", n1))
	r.waitNodes(t, "n2")
	if out := r.output(); strings.Contains(out, "unexpectedly") {
		t.Fatalf("run.sh reported a node stopped on purpose as an unexpected exit:\n%s", out)
	}
	restarted := map[string]int{"node-n1 (restarted)": restart("n1")}
	r.waitNodes(t, "n1", "n2")

	n2 := pids["node-n2"]
	if err := syscall.Kill(n2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitOutput(fmt.Sprintf("n2 (pid %d) exited unexpectedly (ended by SIGKILL)", n2))
	restarted["node-n2 (restarted)"] = restart("n2")
	r.waitNodes(t, "n1", "n2")

	r.signal(t, syscall.SIGTERM)
	r.waitExit(t)
	maps.Copy(pids, restarted)
	r.checkStopped(t, pids)
}
