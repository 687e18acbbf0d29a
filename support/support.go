// Package support is the state of customer service as the leader holds it:
// the open conversations (queued or assigned), the queue in its order, the
// agents and what each holds, and the rules that pick who is next and who
// takes them. It does no I/O and keeps no clock: the leader plans a
// change here (Open, Next, Close, Transfer, Requeue), writes the planned
// conversation to MongoDB, and only then applies it (Put), so what a
// visitor or agent is told is always what a new leader will load.
//
// A State is not safe for concurrent use; the leader guards it.
package support

import (
	"errors"
	"slices"
	"sort"

	"chatcluster/protocol"
)

// Conv is one support conversation.
type Conv struct {
	ID       string
	Visitor  string
	N        int64 // the visitor's n-th conversation
	Name     string
	Channel  string
	State    string // protocol.SupportQueued, SupportAssigned or SupportClosed
	Agent    string // assigned: who holds it
	Agents   []string
	Opened   int64 // unix ms
	Queued   int64 // queued: since when it waits
	Assigned int64
	Closed   int64
	ClosedBy string
	// Front: back in the queue after its agent went away, ahead of every
	// conversation never assigned.
	Front bool
}

// Open reports whether c is queued or assigned.
func (c *Conv) Open() bool {
	return c.State == protocol.SupportQueued || c.State == protocol.SupportAssigned
}

// Info is c as clients see it (without position or latest seq).
func (c *Conv) Info() protocol.SupportConv {
	return protocol.SupportConv{
		Conv: c.ID, Visitor: c.Visitor, Name: c.Name, Channel: c.Channel, State: c.State, Agent: c.Agent,
		Opened: c.Opened, Queued: c.Queued, Assigned: c.Assigned, Closed: c.Closed, ClosedBy: c.ClosedBy,
		Agents: slices.Clone(c.Agents),
	}
}

// Agent is an agent as the operator set it up (Capacity, Disabled) and as
// it set itself (Status).
type Agent struct {
	Name     string
	Capacity int
	Disabled bool
	Status   string // protocol.AgentAvailable or AgentAway
	// LastAssigned is when the agent was last given a conversation, unix
	// ms: of two agents with as much room, the one idle longest goes first.
	LastAssigned int64
}

// Errors of the planning methods; the leader maps them to client codes.
var (
	ErrNotAgent   = errors.New("not an agent")
	ErrUnknown    = errors.New("no such open conversation")
	ErrNotYours   = errors.New("the conversation is not assigned to you")
	ErrNoCapacity = errors.New("the agent has no free capacity")
	ErrNotReady   = errors.New("the agent is away or disabled")
)

// State is the leader's customer-service state. The zero value is not
// usable; call New.
type State struct {
	convs  map[string]*Conv           // open conversations by id
	open   map[string]string          // visitor -> its open conversation
	last   map[string]int64           // visitor -> highest conversation number known
	agents map[string]*Agent          // by name
	held   map[string]map[string]bool // agent -> the conversations assigned to it
	queue  []*Conv                    // queued conversations, in queue order
}

// New returns an empty state.
func New() *State {
	return &State{convs: map[string]*Conv{}, open: map[string]string{}, last: map[string]int64{},
		agents: map[string]*Agent{}, held: map[string]map[string]bool{}}
}

// before is the queue order: conversations back from an agent first, then
// the longest waiting, then by id.
func before(a, b *Conv) bool {
	if a.Front != b.Front {
		return a.Front
	}
	if a.Queued != b.Queued {
		return a.Queued < b.Queued
	}
	return a.ID < b.ID
}

// Put applies a conversation as stored: it replaces what was known of it
// and takes it out of the state once closed.
func (s *State) Put(c Conv) {
	if old, ok := s.convs[c.ID]; ok {
		s.unindex(old)
	}
	if c.N > s.last[c.Visitor] {
		s.last[c.Visitor] = c.N
	}
	if !c.Open() {
		if s.open[c.Visitor] == c.ID {
			delete(s.open, c.Visitor)
		}
		return
	}
	cp := c
	cp.Agents = slices.Clone(c.Agents)
	s.convs[c.ID] = &cp
	s.open[c.Visitor] = c.ID
	switch c.State {
	case protocol.SupportQueued:
		i := sort.Search(len(s.queue), func(i int) bool { return before(&cp, s.queue[i]) })
		s.queue = slices.Insert(s.queue, i, &cp)
	case protocol.SupportAssigned:
		if s.held[c.Agent] == nil {
			s.held[c.Agent] = map[string]bool{}
		}
		s.held[c.Agent][c.ID] = true
	}
}

