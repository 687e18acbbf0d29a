package chaos

import (
	"strings"
	"testing"

	"chatcluster/protocol"
)

// The snapshot check finds each kind of state violation, and none in a
// sound state.
func TestSupportSnapshotCheck(t *testing.T) {
	sound := func() protocol.SupportSnapshot {
		return protocol.SupportSnapshot{Node: "n1", Epoch: 7,
			Queue: []protocol.SupportConv{{Conv: "cs:~a:1", Visitor: "~a", Position: 1}, {Conv: "cs:~b:1", Visitor: "~b", Position: 2}},
			Held:  []protocol.SupportConv{{Conv: "cs:~c:2", Visitor: "~c", Agent: "ann"}},
			Agents: []protocol.AgentSnapshot{{Agent: "ann", Capacity: 1, Open: 1, Status: protocol.AgentAvailable},
				{Agent: "bob", Capacity: 2, Status: protocol.AgentAway}},
		}
	}
	for _, tc := range []struct {
		name  string
		spoil func(*protocol.SupportSnapshot)
		want  string
	}{
		{"sound", func(*protocol.SupportSnapshot) {}, ""},
		{"over capacity", func(s *protocol.SupportSnapshot) {
			s.Held = append(s.Held, protocol.SupportConv{Conv: "cs:~d:1", Visitor: "~d", Agent: "ann"})
			s.Agents[0].Open = 2
		}, "over its capacity"},
		{"held twice", func(s *protocol.SupportSnapshot) {
			s.Held = append(s.Held, protocol.SupportConv{Conv: "cs:~c:2", Visitor: "~c", Agent: "bob"})
			s.Agents[1].Open = 1
		}, "is held by bob and also in ann"},
		{"queued and held", func(s *protocol.SupportSnapshot) {
			s.Held[0].Conv, s.Held[0].Visitor = "cs:~a:1", "~a"
		}, "also in queue"},
		{"places", func(s *protocol.SupportSnapshot) { s.Queue[1].Position = 3 }, "at place 3"},
		{"two open", func(s *protocol.SupportSnapshot) { s.Queue[1].Visitor = "~a" }, "two open conversations"},
		{"miscounted", func(s *protocol.SupportSnapshot) { s.Agents[1].Open = 1 }, "counts 1"},
	} {
		s := &SupportLoad{}
		snap := sound()
		tc.spoil(&snap)
		s.checkSnapshot(snap)
		switch {
		case tc.want == "" && len(s.problems) > 0:
			t.Errorf("%s: problems %q", tc.name, s.problems)
		case tc.want != "" && (len(s.problems) == 0 || !strings.Contains(strings.Join(s.problems, "|"), tc.want)):
			t.Errorf("%s: problems %q, want one saying %q", tc.name, s.problems, tc.want)
		}
	}
}
