package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"chatcluster/accounts"
	"chatcluster/handler"
	"chatcluster/protocol"
)

// visitors adapts accounts' visitors to handler.Visitors.
type visitors struct{ a *accounts.Accounts }

func (v visitors) TokenVisitor(ctx context.Context, token string) (string, error) {
	id, err := v.a.TokenVisitor(ctx, token)
	return id, userErr(err)
}

func (v visitors) Visitor(ctx context.Context, id string) (string, string, error) {
	rec, err := v.a.Visitor(ctx, id)
	if err != nil {
		return "", "", userErr(err)
	}
	return rec.Name, rec.Channel, nil
}

// supportSvc implements handler.Support on every node by asking the
// leader, as roomsSvc does for rooms.
type supportSvc struct{ s *Server }

func (ss supportSvc) ask(ctx context.Context, f protocol.PeerFrame) (protocol.PeerFrame, error) {
	f.Type = protocol.PeerSupport
	rep, err := roomsSvc(ss).askAs(ctx, f)
	if err == nil && rep.Support == nil && rep.Message == nil {
		rep.Support = &protocol.SupportPeer{}
	}
	return rep, err
}

func (ss supportSvc) conv(rep protocol.PeerFrame) (protocol.SupportConv, error) {
	if rep.Support == nil || rep.Support.Conv == nil {
		return protocol.SupportConv{}, fmt.Errorf("%w: leader answered without the conversation", handler.ErrUnavailable)
	}
	return *rep.Support.Conv, nil
}

func (ss supportSvc) Open(ctx context.Context, visitor, name, channel, resume string) (protocol.SupportConv, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportOpen, User: visitor, Conv: resume, Support: &protocol.SupportPeer{Name: name, Channel: channel}})
	if err != nil {
		return protocol.SupportConv{}, err
	}
	return ss.conv(rep)
}

func (ss supportSvc) Post(ctx context.Context, m protocol.Message, clientMsgID string) (protocol.Message, bool, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportPost, User: m.From, Conv: m.Conv, Message: &m, ClientMsgID: clientMsgID})
	if err != nil {
		return protocol.Message{}, false, err
	}
	if rep.Message == nil {
		return protocol.Message{}, false, fmt.Errorf("%w: leader answered a post without the message", handler.ErrUnavailable)
	}
	return *rep.Message, rep.Dup, nil
}

func (ss supportSvc) Close(ctx context.Context, user, conv string) (protocol.SupportConv, bool, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportCloseOp, User: user, Conv: conv})
	if err != nil {
		return protocol.SupportConv{}, false, err
	}
	if rep.Support.Closed {
		v, _, _ := protocol.ParseSupportConv(conv)
		return protocol.SupportConv{Conv: conv, Visitor: v, State: protocol.SupportClosed}, true, nil
	}
	c, err := ss.conv(rep)
	return c, false, err
}

func (ss supportSvc) Transfer(ctx context.Context, user, conv, to string) (protocol.SupportConv, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportTransfer, User: user, Conv: conv, Support: &protocol.SupportPeer{To: to}})
	if err != nil {
		return protocol.SupportConv{}, err
	}
	return ss.conv(rep)
}

func (ss supportSvc) Status(ctx context.Context, user, status string) (protocol.AgentState, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportStatus, User: user, Support: &protocol.SupportPeer{Status: status}})
	if err != nil {
		return protocol.AgentState{}, err
	}
	if rep.Support.Agent == nil {
		return protocol.AgentState{}, fmt.Errorf("%w: leader answered without the agent", handler.ErrUnavailable)
	}
	return *rep.Support.Agent, nil
}

func (ss supportSvc) List(ctx context.Context, user string) ([]protocol.SupportConv, protocol.AgentState, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportList, User: user})
	if err != nil {
		return nil, protocol.AgentState{}, err
	}
	if rep.Support.Agent == nil {
		return nil, protocol.AgentState{}, fmt.Errorf("%w: leader answered without the agent", handler.ErrUnavailable)
	}
	return rep.Support.Convs, *rep.Support.Agent, nil
}

func (ss supportSvc) VisitorConvs(ctx context.Context, user, visitor string) ([]protocol.SupportConv, error) {
	rep, err := ss.ask(ctx, protocol.PeerFrame{Op: protocol.SupportVisitor, User: user, Support: &protocol.SupportPeer{Visitor: visitor}})
	if err != nil {
		return nil, err
	}
	return rep.Support.Convs, nil
}

// serveSupport serves, on the admin listener, the leader's customer-service
// state (protocol.SupportSnapshot); 404 on a node that does not lead, 503
// while the leader loads it.
func (s *Server) serveSupport(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	lead := s.routes.leading()
	if lead == nil {
		http.Error(w, "this node does not lead the cluster; ask the leader (GET /api/cluster on the gateway names it)", http.StatusNotFound)
		return
	}
	snap, ok := lead.SupportSnapshot()
	if !ok {
		http.Error(w, "customer service is still loading", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(snap)
}