func (s *State) unindex(c *Conv) {
	delete(s.convs, c.ID)
	switch c.State {
	case protocol.SupportQueued:
		if i := slices.Index(s.queue, c); i >= 0 {
			s.queue = slices.Delete(s.queue, i, i+1)
		}
	case protocol.SupportAssigned:
		delete(s.held[c.Agent], c.ID)
	}
}

// PutAgent applies an agent as stored.
func (s *State) PutAgent(a Agent) {
	if old, ok := s.agents[a.Name]; ok && a.LastAssigned < old.LastAssigned {
		a.LastAssigned = old.LastAssigned
	}
	s.agents[a.Name] = &a
}

// RemoveAgent forgets an agent the operator removed; what it holds stays
// assigned until Requeue.
func (s *State) RemoveAgent(name string) { delete(s.agents, name) }

// Agent returns the named agent.
func (s *State) Agent(name string) (Agent, bool) {
	a, ok := s.agents[name]
	if !ok {
		return Agent{}, false
	}
	return *a, true
}

// Agents returns every agent, by name.
func (s *State) Agents() []Agent {
	out := make([]Agent, 0, len(s.agents))
	for _, a := range s.agents {
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b Agent) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Load is how many conversations agent holds.
func (s *State) Load(agent string) int { return len(s.held[agent]) }

// Held returns the conversations assigned to agent, by id.
func (s *State) Held(agent string) []Conv {
	out := make([]Conv, 0, len(s.held[agent]))
	for id := range s.held[agent] {
		out = append(out, *s.convs[id])
	}
	slices.SortFunc(out, func(a, b Conv) int {
		if a.Assigned != b.Assigned {
			return int(a.Assigned - b.Assigned)
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out
}

// Holders are the agents that hold a conversation, by name (an agent the
// operator removed included).
func (s *State) Holders() []string {
	out := make([]string, 0, len(s.held))
	for a, convs := range s.held {
		if len(convs) > 0 {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// Conv returns the open conversation id.
func (s *State) Conv(id string) (Conv, bool) {
	c, ok := s.convs[id]
	if !ok {
		return Conv{}, false
	}
	cp := *c
	cp.Agents = slices.Clone(c.Agents)
	return cp, true
}

// OpenOf returns visitor's open conversation.
func (s *State) OpenOf(visitor string) (Conv, bool) {
	id, ok := s.open[visitor]
	if !ok {
		return Conv{}, false
	}
	return s.Conv(id)
}

// Last is the highest conversation number of visitor the state knows, and
// whether it knows any.
func (s *State) Last(visitor string) (int64, bool) {
	n, ok := s.last[visitor]
	return n, ok
}

// Queue returns the queued conversations in queue order.
func (s *State) Queue() []Conv {
	out := make([]Conv, len(s.queue))
	for i, c := range s.queue {
		out[i] = *c
	}
	return out
}

// QueueLen is how many conversations wait.
func (s *State) QueueLen() int { return len(s.queue) }

// Position is where conversation id stands in the queue, 1 for the next
// one; 0 when it is not queued.
func (s *State) Position(id string) int {
	c, ok := s.convs[id]
	if !ok || c.State != protocol.SupportQueued {
		return 0
	}
	i := sort.Search(len(s.queue), func(i int) bool { return !before(s.queue[i], c) })
	return i + 1
}

// QueueInfo is the queue's length and how long its oldest conversation
// has waited at now.
func (s *State) QueueInfo(now int64) protocol.QueueInfo {
	q := protocol.QueueInfo{Length: len(s.queue)}
	for _, c := range s.queue {
		q.OldestWait = max(q.OldestWait, now-c.Queued)
	}
	return q
}

// Ready reports whether agent a can take a conversation now: enabled,
// available, online and under its capacity.
func (s *State) ready(a *Agent, online func(string) bool) bool {
	return !a.Disabled && a.Status == protocol.AgentAvailable && s.Load(a.Name) < a.Capacity && online(a.Name)
}

// OpenNew plans visitor's next conversation, queued at now. The caller
// has checked there is no open one (OpenOf) and knows the highest number
// the visitor has used (Last, or from the store).
func OpenNew(visitor, name, channel string, last, now int64) Conv {
	n := last + 1
	return Conv{ID: protocol.SupportConvID(visitor, n), Visitor: visitor, N: n, Name: name, Channel: channel,
		State: protocol.SupportQueued, Opened: now, Queued: now}
}

// Next plans the next assignment: the first conversation of the queue to
// the ready agent with the most free capacity (of two with as much, the
// one idle longest). ok is false when nothing waits or nobody is ready.
func (s *State) Next(online func(string) bool, now int64) (c Conv, a Agent, ok bool) {
	if len(s.queue) == 0 {
		return Conv{}, Agent{}, false
	}
	var best *Agent
	for _, ag := range s.agents {
		if !s.ready(ag, online) {
			continue
		}
		if best == nil {
			best = ag
			continue
		}
		free, bestFree := ag.Capacity-s.Load(ag.Name), best.Capacity-s.Load(best.Name)
		switch {
		case free != bestFree:
			if free > bestFree {
				best = ag
			}
		case ag.LastAssigned != best.LastAssigned:
			if ag.LastAssigned < best.LastAssigned {
				best = ag
			}
		case ag.Name < best.Name:
			best = ag
		}
	}
	if best == nil {
		return Conv{}, Agent{}, false
	}
	c, _ = s.Conv(s.queue[0].ID)
	return assignTo(c, best.Name, now), *best, true
}

func assignTo(c Conv, agent string, now int64) Conv {
	c.State, c.Agent, c.Assigned, c.Front = protocol.SupportAssigned, agent, now, false
	c.Agents = append(c.Agents, agent)
	return c
}

// Assigned records that agent was given a conversation at now (for the
// idle-longest rule).
func (s *State) Assigned(agent string, now int64) {
	if a, ok := s.agents[agent]; ok {
		a.LastAssigned = max(a.LastAssigned, now)
	}
}

// Close plans closing conversation id by by (a visitor, an agent, or ""
// for the system) at now. The visitor of the conversation may close it,
// and the agent holding it.
func (s *State) Close(id, by string, now int64) (Conv, error) {
	c, ok := s.Conv(id)
	if !ok {
		return Conv{}, ErrUnknown
	}
	if by != "" && by != c.Visitor && by != c.Agent {
		return Conv{}, ErrNotYours
	}
	c.State, c.Closed, c.ClosedBy, c.Front = protocol.SupportClosed, now, by, false
	return c, nil
}

// Transfer plans handing conversation id from agent from to agent to at
// now: to must be an agent, enabled, available and with free capacity
// (online or not: its grace rules apply as to any conversation it holds).
func (s *State) Transfer(id, from, to string, now int64) (Conv, error) {
	c, ok := s.Conv(id)
	if !ok {
		return Conv{}, ErrUnknown
	}
	if c.State != protocol.SupportAssigned || c.Agent != from {
		return Conv{}, ErrNotYours
	}
	a, ok := s.agents[to]
	switch {
	case !ok:
		return Conv{}, ErrNotAgent
	case a.Disabled || a.Status != protocol.AgentAvailable:
		return Conv{}, ErrNotReady
	case s.Load(to) >= a.Capacity:
		return Conv{}, ErrNoCapacity
	}
	return assignTo(c, to, now), nil
}

// Requeue plans putting conversation id, assigned, back at the front of
// the queue at now.
func (s *State) Requeue(id string, now int64) (Conv, bool) {
	c, ok := s.Conv(id)
	if !ok || c.State != protocol.SupportAssigned {
		return Conv{}, false
	}
	c.State, c.Agent, c.Queued, c.Front = protocol.SupportQueued, "", now, true
	return c, true
}

// Utilisation is the conversations held over the capacity of the agents
// that are ready or hold something (enabled, available and online), and
// how many such agents there are.
func (s *State) Utilisation(online func(string) bool) (held, capacity, agents int) {
	for _, a := range s.agents {
		if a.Disabled || a.Status != protocol.AgentAvailable || !online(a.Name) {
			continue
		}
		agents++
		held += s.Load(a.Name)
		capacity += a.Capacity
	}
	return held, capacity, agents
}
