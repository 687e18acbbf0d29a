package handler

import (
	"context"
	"errors"
	"slices"

	"chatcluster/protocol"
)

// Visitors are customer service's anonymous users (accounts).
type Visitors interface {
	// TokenVisitor returns the visitor a visitor token belongs to, or
	// ErrBadCredentials.
	TokenVisitor(ctx context.Context, token string) (string, error)
	// Visitor returns a visitor's display name and channel.
	Visitor(ctx context.Context, id string) (name, channel string, err error)
}

// Support is customer service, owned by the cluster's leader. Errors are
// *protocol.Error with the client's code, or ErrUnavailable.
type Support interface {
	// Open opens visitor's next conversation, or returns the open one,
	// with its place in the queue. With resume (a conversation of the
	// visitor's), it opens none: without an open one it returns resume
	// as closed.
	Open(ctx context.Context, visitor, name, channel, resume string) (protocol.SupportConv, error)
	// Post stores m in its support conversation m.Conv for m.From, the
	// visitor or the agent holding it, and hands it to the other side.
	Post(ctx context.Context, m protocol.Message, clientMsgID string) (stored protocol.Message, dup bool, err error)
	// Close closes conv for user, its visitor or its agent; already is
	// true when it was closed before.
	Close(ctx context.Context, user, conv string) (c protocol.SupportConv, already bool, err error)
	// Transfer hands conv from agent user to agent to.
	Transfer(ctx context.Context, user, conv, to string) (protocol.SupportConv, error)
	// Status sets agent user available or away ("" changes nothing).
	Status(ctx context.Context, user, status string) (protocol.AgentState, error)
	// List returns what agent user holds, and its state.
	List(ctx context.Context, user string) ([]protocol.SupportConv, protocol.AgentState, error)
	// VisitorConvs returns visitor's conversations, newest first, for
	// agent user.
	VisitorConvs(ctx context.Context, user, visitor string) ([]protocol.SupportConv, error)
}

// visitorActions are what a visitor may do; anything else is 403.
var visitorActions = map[string]bool{
	protocol.ActionPing: true, protocol.ActionChat: true, protocol.ActionHistory: true,
	protocol.ActionSync: true, protocol.ActionRebuild: true,
	protocol.ActionSupport: true, protocol.ActionSupportClose: true,
}

func (h *Handler) supportAvailable() error {
	if h.d.Support == nil || h.d.Visitors == nil {
		return protocol.Errorf(protocol.CodeUnavailable, "customer service is not set up on this node")
	}
	return nil
}

func (h *Handler) visitorLogin(ctx context.Context, token string) (string, error) {
	if err := h.supportAvailable(); err != nil {
		return "", err
	}
	return h.d.Visitors.TokenVisitor(ctx, token)
}

func (h *Handler) support(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.SupportData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if d.Conv != "" {
		if v, _, ok := protocol.ParseSupportConv(d.Conv); !ok || v != c.User() {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "conv must be one of your support conversations")
		}
	}
	if err := h.supportAvailable(); err != nil {
		return nil, err
	}
	user := c.User()
	if !protocol.IsVisitor(user) {
		return nil, protocol.Errorf(protocol.CodeForbidden, "support opens a visitor's conversation: log in with a visitor token (POST /api/visitor)")
	}
	name, channel, err := h.d.Visitors.Visitor(ctx, user)
	if err != nil {
		return nil, err
	}
	return h.d.Support.Open(ctx, user, name, channel, d.Conv)
}

func (h *Handler) convData(req protocol.Request) (string, error) {
	var d protocol.ConvData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return "", err
	}
	if _, _, ok := protocol.ParseSupportConv(d.Conv); !ok {
		return "", protocol.Errorf(protocol.CodeBadRequest, "conv must be a support conversation (cs:<visitor>:<n>)")
	}
	return d.Conv, nil
}

func (h *Handler) supportClose(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	conv, err := h.convData(req)
	if err != nil {
		return nil, err
	}
	if err := h.supportAvailable(); err != nil {
		return nil, err
	}
	if v, _, _ := protocol.ParseSupportConv(conv); protocol.IsVisitor(c.User()) && v != c.User() {
		return nil, protocol.Errorf(protocol.CodeForbidden, "conversation %s is not yours", conv)
	}
	sc, _, err := h.d.Support.Close(ctx, c.User(), conv)
	if err != nil {
		return nil, err
	}
	return sc, nil
}

