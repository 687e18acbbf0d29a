package cluster

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Config.Observe sees every kind of request a node makes, with "node
// exists" and "no node" answers reported as successes.
func TestObserveTimesRequests(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	ops := map[string]int{}
	failed := 0
	observe := func(op string, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		ops[op]++
		if err != nil || took < 0 {
			failed++
		}
	}
	n1 := e.started("n1", func(c *Config) { c.Observe = observe })
	e.started("n2", nil)
	waitAgreed(t, 2, n1)
	if _, err := n1.CurrentLeader(context.Background()); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, op := range []string{"create", "get", "children", "sync"} {
		if ops[op] == 0 {
			t.Errorf("no %q request observed; saw %v", op, ops)
		}
	}
	if failed != 0 {
		t.Errorf("%d requests reported as failed against a healthy ZooKeeper; saw %v", failed, ops)
	}
}
