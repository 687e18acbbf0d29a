package node

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"chatcluster/handler"
	"chatcluster/metrics"
	"chatcluster/session"
)

// busyTerm is a term of this node that says it is overloaded; the router
// asks it nothing else.
type busyTerm struct{ leaderTerm }

func (busyTerm) Busy() bool { return true }

// An overloaded leader says so in its acknowledgements; nodes then refuse
// new messages (503 with a retryAfter) for a moment instead of
// acknowledging what the cluster cannot deliver, and so does a node whose
// own term is overloaded. (That a term gets overloaded, and refuses room
// posts itself, is the leader package's TestOverloadPushesBack.)
func TestOverloadPushesBack(t *testing.T) {
	s := &Server{cfg: Config{ID: "n1", PeerQueue: 1 << 16}, local: session.NewLocal[*client](), log: zerolog.Nop(),
		m: metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{})}
	r := newRouter(s)
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready of an idle node: %v", err)
	}
	r.busyUntil.Store(time.Now().Add(leaderBusyFor).UnixNano())
	if err := r.Ready(); !errors.Is(err, handler.ErrOverloaded) {
		t.Fatalf("Ready while the leader is overloaded: %v, want ErrOverloaded", err)
	}
	r.busyUntil.Store(time.Now().Add(-time.Millisecond).UnixNano())
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready once the leader keeps up again: %v", err)
	}

	s.routes = r
	r.lead = busyTerm{}
	if err := r.Ready(); !errors.Is(err, handler.ErrOverloaded) {
		t.Fatalf("Ready on an overloaded leader: %v, want ErrOverloaded", err)
	}
}
