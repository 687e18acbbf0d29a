package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv", "cluster.go")); err != nil {
		t.Fatalf("RepoRoot() = %s, which does not hold this package: %v", root, err)
	}
}

func TestFreePorts(t *testing.T) {
	ports := freePorts(t, 8)
	slices.Sort(ports)
	if len(slices.Compact(ports)) != 8 {
		t.Fatalf("ports not distinct: %v", ports)
	}
}

// TestCluster drives the harness through what the suite uses, against the
// real node and gateway: election, kill, add, restart, pause, stop.
func TestCluster(t *testing.T) {
	c := StartCluster(t, Options{Nodes: 2, SessionTimeout: time.Second})
	if c.Node(0).ID != "n1" || c.Node(1).ID != "n2" || c.Index("n2") != 1 || c.Index("nx") != -1 {
		t.Fatalf("ids: %s %s", c.Node(0).ID, c.Node(1).ID)
	}
	c.WaitNodes(t, "n1", "n2")
	leader := c.WaitLeader(t)
	li := c.Index(leader)
	other := c.Node(1 - li).ID

	c.Kill(li)
	if c.Running(li) {
		t.Fatal("killed node still running")
	}
	c.WaitNodes(t, other)
	if got := c.WaitLeader(t); got != other {
		t.Fatalf("leader after kill = %s, want %s", got, other)
	}

	n3 := c.AddNode()
	if n3 != 2 || c.Node(n3).ID != "n3" {
		t.Fatalf("AddNode = %d (%s)", n3, c.Node(n3).ID)
	}
	c.Restart(li)
	c.WaitNodes(t, "n1", "n2", "n3")

	c.Pause(n3)
	c.WaitNodes(t, "n1", "n2")
	c.Resume(n3)
	c.WaitNodes(t, "n1", "n2", "n3")

	c.Stop(n3)
	if c.Running(n3) {
		t.Fatal("stopped node still running")
	}
	c.WaitNodes(t, "n1", "n2")
	if r := c.Nodes(t); r.Status != 200 || r.Err != nil || len(r.Nodes) != 2 {
		t.Fatalf("Nodes = %+v", r)
	}
}

func TestRepeatedKey(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`{"level":"info","node":"n1","message":"x"}`, ""},
		{`{"level":"info","node":"n1","component":"cluster","node":"n1"}`, "node"},
		{`{"a":{"b":1,"c":[1,{"b":2}]},"b":"node","c":"c"}`, ""},
		{`{"a":{"b":1,"b":2}}`, "b"},
		{`{"a":[{"x":1},{"x":2}],"x":"a"}`, ""},
		{`{"component":"history","component":"history-writer"}`, "component"},
	} {
		if got := repeatedKey([]byte(tc.line)); got != tc.want {
			t.Errorf("repeatedKey(%s) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
