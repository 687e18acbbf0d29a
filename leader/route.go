package leader

import (
	"slices"
	"sync"

	"chatcluster/cluster"
	"chatcluster/peerlink"
	"chatcluster/protocol"
)

// onNodeFrame handles a frame node m sent up on link. Link read loop only.
//
// A numbered frame (Up) is acknowledged once handled. One this node
// handled before as leader (the node sends again what a lost link did not
// acknowledge) is only acknowledged again. A term that has stopped leaves
// what it still reads alone, unacknowledged: the node hands it to the
// next link, and this node's next term or the next leader handles it once.
func (l *Term) onNodeFrame(link *peerlink.Link, m cluster.Member, f protocol.PeerFrame) {
	if f.Up == 0 {
		l.Handle(m.ID, f)
		return
	}
	if l.ctx.Err() != nil {
		return
	}
	if !l.d.Ups.fresh(m, f.Up) {
		l.m.PeerResent.Inc()
		link.SetHandled(f.Up)
		return
	}
	l.Handle(m.ID, f)
	if l.ctx.Err() != nil {
		// The term ended while the frame was handled: what it sent may
		// have found its link closed. Unacknowledged, the frame goes to
		// the next term, and a push that did go out is not shown twice.
		return
	}
	l.d.Ups.done(m, f.Up)
	link.SetHandled(f.Up)
}

// UpMarks remembers, per run of every node, the highest numbered frame
// (PeerFrame.Up) this node handled as leader, across its terms, so that
// a frame sent again after a lost link is not handled twice.
//
// It belongs to the node (Deps.Ups), not to a term. The zero value is
// ready; safe for concurrent use.
type UpMarks struct {
	mu sync.Mutex
	m  map[string]upMark // by node id; guarded by mu
}

type upMark struct {
	run int64
	up  uint64
}

// fresh reports whether frame up of member m is not yet handled.
func (u *UpMarks) fresh(m cluster.Member, up uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	mk, ok := u.m[m.ID]
	return !ok || mk.run != m.Run || up > mk.up
}

// done records frame up of member m as handled.
func (u *UpMarks) done(m cluster.Member, up uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]upMark{}
	}
	if mk, ok := u.m[m.ID]; !ok || mk.run != m.Run || up > mk.up {
		u.m[m.ID] = upMark{run: m.Run, up: up}
	}
}

// Handle runs a frame from node from (this node included). It never
// blocks on the network. The node hands it what it sends up itself while
// it leads; frames from the other nodes come on their links.
func (l *Term) Handle(from string, f protocol.PeerFrame) {
	l.m.LeaderFrameIn(f.Type).Inc()
	switch f.Type {
	case protocol.PeerRoute, protocol.PeerKick:
		l.forward(&f)
	case protocol.PeerRoom:
		l.rooms.submit(from, f)
	case protocol.PeerSupport:
		l.support.submit(from, f)
	case protocol.PeerSignal:
		l.signal(f)
	case protocol.PeerOnline:
		l.rooms.online(from, f)
		if f.Online {
			l.support.poke() // an agent may be ready now
		}
	case protocol.PeerRoster:
		l.rooms.roster(from, f)
		l.support.poke()
	case protocol.PeerLoad:
		l.mu.Lock()
		l.loads[from] = f
		l.mu.Unlock()
	default:
		l.log.Warn().Str("peer", from).Str("type", f.Type).Msg("unexpected peer frame from node")
	}
}

// forward sends a route or kick frame on to its destination node. A route
// without a destination goes to wherever the recipients are online.
func (l *Term) forward(f *protocol.PeerFrame) {
	if f.Type == protocol.PeerRoute && f.Dest == "" {
		l.route(f)
		return
	}
	if f.Dest == l.id {
		if f.Type == protocol.PeerKick {
			for _, u := range f.Users {
				l.node.KickLocal(u, f.Conn, kickReason(f))
			}
			return
		}
		l.node.DeliverLocal(slices.Values(f.Users), f.Message)
		return
	}
	out := protocol.PeerFrame{Type: protocol.PeerDeliver, Recipients: protocol.JoinNames(f.Users), Message: f.Message}
	if f.Type == protocol.PeerKick {
		out = protocol.PeerFrame{Type: protocol.PeerKick, Users: f.Users, Conn: f.Conn, Reason: f.Reason, Server: f.Server}
	}
	l.send(f.Dest, &out)
}

