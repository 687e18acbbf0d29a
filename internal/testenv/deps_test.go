package testenv

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// TestZKEnsemble checks the ensemble that with-deps.sh starts: it keeps
// serving a client while one server is killed, and the server comes back.
// It holds the ensemble lock: tests of other packages may be taking
// servers away too.
func TestZKEnsemble(t *testing.T) {
	LockEnsemble(t)
	addrs := ZKEnsemble(t)
	if len(addrs) != 3 {
		t.Fatalf("ensemble %v, want 3 servers", addrs)
	}
	modes := make([]string, 0, 3)
	for _, a := range addrs {
		modes = append(modes, zkMode(a))
	}
	slices.Sort(modes)
	if !slices.Equal(modes, []string{"follower", "follower", "leader"}) {
		t.Fatalf("modes %v, want one leader and two followers", modes)
	}

	conn, _, err := zk.Connect(addrs, 4*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	root := "/" + Namespace(t)
	if _, err := conn.Create(root, []byte("x"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	defer conn.Delete(root, -1)

	// Kill the leader: the other two elect a new one and keep serving.
	var leader *ZKServer
	for i := 1; i <= 3; i++ {
		if s := ZKEnsembleServer(t, i); zkMode(s.Addr) == "leader" {
			leader = s
		}
	}
	leader.Kill(t)
	if leader.Running() {
		t.Fatal("killed server still running")
	}
	WaitFor(t, 30*time.Second, "the ensemble serves the client again", func() bool {
		_, err := conn.Set(root, []byte("y"), -1)
		return err == nil
	})
	leader.Start(t)
	leader.WaitServing(t)
	if m := zkMode(leader.Addr); m != "follower" {
		t.Errorf("restarted server is %q, want follower", m)
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if processAlive(0) || processAlive(1<<22+1) {
		t.Error("impossible pids are alive")
	}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}
