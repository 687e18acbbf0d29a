package testenv

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the harness. They bound waits that normally end in well under
// a second; they are generous so that a loaded machine (the race detector,
// two cores) does not turn into flaky failures.
const (
	startTimeout = 30 * time.Second // a process accepts on its port
	stopTimeout  = 15 * time.Second // SIGTERM to exit; a node drains for 5s by default
	waitTimeout  = 30 * time.Second // WaitNodes, WaitLeader
	logTailLines = 60
)

// Binaries are the product commands built for this test binary.
type Binaries struct {
	Node    string
	Gateway string
	Chat    string // the terminal client
}

var build struct {
	once sync.Once
	bins Binaries
	err  error
}

// Build builds ./cmd/node, ./cmd/gateway and ./cmd/chat once per test
// binary, into a temporary folder of this process, and returns their paths.
// Folders left by earlier test processes that are gone are removed on the
// way.
func Build(t testing.TB) Binaries {
	t.Helper()
	build.once.Do(func() {
		build.bins, build.err = buildBinaries()
	})
	if build.err != nil {
		t.Fatalf("testenv: %v", build.err)
	}
	return build.bins
}

const binDirPrefix = "chat-testbin-"

func buildBinaries() (Binaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, err
	}
	removeStaleBinDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
	if err != nil {
		return Binaries{}, err
	}
	cmd := exec.Command(goCommand(), "build", "-o", dir+string(filepath.Separator), "./cmd/node", "./cmd/gateway", "./cmd/chat")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return Binaries{}, fmt.Errorf("building the node, gateway and chat client: %v\n%s", err, out)
	}
	return Binaries{Node: filepath.Join(dir, "node"), Gateway: filepath.Join(dir, "gateway"), Chat: filepath.Join(dir, "chat")}, nil
}

// removeStaleBinDirs removes the binary folders of test processes that no
// longer run.
func removeStaleBinDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), binDirPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			os.RemoveAll(m)
		}
	}
}

func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// RepoRoot returns the folder of the chatcluster module's go.mod, found by
// walking up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == "chatcluster" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod of module chatcluster above the working directory")
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// Options shape a cluster.
type Options struct {
	Nodes          int           // chat nodes to start (n1, n2, ...); 0 starts none
	SessionTimeout time.Duration // the nodes' ZooKeeper session timeout; default 2s
	Env            []string      // extra KEY=value for the gateway and the nodes

	// Dependencies other than the test environment's (all optional): for
	// example the ensemble of ZKEnsemble, or a test's own StartRedis and
	// StartMongo servers, which the test may take away and bring back.
	ZK    []string // ZooKeeper servers, host:port
	Redis string   // Redis address, host:port
	// RedisSentinels, with RedisMaster, are Sentinels to find the Redis
	// master through (StartSentinelRedis) instead of Redis.
	RedisSentinels []string
	RedisMaster    string
	// RedisCluster are seed nodes of a Redis Cluster (StartRedisCluster)
	// to use instead of Redis. With none of Redis, RedisSentinels and
	// RedisCluster given and CHAT_TEST_REDIS_CLUSTER=1 in the
	// environment, the cluster starts a Redis Cluster of its own.
	RedisCluster []string
	// RedisClusterReplicas says the Redis Cluster has replicas: the nodes
	// then wait for one per write (their default); without, they wait for
	// none.
	RedisClusterReplicas bool
	Mongo                string // MongoDB URI

	// NodeEnv, if set, gives node p more KEY=value settings, after Env,
	// each time it starts: per-node settings such as its certificates.
	// p's addresses are set when it is called.
	NodeEnv func(p *Proc) []string
	// SecureWS says the nodes serve wss:// (Env or NodeEnv gives them a
	// certificate): their WSURL is wss://.
	SecureWS bool
	// Host, if set, places node i (0-based, in order of start): where it
	// runs and at which address. nil: every node on 127.0.0.1 here.
	Host func(i int) NodeHost
}

// NodeHost is where a node runs: a command prefix that runs it there (for
// example ip netns exec <namespace>), the address its listeners bind and
// the address it is reached at, which it publishes.
type NodeHost struct {
	Exec []string // command prefix; none: this machine as it is
	Bind string   // the listeners' host, e.g. 0.0.0.0; "" Addr
	Addr string   // the address the node is dialled at and publishes
}

