package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment variables of the 3-server ZooKeeper ensemble that
// deploy/with-deps.sh starts when CHAT_TEST_ZK_ENSEMBLE=1 (`make test`
// does).
const (
	EnvZKEnsemble    = "CHAT_TEST_ZK_ENSEMBLE"     // host:port,host:port,host:port
	EnvZKEnsembleDir = "CHAT_TEST_ZK_ENSEMBLE_DIR" // zk1..zk3: pid, port, log, start
)

// ZKEnsemble returns the client addresses of the test ensemble's three
// servers, failing the test if it does not run.
func ZKEnsemble(t testing.TB) []string {
	t.Helper()
	v := os.Getenv(EnvZKEnsemble)
	if v == "" || v == "1" || os.Getenv(EnvZKEnsembleDir) == "" {
		t.Fatalf("%s is not set: this test needs the 3-server ZooKeeper ensemble. Run it through `make test`, "+
			"or `CHAT_TEST_ZK_ENSEMBLE=1 deploy/with-deps.sh go test ./...`", EnvZKEnsemble)
	}
	return strings.Split(v, ",")
}

// ZKServer is one server of the test ensemble. The ensemble is shared by
// every test of the run, whose packages run in parallel: a test that stops
// a server holds LockEnsemble (Kill takes it if the test does not hold it
// yet) and gets the server back when it ends.
type ZKServer struct {
	N    int    // 1, 2 or 3
	Addr string // client address, 127.0.0.1:port
	dir  string
}

// ZKEnsembleServer returns server n (1..3) of the test ensemble.
func ZKEnsembleServer(t testing.TB, n int) *ZKServer {
	t.Helper()
	addrs := ZKEnsemble(t)
	if n < 1 || n > len(addrs) {
		t.Fatalf("testenv: no ensemble server %d", n)
	}
	return &ZKServer{N: n, Addr: addrs[n-1], dir: filepath.Join(os.Getenv(EnvZKEnsembleDir), fmt.Sprintf("zk%d", n))}
}

// Pid is the server's current process id (0 if unknown).
func (s *ZKServer) Pid() int {
	b, err := os.ReadFile(filepath.Join(s.dir, "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Running reports whether the server's process is alive.
func (s *ZKServer) Running() bool { return processAlive(s.Pid()) }

// Mode is the server's mode ("leader", "follower", "standalone"), or "" if
// it does not serve (down, or without a quorum).
func (s *ZKServer) Mode() string { return zkMode(s.Addr) }

// Kill stops the server with SIGKILL and waits until it is gone. When the
// test ends the server is started again (and waited for) if it is down.
// The test holds LockEnsemble from then on, if it did not already.
func (s *ZKServer) Kill(t testing.TB) {
	t.Helper()
	LockEnsemble(t)
	pid := s.Pid()
	if !processAlive(pid) {
		return
	}
	// The server leads its own process group (the start script runs it
	// under setsid).
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatalf("testenv: kill ZooKeeper server %d: %v", s.N, err)
	}
	WaitFor(t, 10*time.Second, fmt.Sprintf("ZooKeeper server %d gone", s.N), func() bool { return !processAlive(pid) })
	t.Cleanup(func() {
		if !s.Running() {
			s.Start(t)
		}
		s.WaitServing(t)
	})
}

// Start starts the server again after Kill; it does not wait (a server
// alone cannot serve without a quorum): see WaitServing.
func (s *ZKServer) Start(t testing.TB) {
	t.Helper()
	if s.Running() {
		return
	}
	if out, err := exec.Command(filepath.Join(s.dir, "start")).CombinedOutput(); err != nil {
		t.Fatalf("testenv: start ZooKeeper server %d: %v\n%s", s.N, err, out)
	}
}

// WaitServing waits until the server answers as a leader or follower.
func (s *ZKServer) WaitServing(t testing.TB) {
	t.Helper()
	WaitFor(t, 30*time.Second, fmt.Sprintf("ZooKeeper server %d (%s) serving", s.N, s.Addr), func() bool {
		return zkMode(s.Addr) != ""
	})
}

// zkMode asks a ZooKeeper server for "srvr" (the scripts allow the
// four-letter words) and returns its mode (standalone, leader, follower),
// or "" if it does not serve.
func zkMode(addr string) string {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("srvr")); err != nil {
		return ""
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if mode, ok := strings.CutPrefix(sc.Text(), "Mode: "); ok {
			return strings.TrimSpace(mode)
		}
	}
	return ""
}

// processAlive reports whether pid is a live process; a zombie is dead
// (orphans may stay zombies where nothing reaps them).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// ensembleLockTimeout bounds the wait for LockEnsemble: other tests hold
// it for a few tens of seconds each.
const ensembleLockTimeout = 5 * time.Minute

var ensembleLocks struct {
	mu    sync.Mutex
	held  map[string]bool // names of the tests of this process holding the lock
	local sync.Mutex      // held by the one test of this process that holds the flock
}

// holdsEnsemble reports whether t or a test it runs under holds the lock.
func holdsEnsemble(t testing.TB) bool {
	ensembleLocks.mu.Lock()
	defer ensembleLocks.mu.Unlock()
	for name := range ensembleLocks.held {
		if t.Name() == name || strings.HasPrefix(t.Name(), name+"/") {
			return true
		}
	}
	return false
}

// LockEnsemble makes t the only test, in any package of the run, that may
// take servers of the ZooKeeper ensemble away, until t ends. It waits for
// the lock (an flock on a file in the ensemble folder, so test binaries of
// other packages wait too), then until all three servers serve, so that the
// test starts from a whole ensemble. Calling it again in the same test or
// in one of its subtests does nothing. Tests that only use the ensemble
// need not lock it.
func LockEnsemble(t testing.TB) {
	t.Helper()
	ZKEnsemble(t)
	if holdsEnsemble(t) {
		return
	}

	// Tests of this process queue on a mutex: flock is per open file, and
	// the process must not wait on itself through two files.
	ensembleLocks.local.Lock()
	path := filepath.Join(os.Getenv(EnvZKEnsembleDir), "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		ensembleLocks.local.Unlock()
		t.Fatalf("testenv: ensemble lock: %v", err)
	}
	start := time.Now()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil || !errors.Is(err, syscall.EWOULDBLOCK) || time.Since(start) > ensembleLockTimeout {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		ensembleLocks.local.Unlock()
		t.Fatalf("testenv: ensemble lock %s not acquired after %s: %v", path, time.Since(start).Round(time.Millisecond), err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("testenv: waited %s for the ensemble lock", d.Round(time.Millisecond))
	}
	ensembleLocks.mu.Lock()
	if ensembleLocks.held == nil {
		ensembleLocks.held = map[string]bool{}
	}
	ensembleLocks.held[t.Name()] = true
	ensembleLocks.mu.Unlock()
	// Registered before any Kill's clean-up, so it runs after them: the
	// servers are back before the next test gets the lock.
	t.Cleanup(func() {
		ensembleLocks.mu.Lock()
		delete(ensembleLocks.held, t.Name())
		ensembleLocks.mu.Unlock()
		f.Close() // releases the flock
		ensembleLocks.local.Unlock()
	})
	for i := 1; i <= 3; i++ {
		ZKEnsembleServer(t, i).WaitServing(t)
	}
}
