package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// EnvNetNS, set to 1 by `make test`, says the tests that put nodes in
// network namespaces of their own must run: where they cannot (not root,
// ip or nft missing) they fail instead of skipping.
const EnvNetNS = "CHAT_TEST_NETNS"

// Hosts is a private network on this machine standing in for several
// hosts: network namespaces, each with an address of its own on a bridge
// in the root namespace (10.213.N.0/24, N picked free at random; the root
// namespace is 10.213.N.1, namespace i is 10.213.N.(11+i)). The test's
// own servers are reached from the namespaces through proxies on the
// bridge address (Reach). Traffic never leaves the machine: the bridge
// has no uplink and nothing routes or forwards to it.
//
// Everything it creates is removed when the test ends, pass or fail; what
// a test binary that was killed left behind is removed by the next
// StartHosts. Its methods are for the test goroutine.
type Hosts struct {
	t      testing.TB
	subnet string   // "10.213.N"
	bridge string   // interface name
	veths  []string // root ends of the veth pairs
	names  []string // namespaces
	mu     sync.Mutex
	cut    []bool // guarded by mu
}

// hostsSeq numbers the Hosts of this process, for unique names.
var hostsSeq atomic.Int64

// NeedNetNS fails the test, or skips it where the run does not ask for it
// (EnvNetNS unset) and this process may not create network namespaces,
// unless this machine can run tests of nodes in namespaces of their own:
// root (CAP_NET_ADMIN and CAP_SYS_ADMIN), ip and nft.
func NeedNetNS(t testing.TB) {
	t.Helper()
	required := os.Getenv(EnvNetNS) != ""
	if !netAdmin() {
		msg := "this test creates network namespaces, a bridge and firewall rules, which needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
		if required {
			t.Fatalf("%s, and %s=1 says it must run: run `make test` as root", msg, EnvNetNS)
		}
		t.Skipf("%s; run it as root (`make test` does, with %s=1)", msg, EnvNetNS)
	}
	for _, cmd := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("this test needs %s (Debian packages iproute2 and nftables): run deploy/install.sh", cmd)
		}
	}
}

// netAdmin reports whether this process has CAP_NET_ADMIN (12) and
// CAP_SYS_ADMIN (21) in its effective set.
func netAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			const need = 1<<12 | 1<<21
			return err == nil && caps&need == need
		}
	}
	return false
}

// StartHosts creates n network namespaces on a bridge of their own (see
// Hosts); NeedNetNS first.
func StartHosts(t testing.TB, n int) *Hosts {
	t.Helper()
	NeedNetNS(t)
	if n < 1 || n > 9 {
		t.Fatalf("testenv: StartHosts(%d): 1 to 9 hosts", n)
	}
	removeStaleHosts(t)
	pid, seq := os.Getpid(), hostsSeq.Add(1)
	h := &Hosts{t: t, bridge: fmt.Sprintf("chb%d-%d", pid, seq), cut: make([]bool, n)}
	h.subnet = reserveSubnet(t)
	// Registered first, so it runs after the clean-ups of what the test
	// starts in the namespaces (its cluster's processes).
	t.Cleanup(h.remove)
	h.run("ip", "link", "add", h.bridge, "type", "bridge")
	h.run("ip", "addr", "add", h.subnet+".1/24", "dev", h.bridge)
	h.run("ip", "link", "set", h.bridge, "up")
	for i := range n {
		ns := fmt.Sprintf("chat-%d-%d-%d", pid, seq, i)
		veth, peer := fmt.Sprintf("chv%d-%d-%d", pid, seq, i), fmt.Sprintf("chp%d-%d-%d", pid, seq, i)
		h.names = append(h.names, ns)
		h.run("ip", "netns", "add", ns)
		h.veths = append(h.veths, veth)
		h.run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
		h.run("ip", "link", "set", peer, "netns", ns)
		h.run("ip", "link", "set", veth, "master", h.bridge, "up")
		h.run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
		h.run("ip", "-n", ns, "addr", "add", h.Addr(i)+"/24", "dev", "eth0")
		h.run("ip", "-n", ns, "link", "set", "eth0", "up")
		h.run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	return h
}

// Len is the number of hosts.
func (h *Hosts) Len() int { return len(h.names) }

// Addr is host i's address.
func (h *Hosts) Addr(i int) string { return fmt.Sprintf("%s.%d", h.subnet, 11+i) }

// Name is host i's network namespace.
func (h *Hosts) Name(i int) string { return h.names[i] }

// Exec is the command prefix that runs a command on host i.
func (h *Hosts) Exec(i int) []string { return []string{"ip", "netns", "exec", h.names[i]} }

// RootAddr is the root namespace's address on the hosts' network.
func (h *Hosts) RootAddr() string { return h.subnet + ".1" }

// Reach returns an address on the hosts' network at which they reach
// addr, a server of the root namespace (one on loopback, say): a proxy,
// closed when the test ends.
func (h *Hosts) Reach(t testing.TB, addr string) string {
	t.Helper()
	return NewProxyOn(t, h.RootAddr(), addr).Addr()
}

// cutRules drop every packet in and out of a namespace but its loopback's.
const cutRules = `table inet chatcut {
	chain in { type filter hook input priority 0; policy drop; iif "lo" accept; }
	chain out { type filter hook output priority 0; policy drop; oif "lo" accept; }
}
`

// Cut cuts host i off the network with a firewall rule in its namespace:
// nothing in or out but its own loopback. Connections are not closed;
// their packets are dropped, as in a partition.
func (h *Hosts) Cut(i int) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cut[i] {
		return
	}
	cmd := exec.Command("ip", "netns", "exec", h.names[i], "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(cutRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("testenv: cut host %d off: %v\n%s", i, err, out)
	}
	h.cut[i] = true
}