// Proc is one process of a cluster: the gateway or a node.
type Proc struct {
	ID       string // node id ("n1", ...) or "gateway"
	Listen   string // client address, 127.0.0.1:port
	WSURL    string // ws://127.0.0.1:port/ws (nodes)
	PeerAddr string // peer-link address, 127.0.0.1:port (nodes)
	// AdminAddr is the admin listener, 127.0.0.1:port: GET /metrics and
	// /debug/pprof/ (nodes), /debug/pprof/ (the gateway).
	AdminAddr string
	Log       string // file with the process's stdout and stderr

	host NodeHost // where a node runs; Addr "" is 127.0.0.1 here

	// Set by start, read under Cluster.mu; exited is closed once the
	// process was waited for.
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// running reports whether the process was started and has not exited.
func (p *Proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Cluster is a gateway and chat nodes running as real OS processes against
// the ZooKeeper, Redis and MongoDB-wire store of the test environment, in
// a namespace of their own. Its methods are meant for the test goroutine.
type Cluster struct {
	t       testing.TB
	ns      string
	bins    Binaries
	dir     string
	secret  string
	opts    Options
	zk      []string
	redis   string
	mongo   string
	client  *http.Client
	gateway *Proc

	mu    sync.Mutex
	nodes []*Proc
	next  int // number of the next node id
}

// StartCluster starts a gateway and opts.Nodes nodes and waits until each
// accepts connections on its port. Everything is stopped when the test
// ends; if it failed, the end of every process's log is printed.
func StartCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 2 * time.Second
	}
	c := &Cluster{
		t:      t,
		ns:     Namespace(t),
		bins:   Build(t),
		dir:    t.TempDir(),
		opts:   opts,
		zk:     opts.ZK,
		redis:  opts.Redis,
		mongo:  opts.Mongo,
		client: &http.Client{Timeout: 3 * time.Second},
		next:   1,
	}
	if len(c.zk) == 0 {
		c.zk = ZK(t)
	}
	if c.redis == "" && len(opts.RedisSentinels) == 0 && len(opts.RedisCluster) == 0 {
		if os.Getenv(EnvRedisCluster) == "1" {
			c.opts.RedisCluster = StartRedisCluster(t, false).Seeds()
		} else {
			c.redis = Redis(t)
		}
	}
	if c.mongo == "" {
		c.mongo = Mongo(t)
	}
	c.secret = filepath.Join(c.dir, "cluster.secret")
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.secret, []byte(base64.StdEncoding.EncodeToString(key[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.shutdown)

	c.gateway = &Proc{ID: "gateway", Log: filepath.Join(c.dir, "gateway.log")}
	c.startFresh(c.gateway)
	for i := 0; i < opts.Nodes; i++ {
		c.AddNode()
	}
	return c
}

// Namespace is the cluster's ZooKeeper root (without the slash), Redis key
// prefix (without the colon) and MongoDB database.
func (c *Cluster) Namespace() string { return c.ns }

// GatewayURL is the gateway's base URL, http://127.0.0.1:port.
func (c *Cluster) GatewayURL() string { return "http://" + c.gateway.Listen }

// Gateway returns the gateway's process.
func (c *Cluster) Gateway() *Proc { return c.gateway }

// Node returns node i (0-based, in order of start; a restarted node keeps
// its index).
func (c *Cluster) Node(i int) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		c.t.Fatalf("testenv: no node %d (have %d)", i, len(c.nodes))
	}
	return c.nodes[i]
}

// Len is the number of nodes ever started, running or not.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Index returns the index of the node with the id, or -1.
func (c *Cluster) Index(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.nodes {
		if p.ID == id {
			return i
		}
	}
	return -1
}

// Running reports whether node i runs (started, not exited; maybe paused).
func (c *Cluster) Running(i int) bool {
	p := c.Node(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return p.running()
}

// AddNode starts one more node with fresh ports, waits until it accepts
// client connections and returns its index.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	c.mu.Lock()
	p := &Proc{ID: fmt.Sprintf("n%d", c.next)}
	c.next++
	p.Log = filepath.Join(c.dir, p.ID+".log")
	c.nodes = append(c.nodes, p)
	i := len(c.nodes) - 1
	c.mu.Unlock()
	if c.opts.Host != nil {
		p.host = c.opts.Host(i)
	}
	c.startFresh(p)
	return i
}

// Kill sends SIGKILL to node i and waits until it is gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	p := c.Node(i)
	if !c.signal(p, syscall.SIGKILL) {
		return
	}
	if !c.waitExit(p, stopTimeout) {
		c.t.Errorf("testenv: %s still there %s after SIGKILL", p.ID, stopTimeout)
	}
}

