package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"chatcluster/internal/testenv"
)

// The leader's term counts leaderships, 1, 2, ..., the same for every
// node: a claim of the same epoch returns the same term, and only the
// node that leads with an epoch can count it.
func TestClaimTerm(t *testing.T) {
	e := newEnv(t)
	n1 := e.started("n1", nil)
	n2 := e.started("n2", nil)
	l1 := waitAgreed(t, 2, n1, n2)
	if l1.ID != "n1" {
		t.Fatalf("leader %+v, want n1", l1)
	}
	ctx := context.Background()
	claim := func(c *Cluster, epoch int64, want int64, wantErr error) {
		t.Helper()
		got, err := c.ClaimTerm(ctx, epoch)
		if got != want || !errors.Is(err, wantErr) {
			t.Fatalf("%s: ClaimTerm(%d) = %d, %v; want %d, %v", c.cfg.Self.ID, epoch, got, err, want, wantErr)
		}
	}
	claim(n1, l1.Epoch, 1, nil)
	claim(n1, l1.Epoch, 1, nil) // again: the same term
	claim(n2, l1.Epoch, 0, ErrNotLeader)
	claim(n1, l1.Epoch-1, 0, ErrNotLeader)

	// The leader leaves; its successor counts the next term, and the
	// record says who counted it.
	closeCtx, cancel := context.WithTimeout(ctx, testTimeout)
	defer cancel()
	if err := n1.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	var l2 Leader
	testenv.WaitFor(t, testTimeout, "n2 leads", func() bool {
		s := n2.State()
		l2 = s.Leader
		return s.IsLeader && l2.ID == "n2"
	})
	claim(n2, l2.Epoch, 2, nil)
	claim(n2, l1.Epoch, 0, ErrNotLeader)

	conn := e.raw()
	defer conn.Close()
	data, _, err := conn.Get(e.root + "/term")
	if err != nil {
		t.Fatal(err)
	}
	var rec termRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec != (termRecord{Term: 2, Epoch: l2.Epoch}) {
		t.Fatalf("term znode %s (%v), want term 2 of epoch %d", data, err, l2.Epoch)
	}

	// A malformed record starts the count over instead of stopping it.
	n3 := e.started("n3", nil)
	waitAgreed(t, 2, n2, n3)
	if _, err := conn.Set(e.root+"/term", []byte("not json"), -1); err != nil {
		t.Fatal(err)
	}
	if err := n2.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	var l3 Leader
	testenv.WaitFor(t, testTimeout, "n3 leads", func() bool {
		s := n3.State()
		l3 = s.Leader
		return s.IsLeader && l3.ID == "n3"
	})
	claim(n3, l3.Epoch, 1, nil)
}
