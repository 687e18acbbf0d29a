package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Private dependency servers: a Redis or a mongostore of one test's own, on
// a loopback port that stays the same across Kill and Start, so that a test
// can take the server away and bring it back while a cluster points at it
// (see Options.Redis and Options.Mongo). Each is stopped when the test ends.

// server is one private dependency process with a fixed port and folder.
// Its methods are meant for the test goroutine; mu guards the process
// fields, which the cleanup also reads.
type server struct {
	name string // "redis" or "mongostore", for messages
	port int
	dir  string
	log  string
	args func() []string // the command line of one start
	// more, if set, picks the other ports the server listens on (a Redis
	// Cluster node's bus) with each port startFresh tries.
	more func(t testing.TB)

	mu     sync.Mutex
	cmd    *exec.Cmd     // the current (or last) process; guarded by mu
	exited chan struct{} // closed once cmd was waited for; guarded by mu
}

// running reports whether the server's process was started and has not
// exited.
func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// pid is the current process's id, 0 if none runs.
func (s *server) pid() int {
	if !s.running() {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// launch starts the process; it does not wait for it to serve. It reports
// the log's size before the start, so that a wait can look only at what
// this start wrote.
func (s *server) launch() (logOffset int64, exited chan struct{}, err error) {
	args := s.args()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	if st, err := logf.Stat(); err == nil {
		logOffset = st.Size()
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test process dies without cleaning up, the server dies too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		return 0, nil, err
	}
	exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return logOffset, exited, nil
}

// start launches the server and waits until ready reports it serves. It
// returns errAddrInUse if the process could not bind its port.
func (s *server) start(t testing.TB, ready func(logOffset int64) bool) error {
	t.Helper()
	if s.running() {
		return nil
	}
	off, exited, err := s.launch()
	if err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	var early bool // exited before serving
	waited := false
	defer func() { // WaitFor ends the goroutine when it times out
		if !waited {
			t.Logf("testenv: log of %s:\n%s", s.name, tailLines(s.log, 15))
		}
	}()
	WaitFor(t, startTimeout, fmt.Sprintf("%s serves on 127.0.0.1:%d", s.name, s.port), func() bool {
		select {
		case <-exited:
			early = true
			return true
		default:
		}
		return ready(off)
	})
	waited = true
	if early {
		tail := tailLines(s.log, 15)
		if bytes.Contains(bytes.ToLower(tail), []byte(errAddrInUse.Error())) {
			return fmt.Errorf("%w (%s on 127.0.0.1:%d)", errAddrInUse, s.name, s.port)
		}
		s.mu.Lock()
		state := s.cmd.ProcessState
		s.mu.Unlock()
		return fmt.Errorf("%s exited during start-up (%s); log:\n%s", s.name, state, tail)
	}
	return nil
}

// signal sends sig to the process and waits up to d for it to exit. It reports whether the process is gone (true if none ran).
func (s *server) signal(sig syscall.Signal, d time.Duration) bool {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-exited:
		return true
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (s *server) kill(t testing.TB) {
	t.Helper()
	if !s.signal(syscall.SIGKILL, stopTimeout) {
		t.Fatalf("testenv: %s still there %s after SIGKILL", s.name, stopTimeout)
	}
}

// stop sends SIGTERM and waits until the process exited; one that does not
// exit in time is killed and the test fails.
func (s *server) stop(t testing.TB) {
	t.Helper()
	if !s.signal(syscall.SIGTERM, stopTimeout) {
		t.Errorf("testenv: %s did not exit within %s of SIGTERM; killed it", s.name, stopTimeout)
		s.kill(t)
	}
}

// cleanup kills the process at the end of the test and shows the end of
// its log if the test failed.
func (s *server) cleanup(t testing.TB) {
	t.Cleanup(func() {
		if !s.signal(syscall.SIGKILL, stopTimeout) {
			t.Errorf("testenv: %s still there %s after SIGKILL", s.name, stopTimeout)
		}
		if t.Failed() {
			t.Logf("---- last %d lines of %s (%s) ----\n%s", logTailLines, s.name, s.log, tailLines(s.log, logTailLines))
		}
	})
}

// startFresh picks a port and starts the server, trying other ports if the
// one picked was taken in the meantime.
func (s *server) startFresh(t testing.TB, ready func(int64) bool) {
	t.Helper()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		s.port = stablePort(t)
		if s.more != nil {
			s.more(t)
		}
		if err = s.start(t, ready); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// ---- Redis ------------------------------------------------------------------

// RedisServer is a redis-server of one test's own, without persistence:
// after Kill and Start (or Restart) it is empty, like a Redis that lost its
// memory.
type RedisServer struct{ s server }

// StartRedis starts a private Redis on a free loopback port and waits until
// it answers PING. It is killed when the test ends.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, "redis")
}

// startRedis starts a private Redis named name, with extra arguments.
func startRedis(t testing.TB, name string, extra ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found: run deploy/install.sh (as root), then the tests through `make test` or deploy/with-deps.sh")
	}
	r := &RedisServer{s: server{name: name, dir: t.TempDir()}}
	r.s.log = filepath.Join(r.s.dir, "redis.log")
	// A cluster node's bus listens on a port of its own, picked like the
	// client port: Redis's default, the port plus 10000, falls in the
	// kernel's range of ports for outgoing connections, where one may
	// hold it.
	bus := 0
	if slices.Contains(extra, "--cluster-enabled") {
		r.s.more = func(t testing.TB) { bus = stablePort(t) }
	}
	r.s.args = func() []string {
		args := append([]string{bin, "--port", strconv.Itoa(r.s.port), "--bind", "127.0.0.1", "--dir", r.s.dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "", "--loglevel", "warning"}, extra...)
		if bus != 0 {
			args = append(args, "--cluster-port", strconv.Itoa(bus))
		}
		return args
	}
	r.s.cleanup(t)
	r.s.startFresh(t, r.ready)
	return r
}

// ---- Redis with Sentinel ----------------------------------------------------

// SentinelRedis is a Redis master, one replica of it and three Sentinels
// (Debian's redis-sentinel) watching it under SentinelMaster, all of one
// test's own: killing the master has the Sentinels promote the replica.
type SentinelRedis struct {
	Master, Replica *RedisServer
	sentinels       []*server
}

// SentinelMaster is the name the Sentinels know the master by.
const SentinelMaster = "chat"

// StartSentinelRedis starts the master, the replica and the Sentinels, and
// waits until the replica is in sync and the Sentinels can fail over
// (SENTINEL CKQUORUM). A master unreachable for 1 s is taken as down.
func StartSentinelRedis(t testing.TB) *SentinelRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		t.Fatalf("testenv: redis-sentinel not found: run deploy/install.sh (as root), then the tests through `make test` or deploy/with-deps.sh")
	}
	sr := &SentinelRedis{Master: startRedis(t, "redis master")}
	sr.Replica = startRedis(t, "redis replica", "--replicaof", "127.0.0.1", strconv.Itoa(sr.Master.s.port))
	for i := range 3 {
		s := &server{name: fmt.Sprintf("sentinel %d", i+1), dir: t.TempDir()}
		s.log = filepath.Join(s.dir, "sentinel.log")
		conf := filepath.Join(s.dir, "sentinel.conf")
		s.args = func() []string {
			// Sentinel rewrites its file as it learns; a fresh start
			// begins from this one.
			body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel resolve-hostnames no\n"+
				"sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[3]s 1000\n"+
				"sentinel failover-timeout %[3]s 10000\nsentinel parallel-syncs %[3]s 1\n",
				s.port, s.dir, SentinelMaster, sr.Master.s.port)
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				t.Errorf("testenv: writing %s: %v", conf, err)
			}
			return []string{bin, conf, "--daemonize", "no", "--logfile", "", "--loglevel", "notice"}
		}
		s.cleanup(t)
		s.startFresh(t, func(int64) bool { return pingOK(fmt.Sprintf("127.0.0.1:%d", s.port)) })
		sr.sentinels = append(sr.sentinels, s)
	}
	WaitFor(t, startTimeout, "the replica is in sync and the Sentinels can fail over", func() bool {
		return sr.replicaInSync() && sr.quorum()
	})
	return sr
}

