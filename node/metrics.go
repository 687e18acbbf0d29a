package node

import (
	"context"
	"errors"

	"chatcluster/history"
	"chatcluster/metrics"
)

// metricSources are the values of the node's metrics that are read at
// scrape time, from the admin listener's goroutines. The writer and the
// leadership may not exist yet (or any more); each source copes.
func (s *Server) metricSources() metrics.NodeSources {
	return metrics.NodeSources{
		Connections: func() int {
			s.connsMu.Lock()
			defer s.connsMu.Unlock()
			return len(s.conns)
		},
		LoggedIn:    s.local.Len,
		UplinkQueue: func() int { return len(s.routes.up) },
		PeerQueues:  s.peerQueues,
		IsLeader:    func() bool { return s.routes.leading() != nil },
		Epoch:       s.maxEpoch.Load,
		Rooms: func() int {
			if l := s.routes.leading(); l != nil {
				return l.Rooms()
			}
			return 0
		},
		Backlog: func(ctx context.Context) (int64, error) {
			if s.writer == nil {
				return 0, errors.New("node: not started")
			}
			return s.writer.Backlog(ctx)
		},
		History: func() history.WriterStats {
			if s.writer == nil {
				return history.WriterStats{}
			}
			return s.writer.Stats()
		},
	}
}

// peerQueues returns how many frames wait on each peer link: the leader's
// links to the nodes while this node leads, and the link to the leader.
func (s *Server) peerQueues() map[string]int {
	lead, link, _ := s.routes.current()
	out := map[string]int{}
	if link != nil && !link.Closed() {
		out[link.Remote()] += link.Queued()
	}
	if lead != nil {
		lead.AddQueues(out)
	}
	return out
}
