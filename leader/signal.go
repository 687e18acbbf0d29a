package leader

import (
	"slices"

	"chatcluster/protocol"
)

// Pushes that are no message: typing (signal frames, best-effort, on the
// lowest priority) and read receipts (route frames without a
// conversation). Neither is stored or parked: a recipient the leader
// cannot place now misses them (a read position is in sync too).

// signalRoom is how much of a link's queue a signal frame may find taken:
// past it the link is busy with what matters more.
const signalRoom = 64

// signal hands a typing push to the online members of f.Room other than
// f.User (who must be a member), or to f.Users, one frame per node, on
// links with room to spare. Nothing is sent while the term is overloaded.
func (l *Term) signal(f protocol.PeerFrame) {
	if len(f.Push) == 0 {
		return
	}
	if l.busy.Load() {
		l.m.SignalDropped.Inc()
		return
	}
	var plan map[string][]string
	if f.Room != "" {
		if _, member := l.rooms.reg.IsMember(f.Room, f.User); !member {
			return
		}
		plan = l.rooms.reg.Plan(f.Room)
		for node, users := range plan {
			if i, found := slices.BinarySearch(users, f.User); found {
				plan[node] = slices.Delete(users, i, i+1)
			}
		}
	} else {
		// The sending node handed the push to its own connections of
		// the users already.
		plan = l.place(f.Users)
		delete(plan, f.From)
	}
	for node, users := range plan {
		if len(users) == 0 {
			continue
		}
		if node == l.id {
			l.node.DeliverSignal(slices.Values(users), f.Push)
			continue
		}
		l.sendLossy(node, &protocol.PeerFrame{Type: protocol.PeerSignal, Recipients: protocol.JoinNames(users), Push: f.Push})
	}
}

// routeRaw hands an encoded push that is no message (a read receipt) to
// users on every node they are online on now, but skip (the sending node,
// which delivered there itself), on each connection but except.
func (l *Term) routeRaw(users []string, push []byte, except, skip string) {
	for node, us := range l.place(users) {
		if node != skip {
			l.pushExcept(node, us, "", 0, push, false, except)
		}
	}
}

// place groups the users online by node, a user on each node that holds
// one of its connections; the others are left out.
func (l *Term) place(users []string) map[string][]string {
	out := map[string][]string{}
	for _, u := range users {
		for _, node := range l.rooms.reg.Nodes(u) {
			out[node] = append(out[node], u)
		}
	}
	return out
}

// sendLossy queues f for node only on a link that is up and whose queue
// has room to spare; otherwise f is dropped, never held.
func (l *Term) sendLossy(node string, f *protocol.PeerFrame) {
	l.mu.Lock()
	link := l.links[node]
	l.mu.Unlock()
	if link == nil || link.Closed() || link.Queued() >= min(signalRoom, link.Cap()/4) || !l.lazy(link, f) {
		l.m.SignalDropped.Inc()
	}
}

// lazy queues f, stamped with this term, on the lazy lane of link
// (peerlink EnqueueLazy); false if it was not queued.
func (l *Term) lazy(link memberLink, f *protocol.PeerFrame) bool {
	f.Epoch, f.From = l.epoch, l.id
	b, err := protocol.EncodePeer(f)
	if err != nil || !link.EnqueueLazy(b) {
		return false
	}
	l.m.LeaderFramesOut.Inc()
	return true
}