// Sentinels are the Sentinels' addresses, host:port.
func (sr *SentinelRedis) Sentinels() []string {
	out := make([]string, len(sr.sentinels))
	for i, s := range sr.sentinels {
		out[i] = fmt.Sprintf("127.0.0.1:%d", s.port)
	}
	return out
}

// CurrentMaster is the master's address as the first Sentinel that answers
// names it, "" if none does.
func (sr *SentinelRedis) CurrentMaster() string {
	for _, a := range sr.Sentinels() {
		c := redis.NewSentinelClient(&redis.Options{Addr: a, DialTimeout: time.Second, ReadTimeout: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addr, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		cancel()
		c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1])
		}
	}
	return ""
}

func (sr *SentinelRedis) replicaInSync() bool {
	c := redis.NewClient(&redis.Options{Addr: sr.Replica.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "replication").Result()
	return err == nil && strings.Contains(info, "master_link_status:up")
}

func (sr *SentinelRedis) quorum() bool {
	for _, a := range sr.Sentinels() {
		c := redis.NewSentinelClient(&redis.Options{Addr: a, DialTimeout: time.Second, ReadTimeout: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.CkQuorum(ctx, SentinelMaster).Result()
		// Each Sentinel must also know the others and the replica.
		var replicas []map[string]string
		if err == nil {
			replicas, err = c.Replicas(ctx, SentinelMaster).Result()
		}
		cancel()
		c.Close()
		if err != nil || !slices.ContainsFunc(replicas, func(r map[string]string) bool { return r["flags"] == "slave" }) {
			return false
		}
	}
	return true
}

// pingOK reports whether the Redis protocol server at addr answers PING.
func pingOK(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Addr is the server's address, 127.0.0.1:port; it does not change.
func (r *RedisServer) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.s.port) }

// Running reports whether the server's process runs.
func (r *RedisServer) Running() bool { return r.s.running() }

// Pid is the process id of the running server, 0 if none runs.
func (r *RedisServer) Pid() int { return r.s.pid() }

// Kill stops the server with SIGKILL and waits until it is gone.
func (r *RedisServer) Kill(t testing.TB) {
	t.Helper()
	r.s.kill(t)
}

// Start starts the server again on the same port (empty) and waits until it
// answers PING. It does nothing if the server runs.
func (r *RedisServer) Start(t testing.TB) {
	t.Helper()
	if err := r.s.start(t, r.ready); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Restart kills the server and starts it again: it comes back empty.
func (r *RedisServer) Restart(t testing.TB) {
	t.Helper()
	r.Kill(t)
	r.Start(t)
}

// ready reports whether the server answers PING with PONG (not LOADING).
func (r *RedisServer) ready(int64) bool { return pingOK(r.Addr()) }

// ---- mongostore -------------------------------------------------------------

// MongoServer is a mongostore (the MongoDB-wire store) of one test's own,
// with its own data folder: Stop and Start keep the data, like a MongoDB
// that was down for a while.
type MongoServer struct{ s server }

// MongoBinary returns the path of the mongostore binary that
// deploy/with-deps.sh builds, failing the test with a hint if it is missing.
func MongoBinary(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, ".cache", "bin", "mongostore")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("testenv: %s is missing: run the tests through `make test` or `deploy/with-deps.sh go test ./...`, which build it (%v)", bin, err)
	}
	return bin
}

// StartMongo starts a private mongostore on a free loopback port with a
// data folder of its own and waits until it answers a ping. It is killed
// when the test ends.
func StartMongo(t testing.TB) *MongoServer {
	t.Helper()
	bin := MongoBinary(t)
	m := &MongoServer{s: server{name: "mongostore", dir: t.TempDir()}}
	m.s.log = filepath.Join(m.s.dir, "mongostore.log")
	m.s.args = func() []string {
		return []string{bin, "--listen", fmt.Sprintf("127.0.0.1:%d", m.s.port), "--dir", filepath.Join(m.s.dir, "data")}
	}
	m.s.cleanup(t)
	m.s.startFresh(t, m.ready)
	return m
}

// URI is the server's mongodb:// URI; it does not change.
func (m *MongoServer) URI() string { return fmt.Sprintf("mongodb://127.0.0.1:%d/", m.s.port) }

// Running reports whether the server's process runs.
func (m *MongoServer) Running() bool { return m.s.running() }

// Pid is the process id of the running server, 0 if none runs.
func (m *MongoServer) Pid() int { return m.s.pid() }

// Kill stops the server with SIGKILL and waits until it is gone.
func (m *MongoServer) Kill(t testing.TB) {
	t.Helper()
	m.s.kill(t)
}

// Stop stops the server with SIGTERM and waits until it exited.
func (m *MongoServer) Stop(t testing.TB) {
	t.Helper()
	m.s.stop(t)
}

// Start starts the server again on the same port and data folder and waits
// until it answers a ping. It does nothing if the server runs.
func (m *MongoServer) Start(t testing.TB) {
	t.Helper()
	if err := m.s.start(t, m.ready); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// ready reports whether this start printed its ready line and the server
// answers a ping over the wire protocol.
func (m *MongoServer) ready(logOffset int64) bool {
	b, err := os.ReadFile(m.s.log)
	if err != nil || int64(len(b)) < logOffset || !bytes.Contains(b[logOffset:], []byte("mongostore ready ")) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mc, err := mongo.Connect(options.Client().ApplyURI(m.URI()).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		return false
	}
	defer mc.Disconnect(context.Background())
	return mc.Ping(ctx, readpref.Primary()) == nil
}

// ---- ports ------------------------------------------------------------------

var stablePorts struct {
	mu    sync.Mutex
	given map[int]bool // ports this process handed out
}

// stablePort returns a loopback port that nothing listens on, picked at
// random below the kernel's ephemeral range, like deploy/lib.sh's
// free_port: a server that is killed and started again must get its port
// back, and a port of the ephemeral range may meanwhile be the local end of
// some outgoing connection. Ports of the ZooKeeper ensemble are never
// picked (a test may have stopped one of its servers).
func stablePort(t testing.TB) int {
	t.Helper()
	return PortBlock(t, 1)
}

// PortBlock returns the first of n consecutive loopback ports that nothing
// listens on, picked as stablePort picks one (and never handed out before
// by this process), for a program that is given a base port and counts up
// from it, as deploy/run.sh does.
func PortBlock(t testing.TB, n int) int {
	t.Helper()
	lo, hi := 20000, 32767
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if eph, err := strconv.Atoi(f[0]); err == nil && eph > lo+1000 {
				hi = eph - 1
			}
		}
	}
	reserved := ensemblePorts()
	stablePorts.mu.Lock()
	defer stablePorts.mu.Unlock()
	if stablePorts.given == nil {
		stablePorts.given = map[int]bool{}
	}
	free := func(p int) bool {
		if stablePorts.given[p] || reserved[p] {
			return false
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		l.Close()
		return true
	}
	for range 500 {
		base := lo + rand.IntN(hi-lo+2-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			ok = free(p)
		}
		if !ok {
			continue
		}
		for p := base; p < base+n; p++ {
			stablePorts.given[p] = true
		}
		return base
	}
	t.Fatalf("testenv: no %d free consecutive ports between %d and %d", n, lo, hi)
	return 0
}

// ensemblePorts returns the client, quorum and election ports of the test
// ensemble's servers, from their zoo.cfg files (none if there is no
// ensemble).
func ensemblePorts() map[int]bool {
	ports := map[int]bool{}
	dir := os.Getenv(EnvZKEnsembleDir)
	if dir == "" {
		return ports
	}
	cfgs, _ := filepath.Glob(filepath.Join(dir, "zk*", "zoo.cfg"))
	for _, cfg := range cfgs {
		b, err := os.ReadFile(cfg)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok {
				continue
			}
			switch {
			case k == "clientPort":
				if p, err := strconv.Atoi(v); err == nil {
					ports[p] = true
				}
			case strings.HasPrefix(k, "server."):
				// host:quorumPort:electionPort[;clientAddr]
				v, _, _ = strings.Cut(v, ";")
				for _, f := range strings.Split(v, ":")[1:] {
					if p, err := strconv.Atoi(f); err == nil {
						ports[p] = true
					}
				}
			}
		}
	}
	return ports
}

// FailOver kills the current master with SIGKILL, waits until the
// Sentinels have promoted the other server, then starts the killed one
// again (empty) and waits until the Sentinels have made it a replica of
// the new master and it is in sync: the set is whole again, the roles
// swapped. It returns how long the promotion took.
func (sr *SentinelRedis) FailOver(t testing.TB) time.Duration {
	t.Helper()
	if sr.CurrentMaster() != sr.Master.Addr() {
		sr.Master, sr.Replica = sr.Replica, sr.Master
	}
	old, next := sr.Master, sr.Replica
	killed := time.Now()
	old.Kill(t)
	WaitFor(t, 60*time.Second, "the Sentinels promote "+next.Addr(), func() bool { return sr.CurrentMaster() == next.Addr() })
	promoted := time.Since(killed)
	old.Start(t)
	sr.Master, sr.Replica = next, old
	WaitFor(t, 60*time.Second, "the old master is a replica in sync and the Sentinels can fail over again", func() bool {
		return sr.replicaInSync() && sr.quorum()
	})
	return promoted
}