// Stop sends SIGTERM to node i and waits until it exited (it drains its
// clients first). A node that does not stop in time is killed and the test
// fails.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	p := c.Node(i)
	c.resumeIfPaused(p)
	if !c.signal(p, syscall.SIGTERM) {
		return
	}
	if !c.waitExit(p, stopTimeout) {
		c.t.Errorf("testenv: %s did not exit within %s of SIGTERM; killed it", p.ID, stopTimeout)
		c.signal(p, syscall.SIGKILL)
		c.waitExit(p, stopTimeout)
	}
}

// Pause stops node i with SIGSTOP: it keeps its sockets but does nothing,
// so its ZooKeeper session expires unless Resume comes first.
func (c *Cluster) Pause(i int) {
	c.t.Helper()
	p := c.Node(i)
	if c.signal(p, syscall.SIGSTOP) {
		c.mu.Lock()
		p.paused = true
		c.mu.Unlock()
	}
}

// Resume continues node i after Pause (SIGCONT).
func (c *Cluster) Resume(i int) {
	c.t.Helper()
	c.resumeIfPaused(c.Node(i))
}

func (c *Cluster) resumeIfPaused(p *Proc) {
	c.mu.Lock()
	paused := p.paused
	p.paused = false
	c.mu.Unlock()
	if paused {
		c.signal(p, syscall.SIGCONT)
	}
}

// Restart stops node i if it runs (SIGTERM) and starts it again with the
// same id and ports, then waits until it accepts client connections.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	p := c.Node(i)
	if err := c.start(p); err != nil {
		c.t.Fatalf("testenv: restart %s: %v", p.ID, err)
	}
}

// NodeInfo is one entry of the gateway's /api/nodes.
type NodeInfo struct {
	ID          string `json:"id"`
	WS          string `json:"ws"`
	Connections int    `json:"connections"`
}

// NodesReply is the gateway's answer to GET /api/nodes.
type NodesReply struct {
	Status int        `json:"-"` // HTTP status; 0 if the request failed
	Err    error      `json:"-"` // why the request failed or the body did not parse
	Leader string     `json:"leader"`
	Nodes  []NodeInfo `json:"nodes"`
}

// IDs returns the listed node ids, sorted.
func (r NodesReply) IDs() []string {
	ids := make([]string, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		ids = append(ids, n.ID)
	}
	sort.Strings(ids)
	return ids
}

// Nodes asks the gateway for GET /api/nodes. It does not fail the test:
// look at Status and Err.
func (c *Cluster) Nodes(t testing.TB) NodesReply {
	t.Helper()
	resp, err := c.client.Get(c.GatewayURL() + "/api/nodes")
	if err != nil {
		return NodesReply{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := NodesReply{Status: resp.StatusCode, Err: err}
	if err == nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			r.Err = fmt.Errorf("parsing %q: %w", body, err)
		}
	}
	return r
}

// WaitNodes waits until the gateway lists exactly the nodes with these ids
// (none: until it answers 503).
func (c *Cluster) WaitNodes(t testing.TB, ids ...string) {
	t.Helper()
	want := slices.Clone(ids)
	sort.Strings(want)
	var last NodesReply
	waited := false
	defer func() { // WaitFor ends the goroutine when it times out
		if !waited {
			t.Logf("testenv: the gateway's last answer to /api/nodes: %s", last)
		}
	}()
	WaitFor(t, waitTimeout, fmt.Sprintf("gateway lists exactly nodes %v", want), func() bool {
		last = c.Nodes(t)
		if len(want) == 0 {
			return last.Status == http.StatusServiceUnavailable
		}
		return last.Status == http.StatusOK && slices.Equal(last.IDs(), want)
	})
	waited = true
}

// WaitLeader waits until the gateway reports a leader that it lists as live
// and that runs here (not killed, not paused), and returns its id.
func (c *Cluster) WaitLeader(t testing.TB) string {
	t.Helper()
	var last NodesReply
	waited := false
	defer func() { // WaitFor ends the goroutine when it times out
		if !waited {
			t.Logf("testenv: the gateway's last answer to /api/nodes: %s", last)
		}
	}()
	WaitFor(t, waitTimeout, "gateway reports a live leader", func() bool {
		last = c.Nodes(t)
		if last.Status != http.StatusOK || last.Leader == "" || !slices.Contains(last.IDs(), last.Leader) {
			return false
		}
		i := c.Index(last.Leader)
		if i < 0 {
			return false
		}
		p := c.Node(i)
		c.mu.Lock()
		defer c.mu.Unlock()
		return p.running() && !p.paused
	})
	waited = true
	return last.Leader
}