// Heal removes the rule of Cut.
func (h *Hosts) Heal(i int) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.cut[i] {
		return
	}
	h.run("ip", "netns", "exec", h.names[i], "nft", "delete", "table", "inet", "chatcut")
	h.cut[i] = false
}

// run runs a command, failing the test with its output if it fails.
func (h *Hosts) run(args ...string) {
	h.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		h.t.Fatalf("testenv: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// remove deletes the rules, namespaces, veth pairs and the bridge, what
// of them exists, and logs what it could not delete.
func (h *Hosts) remove() {
	for i := range h.names {
		h.mu.Lock()
		cut := h.cut[i]
		h.cut[i] = false
		h.mu.Unlock()
		if cut {
			cleanupRun(h.t, "ip", "netns", "exec", h.names[i], "nft", "delete", "table", "inet", "chatcut")
		}
	}
	for _, v := range h.veths {
		cleanupRun(h.t, "ip", "link", "del", v)
	}
	for _, ns := range h.names {
		cleanupRun(h.t, "ip", "netns", "del", ns)
	}
	cleanupRun(h.t, "ip", "link", "del", h.bridge)
	releaseSubnet(h.subnet)
}

// cleanupRun runs a command of a clean-up; a failure other than the thing
// being gone already is logged.
func cleanupRun(t testing.TB, args ...string) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("Cannot find device")) && !bytes.Contains(out, []byte("No such file")) {
		t.Logf("testenv: clean-up %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// staleName matches the names StartHosts gives, with the pid of the test
// process that made them.
var staleName = regexp.MustCompile(`^(?:chat-|ch[bvp])(\d+)-`)

// removeStaleHosts deletes the namespaces and interfaces of test
// processes that are gone (killed before their clean-ups ran).
func removeStaleHosts(t testing.TB) {
	gone := func(name string) bool {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			// "7: chv123-1-0@if6: <...>"
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if gone(name) {
				cleanupRun(t, "ip", "link", "del", name)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && gone(f[0]) {
				cleanupRun(t, "ip", "netns", "del", f[0])
			}
		}
	}
}

// Subnets in use by Hosts of this machine: each is held with an flock on
// a file of its own, so test processes running at once pick different
// ones.
var subnetLocks struct {
	mu    sync.Mutex
	files map[string]*os.File
}

var errNoSubnet = errors.New("testenv: no free 10.213.N.0/24 subnet found")

// reserveSubnet picks a 10.213.N prefix that no interface of the root
// namespace uses and no other Hosts holds.
func reserveSubnet(t testing.TB) string {
	t.Helper()
	for range 50 {
		subnet := fmt.Sprintf("10.213.%d", 1+rand.IntN(254))
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "chat-netns-"+subnet+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		if subnetInUse(subnet) {
			f.Close()
			continue
		}
		subnetLocks.mu.Lock()
		if subnetLocks.files == nil {
			subnetLocks.files = map[string]*os.File{}
		}
		subnetLocks.files[subnet] = f
		subnetLocks.mu.Unlock()
		return subnet
	}
	t.Fatal(errNoSubnet)
	return ""
}

func releaseSubnet(subnet string) {
	subnetLocks.mu.Lock()
	defer subnetLocks.mu.Unlock()
	if f := subnetLocks.files[subnet]; f != nil {
		f.Close()
		delete(subnetLocks.files, subnet)
	}
}

// subnetInUse reports whether an address of this namespace is in
// subnet.0/24.
func subnetInUse(subnet string) bool {
	_, block, _ := net.ParseCIDR(subnet + ".0/24")
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && block.Contains(ipn.IP) {
			return true
		}
	}
	return false
}
