package node

import (
	"context"
	"iter"

	"chatcluster/cluster"
	"chatcluster/leader"
	"chatcluster/protocol"
)

// leaderTerm is what the node needs of its term as leader (leader.Term)
// while it leads: the router hands it what the node sends up, the
// watch loop gives it the members and ends it, Redis-loss recovery and
// the metrics ask it a few things.
type leaderTerm interface {
	Epoch() int64
	// Handle runs a frame this node sends up to its own term.
	Handle(from string, f protocol.PeerFrame)
	// Linked is closed once the term may take what was queued before it.
	Linked() <-chan struct{}
	// Busy says the term is overloaded: new messages are refused.
	Busy() bool
	SetMembers(ms []cluster.Member)
	RestoreConvs(ctx context.Context) error
	Rooms() int
	AddQueues(out map[string]int)
	SupportSnapshot() (protocol.SupportSnapshot, bool)
	// Stop ends the term and waits for its goroutines.
	Stop()
}

var _ leaderTerm = (*leader.Term)(nil)

// watchCluster applies cluster state changes in order: membership,
// epochs, and starting or stopping leader duties.
func (s *Server) watchCluster() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case st, ok := <-s.cluster.Updates():
			if !ok {
				return
			}
			s.applyState(st)
		}
	}
}

func (s *Server) applyState(st cluster.State) {
	m := make(map[string]cluster.Member, len(st.Members))
	for _, mb := range st.Members {
		m[mb.ID] = mb
	}
	s.members.Store(&m)
	s.raiseEpoch(st.Leader.Epoch)
	if st.Connected {
		s.m.ZKConnected.Set(1)
	} else {
		s.m.ZKConnected.Set(0)
	}
	if st.Leader != s.lastLeader {
		s.lastLeader = st.Leader
		if st.Leader.ID != "" {
			s.m.LeaderChanges.Inc()
		}
	}

	r := s.routes
	r.mu.Lock()
	lead := r.lead
	if lead != nil && (!st.IsLeader || lead.Epoch() != st.Leader.Epoch) {
		r.lead = nil
		r.changedLocked()
		r.mu.Unlock()
		s.log.Info().Int64("epoch", lead.Epoch()).Bool("connected", st.Connected).Msg("leader duties stopped")
		lead.Stop()
		r.mu.Lock()
		lead = nil
	}
	if lead == nil && st.IsLeader && s.stillLeads(st) {
		lead = leader.Start(s.ctx, st.Leader.Epoch, termNode{s}, s.termDeps())
		r.lead = lead
		r.changedLocked()
		s.m.ElectionsWon.Inc()
		// state: when the snapshot that made this node leader was
		// published. A disconnect published while the term started is
		// applied next and stops it.
		s.log.Info().Int64("epoch", lead.Epoch()).Time("state", st.Since).Msg("leader duties started")
	}
	link := r.link
	r.mu.Unlock()
	if lead != nil {
		lead.SetMembers(st.Members)
	}
	if link != nil && st.Leader.ID != "" && link.Remote() != st.Leader.ID {
		link.Log().Info().Str("leader", st.Leader.ID).Msg("leader changed; closing link to the old one")
		r.dropLink(link)
	}
}

// stillLeads reports whether the latest published state still makes this
// node leader in st's term. The watch loop may apply a snapshot that a
// newer one (a disconnect, say) already replaced; a term is not started
// on it, since the newer one follows at once.
func (s *Server) stillLeads(st cluster.State) bool {
	cur := s.cluster.State()
	return cur.IsLeader && cur.Leader.Epoch == st.Leader.Epoch && cur.Session == st.Session
}

// termDeps are what a term of this node is started with besides the
// node itself. Start has set every one of them before the watch loop
// starts a term.
func (s *Server) termDeps() leader.Deps {
	return leader.Deps{
		ID: s.cfg.ID, Started: s.started, Secret: s.cfg.Secret, PeerTLS: s.peerTLS,
		PeerQueue: s.cfg.PeerQueue, WriteTimeout: s.cfg.WriteTimeout,
		RequestTimeout: s.cfg.RequestTimeout, HotWordsReset: s.cfg.HotWordsReset,
		Log: s.log, Metrics: s.m,
		Cluster: s.cluster, Store: s.rooms, Convs: s.chatlog, Journal: s.journal,
		Sessions: s.sessionStore(), Writer: s.writer, Directory: s.dir, HotWords: s.words.counter,
		Parked: s.parked, Ups: &s.ups,
		Support: s.store, Messages: s.journal, SupportGrace: s.cfg.SupportGrace,
		MultiDevice: s.multi(),
		Events:      s.cfg.eventPolicy(), NewID: s.ids.next,
	}
}

// termNode is this node as its terms see it (leader.Node).
type termNode struct{ s *Server }

var _ leader.Node = termNode{}

func (n termNode) Go(f func()) bool { return n.s.goAttach(f) }

func (n termNode) DeliverLocal(users iter.Seq[string], m *protocol.Message) {
	n.s.deliverLocal(users, m)
}

func (n termNode) DeliverPushed(users iter.Seq[string], conv string, seq int64, push []byte, again bool) {
	n.s.deliverPushed(users, conv, seq, push, again, "")
}

func (n termNode) DeliverExcept(users iter.Seq[string], except, conv string, seq int64, push []byte, again bool) {
	if conv != "" {
		n.s.deliverPushed(users, conv, seq, push, again, except)
	} else {
		n.s.deliverRaw(users, push, except)
	}
}

func (n termNode) DeliverRaw(users iter.Seq[string], push []byte) { n.s.deliverRaw(users, push, "") }
func (n termNode) KickLocal(user, conn, reason string)            { n.s.kickLocal(user, conn, reason) }
func (n termNode) RosterFrames(epoch int64) [][]byte              { return n.s.rosterFrames(epoch) }
func (n termNode) OnReply(f protocol.PeerFrame)                   { n.s.routes.onReply(f) }
func (n termNode) LocalCount() int                                { return n.s.local.Len() }
func (n termNode) MessagesIn() int64                              { return n.s.messagesIn.Load() }