// String describes the reply for failure messages.
func (r NodesReply) String() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("status %d, %v", r.Status, r.Err)
	case r.Status != http.StatusOK:
		return fmt.Sprintf("status %d", r.Status)
	default:
		return fmt.Sprintf("leader %q, nodes %v", r.Leader, r.IDs())
	}
}

// ---- processes --------------------------------------------------------------

// startFresh gives p new ports and starts it, trying other ports if the
// ones picked were taken in the meantime.
func (c *Cluster) startFresh(p *Proc) {
	c.t.Helper()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		ports := freePorts(c.t, 3)
		host := "127.0.0.1"
		if p.host.Addr != "" {
			host = p.host.Addr
		}
		c.mu.Lock()
		p.Listen = net.JoinHostPort(host, strconv.Itoa(ports[0]))
		p.AdminAddr = net.JoinHostPort(host, strconv.Itoa(ports[2]))
		if p != c.gateway {
			p.PeerAddr = net.JoinHostPort(host, strconv.Itoa(ports[1]))
			p.WSURL = c.wsScheme() + "://" + p.Listen + "/ws"
		}
		c.mu.Unlock()
		if err = c.start(p); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		c.t.Fatalf("testenv: start %s: %v", p.ID, err)
	}
}

var errAddrInUse = errors.New("address already in use")

func (c *Cluster) wsScheme() string {
	if c.opts.SecureWS {
		return "wss"
	}
	return "ws"
}

// nodeAddrArgs are node p's address flags: it binds and is reached at
// its addresses, or, on a host with a Bind address, binds that and
// publishes its addresses with --advertise and --peer-advertise.
func (c *Cluster) nodeAddrArgs(p *Proc) []string {
	if p.host.Bind == "" {
		return []string{"--listen", p.Listen, "--peer-listen", p.PeerAddr, "--admin-listen", p.AdminAddr}
	}
	_, port, _ := net.SplitHostPort(p.Listen)
	_, peerPort, _ := net.SplitHostPort(p.PeerAddr)
	return []string{
		"--listen", net.JoinHostPort(p.host.Bind, port), "--advertise", p.WSURL,
		"--peer-listen", net.JoinHostPort(p.host.Bind, peerPort), "--peer-advertise", p.PeerAddr,
		"--admin-listen", p.AdminAddr,
	}
}

