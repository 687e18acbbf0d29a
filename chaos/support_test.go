package chaos

import (
	"slices"
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

// A message stored to an agent is owed to that agent, unless it was never
// told it held the conversation: then to the agents that were, and with
// none, to it still (so that it shows as lost).
func TestOwedTo(t *testing.T) {
	s := &SupportLoad{agents: map[string]*supAgent{
		"agent1": {known: map[string]bool{}},
		"agent2": {known: map[string]bool{"cs:~v:1": true}},
		"agent3": {known: map[string]bool{"cs:~v:1": true, "cs:~w:1": true}},
	}}
	for _, c := range []struct {
		to, conv string
		want     []string
	}{
		{"agent2", "cs:~v:1", []string{"agent2"}},
		{"agent1", "cs:~v:1", []string{"agent2", "agent3"}},
		{"agent1", "cs:~x:1", []string{"agent1"}},
		{"~v", "cs:~v:1", []string{"~v"}},
	} {
		if got := s.owedTo(c.to, c.conv); !slices.Equal(got, c.want) {
			t.Errorf("owedTo(%s, %s) = %v, want %v", c.to, c.conv, got, c.want)
		}
	}
}