func (h *Handler) supportTransfer(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.TransferData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if _, _, ok := protocol.ParseSupportConv(d.Conv); !ok {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "conv must be a support conversation (cs:<visitor>:<n>)")
	}
	if !protocol.ValidName(d.To) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "to must be an agent's username")
	}
	if err := h.supportAvailable(); err != nil {
		return nil, err
	}
	to, err := h.d.Users.Resolve(ctx, d.To)
	if err != nil {
		return nil, err
	}
	return h.d.Support.Transfer(ctx, c.User(), d.Conv, to)
}

func (h *Handler) supportConvs(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.Empty
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if err := h.supportAvailable(); err != nil {
		return nil, err
	}
	convs, st, err := h.d.Support.List(ctx, c.User())
	if err != nil {
		return nil, err
	}
	if convs == nil {
		convs = []protocol.SupportConv{}
	}
	return protocol.SupportConvsReply{Convs: convs, Agent: st}, nil
}

func (h *Handler) agentStatus(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.AgentStatusData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if d.Status != "" && d.Status != protocol.AgentAvailable && d.Status != protocol.AgentAway {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "status must be %q, %q or left out", protocol.AgentAvailable, protocol.AgentAway)
	}
	if err := h.supportAvailable(); err != nil {
		return nil, err
	}
	return h.d.Support.Status(ctx, c.User(), d.Status)
}

// supportHistory pages through a visitor's messages over all their
// conversations, newest first: each page is oldest first, and Next says
// where the older one begins.
func (h *Handler) supportHistory(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.SupportHistoryData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if !protocol.ValidVisitor(d.Visitor) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "visitor must be a visitor id (~...)")
	}
	limit := d.Limit
	switch {
	case limit == 0:
		limit = protocol.DefaultSupportPage
	case limit < 0 || limit > protocol.MaxSupportHistory:
		return nil, protocol.Errorf(protocol.CodeBadRequest, "limit must be 1 to %d", protocol.MaxSupportHistory)
	}
	if d.Before < 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "before must not be negative")
	}
	if d.Conv != "" {
		if v, _, ok := protocol.ParseSupportConv(d.Conv); !ok || v != d.Visitor {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "conv must be one of the visitor's conversations")
		}
	}
	if err := h.supportAvailable(); err != nil {
		return nil, err
	}
	convs, err := h.d.Support.VisitorConvs(ctx, c.User(), d.Visitor)
	if err != nil {
		return nil, err
	}
	out := protocol.SupportHistoryReply{Visitor: d.Visitor, Convs: convs, Messages: []protocol.Message{}}
	if out.Convs == nil {
		out.Convs = []protocol.SupportConv{}
	}
	start := 0
	if d.Conv != "" {
		start = -1
		for i, sc := range convs {
			if sc.Conv == d.Conv {
				start = i
			}
		}
		if start < 0 {
			return nil, protocol.Errorf(protocol.CodeNotFound, "no conversation %s", d.Conv)
		}
	}
	before := d.Before
	left := limit
	for i := start; i < len(convs); i++ {
		msgs, err := h.d.Journal.Range(ctx, convs[i].Conv, 0, before, left, true)
		if err != nil {
			return nil, err
		}
		out.Messages = append(msgs, out.Messages...)
		left -= len(msgs)
		if left <= 0 {
			switch {
			case len(msgs) > 0 && msgs[0].Seq > 1:
				out.Next = &protocol.HistoryCursor{Conv: convs[i].Conv, Before: msgs[0].Seq}
			case i+1 < len(convs):
				out.Next = &protocol.HistoryCursor{Conv: convs[i+1].Conv}
			}
			break
		}
		before = 0
	}
	return out, nil
}

// wasAssigned reports whether agent was ever assigned conv, visitor's, as
// the support store has it (403 from the leader: user is no agent).
func (h *Handler) wasAssigned(ctx context.Context, user, visitor, conv string) (bool, error) {
	convs, err := h.d.Support.VisitorConvs(ctx, user, visitor)
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Code == protocol.CodeForbidden {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, c := range convs {
		if c.Conv == conv && slices.Contains(c.Agents, user) {
			return true, nil
		}
	}
	return false, nil
}