// start runs p's process and waits until it accepts on p.Listen.
func (c *Cluster) start(p *Proc) error {
	var args []string
	if p == c.gateway {
		args = []string{c.bins.Gateway,
			"--listen", p.Listen, "--admin-listen", p.AdminAddr,
			"--redis-prefix", c.ns + ":",
			"--mongo", c.mongo, "--mongo-db", c.ns,
			"--cluster-secret-file", c.secret, // for the server API, when a test turns it on
		}
	} else {
		args = append(slices.Clone(p.host.Exec), c.bins.Node,
			"--id", p.ID)
		args = append(args, c.nodeAddrArgs(p)...)
		args = append(args,
			"--zk", strings.Join(c.zk, ","), "--zk-root", "/"+c.ns,
			"--zk-session-timeout", c.opts.SessionTimeout.String(),
			"--redis-prefix", c.ns+":",
			"--mongo", c.mongo, "--mongo-db", c.ns,
			"--cluster-secret-file", c.secret,
		)
	}
	switch {
	case len(c.opts.RedisCluster) > 0:
		args = append(args, "--redis-cluster", strings.Join(c.opts.RedisCluster, ","))
		if !c.opts.RedisClusterReplicas && p != c.gateway {
			args = append(args, "--redis-wait-replicas", "0")
		}
	case len(c.opts.RedisSentinels) > 0:
		args = append(args, "--redis-sentinels", strings.Join(c.opts.RedisSentinels, ","), "--redis-master", c.opts.RedisMaster)
	default:
		args = append(args, "--redis", c.redis)
	}
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(args[0], args[1:]...)
	level := os.Getenv("CHAT_TEST_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	cmd.Env = append(os.Environ(), "CHAT_LOG_LEVEL="+level)
	cmd.Env = append(cmd.Env, c.opts.Env...)
	if p != c.gateway && c.opts.NodeEnv != nil {
		cmd.Env = append(cmd.Env, c.opts.NodeEnv(p)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test process dies without cleaning up, its processes die too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	p.cmd, p.exited, p.paused = cmd, exited, false
	c.mu.Unlock()

	var early bool // exited before accepting
	waited := false
	defer func() { // WaitFor ends the goroutine when it times out
		if !waited {
			c.t.Logf("testenv: log of %s:\n%s", p.ID, tailLines(p.Log, 15))
		}
	}()
	WaitFor(c.t, startTimeout, p.ID+" accepts connections on "+p.Listen, func() bool {
		select {
		case <-exited:
			early = true
			return true
		default:
		}
		conn, err := net.DialTimeout("tcp", p.Listen, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	waited = true
	if early {
		tail := tailLines(p.Log, 15)
		if bytes.Contains(tail, []byte(errAddrInUse.Error())) {
			return fmt.Errorf("%w (%s)", errAddrInUse, p.Listen)
		}
		return fmt.Errorf("exited during start-up (%s); log:\n%s", cmd.ProcessState, tail)
	}
	return nil
}

// signal sends sig to p if it runs; it reports whether it did.
func (c *Cluster) signal(p *Proc, sig syscall.Signal) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !p.running() {
		return false
	}
	return p.cmd.Process.Signal(sig) == nil
}

// waitExit waits up to d for p to exit and reports whether it did.
func (c *Cluster) waitExit(p *Proc, d time.Duration) bool {
	c.mu.Lock()
	exited := p.exited
	c.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// shutdown stops every process (nodes first, all at once, then the
// gateway) and prints the logs' ends if the test failed.
func (c *Cluster) shutdown() {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	stopAll := func(ps []*Proc) {
		for _, p := range ps {
			c.resumeIfPaused(p)
			c.signal(p, syscall.SIGTERM)
		}
		for _, p := range ps {
			if !c.waitExit(p, stopTimeout) {
				c.t.Logf("testenv: %s did not exit within %s of SIGTERM; killing it", p.ID, stopTimeout)
				c.signal(p, syscall.SIGKILL)
				c.waitExit(p, stopTimeout)
			}
		}
	}
	stopAll(nodes)
	if c.gateway != nil {
		stopAll([]*Proc{c.gateway})
	}
	// Every log line is one JSON object with each key once: a key twice
	// is a logger that adds context its caller already added.
	for _, p := range append([]*Proc{c.gateway}, nodes...) {
		if p == nil {
			continue
		}
		if key, line := repeatedLogKey(p.Log); key != "" {
			c.t.Errorf("testenv: %s logged the key %q twice in one line: %s", p.ID, key, line)
		}
	}
	if c.t.Failed() {
		for _, p := range append([]*Proc{c.gateway}, nodes...) {
			if p == nil {
				continue
			}
			c.t.Logf("---- last %d lines of %s (%s) ----\n%s", logTailLines, p.ID, p.Log, tailLines(p.Log, logTailLines))
		}
	}
}

// repeatedLogKey returns the first key that a JSON line of the log at path
// holds twice in one object, and the line; "" if there is none.
func repeatedLogKey(path string) (key, line string) {
	f, err := os.Open(path)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		b := sc.Bytes()
		if len(b) == 0 || b[0] != '{' {
			continue
		}
		if k := repeatedKey(b); k != "" {
			return k, string(b)
		}
	}
	return "", ""
}

// repeatedKey returns a key that one JSON object of b holds twice, or "".
func repeatedKey(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	type level struct {
		obj  bool
		keys map[string]bool
		key  bool // in an object, the next string is a key
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.obj {
					top.key = true // the value is done once it closes
				}
				stack = append(stack, &level{obj: v == '{', keys: map[string]bool{}, key: v == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.obj && top.key {
				if top.keys[v] {
					return v
				}
				top.keys[v] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.obj {
			top.key = true
		}
	}
}

// tailLines returns the last n lines of a file.
func tailLines(path string, n int) []byte {
	f, err := os.Open(path)
	if err != nil {
		return []byte(err.Error())
	}
	defer f.Close()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, slices.Clone(sc.Bytes()))
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago (the kernel picked them; they are released before returning).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// spawner starts every child process from one goroutine locked to its OS
// thread for the life of the test binary. Pdeathsig fires when the thread
// that started the child exits, so it must be a thread that never exits.
var spawner struct {
	once sync.Once
	reqs chan func()
}

// Spawn starts cmd like cmd.Start, from the one thread of the test binary
// that never exits, so that a Pdeathsig in cmd.SysProcAttr fires when the
// test binary ends, not when some thread of it does.
func Spawn(cmd *exec.Cmd) error { return spawn(cmd) }

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// Admin runs the terminal client's admin command (chat admin args...)
// against the cluster's MongoDB database and returns its standard output;
// the test fails if it exits with an error.
func (c *Cluster) Admin(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(c.bins.Chat, append([]string{"admin"}, args...)...)
	cmd.Env = append(os.Environ(), "CHAT_MONGO="+c.mongo, "CHAT_MONGO_DB="+c.ns)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chat admin %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}
