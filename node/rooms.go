package node

import (
	"context"
	"fmt"
	"iter"

	"github.com/prometheus/client_golang/prometheus"

	"chatcluster/handler"
	"chatcluster/protocol"
)

// rosterChunk is how many sessions go in one roster frame, well inside
// MaxPeerFrame.
const rosterChunk = 10000

// rosterFrames are this node's sessions as roster frames.
func (s *Server) rosterFrames(epoch int64) [][]byte {
	var all []protocol.PeerSession
	s.local.Each(func(c *client) bool {
		all = append(all, protocol.PeerSession{User: c.User(), Conn: c.id, Ver: c.ver.Load()})
		return true
	})
	var out [][]byte
	for i := 0; i == 0 || i < len(all); i += rosterChunk {
		f := protocol.PeerFrame{Type: protocol.PeerRoster, Epoch: epoch, From: s.cfg.ID, Sessions: all[i:min(i+rosterChunk, len(all))]}
		if i > 0 {
			f.Op = "more"
		}
		if b, err := protocol.EncodePeer(&f); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// deliverRaw hands an encoded push to the named users connected here, on
// each of their connections but except ("" none).
func (s *Server) deliverRaw(users iter.Seq[string], push []byte, except string) {
	count := s.rawCounter(push)
	for u := range users {
		for _, c := range s.local.Conns(u) {
			if c.id != except && c.enqueue(push) {
				count.Inc()
			}
		}
	}
}

// rawCounter is the metric a push that is no message counts in: read
// receipts apart from presence.
func (s *Server) rawCounter(push []byte) prometheus.Counter {
	if len(push) >= len(readPushPrefix) && string(push[:len(readPushPrefix)]) == readPushPrefix {
		return s.m.PushRead
	}
	return s.m.PushPresence
}

// readPushPrefix begins every read push (protocol.EncodePush).
const readPushPrefix = `{"action":"` + protocol.PushRead + `",`

// roomsSvc implements handler.Rooms on every node by asking the leader.
type roomsSvc struct{ s *Server }

func (rs roomsSvc) ask(ctx context.Context, f protocol.PeerFrame) (protocol.PeerFrame, error) {
	f.Type = protocol.PeerRoom
	return rs.askAs(ctx, f)
}

// askAs sends request f, of its type, to the leader and makes its reply's
// code an error.
func (rs roomsSvc) askAs(ctx context.Context, f protocol.PeerFrame) (protocol.PeerFrame, error) {
	rep, err := rs.s.routes.request(ctx, &f)
	if err != nil {
		return rep, err
	}
	if rep.Code != 0 {
		if rep.RetryAfter > 0 {
			return rep, &protocol.Error{Code: rep.Code, Msg: rep.Error, Data: protocol.RetryData{RetryAfter: rep.RetryAfter}}
		}
		return rep, protocol.Errorf(rep.Code, "%s", rep.Error)
	}
	return rep, nil
}

func (rs roomsSvc) Join(ctx context.Context, user, name string) ([]string, error) {
	rep, err := rs.ask(ctx, protocol.PeerFrame{Op: protocol.RoomJoin, User: user, Room: name})
	return nonNilStrings(rep.Members), err
}

func (rs roomsSvc) Leave(ctx context.Context, user, name string) ([]string, error) {
	rep, err := rs.ask(ctx, protocol.PeerFrame{Op: protocol.RoomLeave, User: user, Room: name})
	return nonNilStrings(rep.Members), err
}

func (rs roomsSvc) List(ctx context.Context, user string) ([]protocol.RoomInfo, error) {
	rep, err := rs.ask(ctx, protocol.PeerFrame{Op: protocol.RoomList, User: user})
	return rep.Rooms, err
}

func (rs roomsSvc) Post(ctx context.Context, m protocol.Message, clientMsgID string) (protocol.Message, bool, error) {
	rep, err := rs.ask(ctx, protocol.PeerFrame{Op: protocol.RoomPost, User: m.From, Room: m.Room, Message: &m, ClientMsgID: clientMsgID})
	if err != nil {
		return protocol.Message{}, false, err
	}
	if rep.Message == nil {
		return protocol.Message{}, false, fmt.Errorf("%w: leader answered a post without the message", handler.ErrUnavailable)
	}
	return *rep.Message, rep.Dup, nil
}

func (rs roomsSvc) Change(ctx context.Context, m protocol.Message) (protocol.Message, error) {
	rep, err := rs.ask(ctx, protocol.PeerFrame{Op: protocol.RoomChange, User: m.From, Room: m.Room, Message: &m})
	if err != nil {
		return protocol.Message{}, err
	}
	if rep.Message == nil {
		return protocol.Message{}, fmt.Errorf("%w: leader answered a change without the event", handler.ErrUnavailable)
	}
	return *rep.Message, nil
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