// kickReason is what the users of kick frame f are told: the server
// API's reason, or "" for the node's own (a newer login).
func kickReason(f *protocol.PeerFrame) string {
	if f.Server != nil && f.Server.Reason != "" {
		return f.Server.Reason
	}
	return f.Reason
}

// route hands a message's push to its recipients' nodes, as the nodes'
// logins and rosters place them. A recipient not placed yet (a login the
// leader has not heard of, or a node whose roster is still on its way after
// a new term began) is parked for a moment (parking) and gets the push if
// it appears meanwhile; otherwise the message waits for their sync.
//
// A user online on several connections (the multi login policy) gets the
// push on every node that holds one, but the sender's node when it says
// it delivered there itself (Away), and not on the connection Except.
func (l *Term) route(f *protocol.PeerFrame) {
	p := parkedPush{push: f.Push, conv: f.Conv, seq: f.Seq, again: f.Again, except: f.Except}
	if len(p.push) > 0 && p.conv == "" {
		skip := ""
		if f.Away {
			skip = f.From
		}
		l.routeRaw(f.Users, f.Push, f.Except, skip)
		return
	}
	if len(p.push) == 0 {
		if f.Message == nil {
			return
		}
		p = parkedPush{push: encodeMessage(*f.Message), conv: f.Message.Conv, seq: f.Message.Seq, again: f.Again, except: f.Except}
	}
	if f.Away {
		p.skip = f.From
	}
	for _, u := range f.Users {
		l.parked.route(u, p, l.rooms.reg.Nodes, l.pushParked)
	}
}

func (l *Term) pushParked(node, user string, p parkedPush) {
	if node == p.skip {
		return
	}
	l.pushExcept(node, []string{user}, p.conv, p.seq, p.push, p.again, p.except)
}

// pushMessage hands the encoded push of message seq of conv to users on
// node; again for a frame handed over again (PeerFrame.Again).
func (l *Term) pushMessage(node string, users []string, conv string, seq int64, push []byte, again bool) {
	l.pushExcept(node, users, conv, seq, push, again, "")
}

// pushExcept is pushMessage for every connection of users but except
// ("" none). Without conv, push is no message's (PeerFrame.Push).
func (l *Term) pushExcept(node string, users []string, conv string, seq int64, push []byte, again bool, except string) {
	if node == l.id {
		if except == "" && conv != "" {
			l.node.DeliverPushed(slices.Values(users), conv, seq, push, again)
		} else {
			l.node.DeliverExcept(slices.Values(users), except, conv, seq, push, again)
		}
		return
	}
	f := &protocol.PeerFrame{Type: protocol.PeerPush, Recipients: protocol.JoinNames(users), Push: push, Conv: conv, Seq: seq, Again: again, Except: except}
	if conv == "" && protocol.IsReceiptFrame(push) {
		l.sendLazy(node, f)
		return
	}
	l.send(node, f)
}

// appeared delivers what was parked for user, now online.
func (l *Term) appeared(user string) {
	l.parked.appeared(user, l.rooms.reg.Nodes, l.pushParked)
}

// reply answers request f.Req of node to.
func (l *Term) reply(to string, f protocol.PeerFrame) {
	f.Type = protocol.PeerReply
	if to == l.id {
		f.Epoch, f.From = l.epoch, l.id
		l.node.OnReply(f)
		return
	}
	l.send(to, &f)
}

// encodeMessage is the push of m, as the node that stored it encodes it.
func encodeMessage(m protocol.Message) []byte { return protocol.EncodeMessagePush(&m) }
