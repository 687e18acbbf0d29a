package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of one test's own: three masters, each
// with a replica if asked, on loopback, made with redis-cli --cluster
// create, so that each master holds a third of the slots. Its servers keep
// no data on disk: one killed and started again comes back empty, and
// with replicas it comes back as a replica of the one promoted in its
// place.
type RedisCluster struct {
	servers []*RedisServer // masters first, then their replicas
}

// StartRedisCluster starts the cluster and waits until every node sees it
// whole (cluster_state:ok) and every replica is in sync. A node
// unreachable for 1 s is taken as failed (cluster-node-timeout).
func StartRedisCluster(t testing.TB, replicas bool) *RedisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("testenv: redis-cli not found: run deploy/install.sh (as root), then the tests through `make test` or deploy/with-deps.sh")
	}
	n := 3
	if replicas {
		n = 6
	}
	rc := &RedisCluster{}
	for i := range n {
		name := fmt.Sprintf("redis cluster node %d", i+1)
		rc.servers = append(rc.servers, startRedis(t, name,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
			"--cluster-allow-reads-when-down", "no"))
	}
	args := []string{"--cluster", "create"}
	for _, s := range rc.servers {
		args = append(args, s.Addr())
	}
	if replicas {
		args = append(args, "--cluster-replicas", "1")
	}
	args = append(args, "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	WaitFor(t, startTimeout, "the Redis Cluster is whole on every node", rc.Whole)
	return rc
}

// Seeds are the addresses of every node of the cluster, host:port.
func (rc *RedisCluster) Seeds() []string {
	out := make([]string, len(rc.servers))
	for i, s := range rc.servers {
		out[i] = s.Addr()
	}
	return out
}

// Masters are the addresses of the nodes that are masters now, as the
// first node that answers says.
func (rc *RedisCluster) Masters() []string {
	for _, s := range rc.servers {
		if !s.Running() {
			continue
		}
		nodes, err := clusterNodes(s.Addr())
		if err != nil {
			continue
		}
		var out []string
		for _, nd := range nodes {
			if nd.master && !nd.failed {
				out = append(out, nd.addr)
			}
		}
		return out
	}
	return nil
}

// Server returns the server at addr (one of Seeds).
func (rc *RedisCluster) Server(addr string) *RedisServer {
	for _, s := range rc.servers {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// FailOver kills the master at addr with SIGKILL, waits until its replica
// has been promoted in its place, then starts the killed one again
// (empty), which rejoins as the new master's replica, and waits until the
// cluster is whole and in sync again. It needs replicas. It returns how
// long the promotion took.
func (rc *RedisCluster) FailOver(t testing.TB, addr string) time.Duration {
	t.Helper()
	old := rc.Server(addr)
	if old == nil {
		t.Fatalf("testenv: %s is not a node of the cluster", addr)
	}
	before := len(rc.Masters())
	killed := time.Now()
	old.Kill(t)
	WaitFor(t, 60*time.Second, "the Redis Cluster promotes a replica in place of "+addr, func() bool {
		ms := rc.Masters()
		return len(ms) == before && !slices.Contains(ms, addr) && rc.stateOK(func(a string) bool { return a != addr })
	})
	promoted := time.Since(killed)
	old.Start(t)
	WaitFor(t, 60*time.Second, "the old master rejoins as a replica and the cluster is whole", rc.Whole)
	return promoted
}

// Whole reports whether every node answers cluster_state:ok, knows every
// other node, none failed, and every replica's link to its master is up.
func (rc *RedisCluster) Whole() bool {
	if !rc.stateOK(func(string) bool { return true }) {
		return false
	}
	for _, s := range rc.servers {
		nodes, err := clusterNodes(s.Addr())
		if err != nil || len(nodes) != len(rc.servers) {
			return false
		}
		for _, nd := range nodes {
			if nd.failed || !nd.connected {
				return false
			}
		}
		if !nodesIsMaster(nodes, s.Addr()) && !replicaLinkUp(s.Addr()) {
			return false
		}
	}
	return true
}

// stateOK reports whether every node for which pick holds answers
// cluster_state:ok.
func (rc *RedisCluster) stateOK(pick func(addr string) bool) bool {
	for _, s := range rc.servers {
		if !pick(s.Addr()) {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := c.ClusterInfo(ctx).Result()
		cancel()
		c.Close()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
	}
	return true
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	addr                      string
	master, failed, connected bool
}

func clusterNodes(addr string) ([]clusterNode, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	txt, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(txt), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		a, _, _ := strings.Cut(f[1], "@")
		flags := f[2]
		out = append(out, clusterNode{
			addr:      a,
			master:    strings.Contains(flags, "master"),
			failed:    strings.Contains(flags, "fail"),
			connected: f[7] == "connected",
		})
	}
	return out, nil
}

func nodesIsMaster(nodes []clusterNode, addr string) bool {
	for _, nd := range nodes {
		if nd.addr == addr {
			return nd.master
		}
	}
	return false
}

func replicaLinkUp(addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "replication").Result()
	return err == nil && strings.Contains(info, "master_link_status:up")
}

// KeySlot is the slot Redis gives key (CLUSTER KEYSLOT), asked of the
// first node that answers.
func (rc *RedisCluster) KeySlot(t testing.TB, key string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: rc.servers[0].Addr()})
	defer c.Close()
	n, err := c.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("testenv: CLUSTER KEYSLOT %s: %v", key, err)
	}
	return int(n)
}
