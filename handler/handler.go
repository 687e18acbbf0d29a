package handler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"chatcluster/protocol"
)

// Deps is what the handler needs from the node.
type Deps struct {
	Node     string // this node's id, reported at login
	Users    Users
	Sessions Sessions
	Journal  Journal
	Router   Router
	Rooms    Rooms
	// Support and Visitors are customer service; nil: its actions
	// answer 503.
	Support  Support
	Visitors Visitors
	Words    Words
	Filter   Filter // nil: texts are stored as sent
	// Events says who may edit and recall which message; its zero value
	// has the default windows and no operator.
	Events EventPolicy
	Screen Screen // the before-message hook; nil: none
	Now    Clock
	NewID  func() string // message ids

	// Reads keeps read positions; nil: read answers 503 and sync has
	// none. Pushes hands out typing and read pushes; nil: none are sent.
	Reads  Reads
	Pushes Pusher
}

// Handler dispatches requests to actions. Create it with New.
type Handler struct {
	d       Deps
	actions map[string]action
}

type action struct {
	fn        func(ctx context.Context, c Conn, req protocol.Request) (any, error)
	needLogin bool
}

// peerActions are the peer-link frame types; on the client port they are
// refused with 403 rather than 400 so probing is visible in logs.
var peerActions = map[string]bool{
	protocol.PeerHello: true, protocol.PeerLoad: true, protocol.PeerRoute: true,
	protocol.PeerDeliver: true, protocol.PeerKick: true, protocol.PeerRoom: true,
	protocol.PeerReply: true, protocol.PeerOnline: true, protocol.PeerRoster: true,
	protocol.PeerPush: true, protocol.PeerAck: true, protocol.PeerSignal: true,
}

// New returns a handler over d.
func New(d Deps) *Handler {
	h := &Handler{d: d}
	h.actions = map[string]action{
		protocol.ActionLogin:    {h.login, false},
		protocol.ActionPing:     {h.ping, true},
		protocol.ActionChat:     {h.chat, true},
		protocol.ActionHistory:  {h.history, true},
		protocol.ActionSync:     {h.sync, true},
		protocol.ActionUserInfo: {h.userInfo, true},
		protocol.ActionJoin:     {h.joinRoom, true},
		protocol.ActionLeave:    {h.leaveRoom, true},
		protocol.ActionRooms:    {h.rooms, true},
		protocol.ActionPopular:  {h.popular, true},
		protocol.ActionRebuild:  {h.rebuild, true},
		protocol.ActionTyping:   {h.typing, true},
		protocol.ActionRead:     {h.read, true},
		protocol.ActionEdit:     {h.edit, true},
		protocol.ActionRecall:   {h.recall, true},

		protocol.ActionSupport:         {h.support, true},
		protocol.ActionSupportClose:    {h.supportClose, true},
		protocol.ActionSupportTransfer: {h.supportTransfer, true},
		protocol.ActionSupportConvs:    {h.supportConvs, true},
		protocol.ActionSupportHistory:  {h.supportHistory, true},
		protocol.ActionAgentStatus:     {h.agentStatus, true},
	}
	return h
}

// Handle runs one request for connection c and returns the reply to send.
// Errors are already in the reply; the caller only logs failures.
func (h *Handler) Handle(ctx context.Context, c Conn, req protocol.Request) protocol.Reply {
	data, err := h.dispatch(ctx, c, req)
	if err != nil {
		r := protocol.ReplyError(req.Action, req.ID, clientError(err))
		if r.Code >= 500 {
			r.Cause = err
		}
		return r
	}
	return protocol.Reply{Action: req.Action, ID: req.ID, Code: protocol.CodeOK, Data: data}
}

func (h *Handler) dispatch(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	a, ok := h.actions[req.Action]
	if !ok {
		if peerActions[req.Action] {
			return nil, protocol.Errorf(protocol.CodeForbidden, "peer action %q is not accepted on the client port", req.Action)
		}
		return nil, protocol.Errorf(protocol.CodeBadRequest, "unknown action %q", req.Action)
	}
	if a.needLogin && c.User() == "" {
		return nil, protocol.Errorf(protocol.CodeUnauthorized, "log in first")
	}
	if protocol.IsVisitor(c.User()) && !visitorActions[req.Action] {
		return nil, protocol.Errorf(protocol.CodeForbidden, "a visitor can only use the support actions, not %q", req.Action)
	}
	return a.fn(ctx, c, req)
}

// clientError maps dependency errors to client codes.
func clientError(err error) error {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, ErrBadCredentials):
		return protocol.Errorf(protocol.CodeUnauthorized, "wrong username, password or token")
	case errors.Is(err, ErrUnknownUser):
		return protocol.Errorf(protocol.CodeNotFound, "unknown user")
	case errors.Is(err, ErrOverloaded):
		return &protocol.Error{Code: protocol.CodeUnavailable, Msg: "the cluster is overloaded; retry in 1 s", Data: protocol.RetryData{RetryAfter: 1}}
	case errors.Is(err, ErrBusy):
		return protocol.Errorf(protocol.CodeUnavailable, "cluster is busy re-electing its leader; retry shortly")
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return protocol.Errorf(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	return err
}

func (h *Handler) ping(context.Context, Conn, protocol.Request) (any, error) {
	return protocol.Empty{}, nil
}

func (h *Handler) login(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	if c.User() != "" {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "already logged in as %s", c.User())
	}
	var d protocol.LoginData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if d.Device != "" && !protocol.ValidDevice(d.Device) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "device must be 1 to %d ASCII letters, digits, '_', '-' or '.'", protocol.MaxDeviceLen)
	}
	var user string
	switch {
	case strings.HasPrefix(d.Token, protocol.VisitorTokenPrefix):
		if len(d.Token) > 128 {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "token is too long")
		}
		v, err := h.visitorLogin(ctx, d.Token)
		if err != nil {
			return nil, err
		}
		user = v
	case d.Token != "":
		if len(d.Token) > 128 {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "token is too long")
		}
		u, err := h.d.Users.TokenUser(ctx, d.Token)
		if err != nil {
			return nil, err
		}
		user = u
	case d.Username != "" || d.Password != "":
		if !protocol.ValidName(d.Username) {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "username must be 1 to %d letters, digits, '_', '-' or '.'", protocol.MaxUsernameLen)
		}
		if d.Password == "" || len(d.Password) > protocol.MaxPasswordLen {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "password is missing or longer than %d bytes", protocol.MaxPasswordLen)
		}
		u, err := h.d.Users.CheckPassword(ctx, d.Username, d.Password, c.RemoteAddr())
		if err != nil {
			return nil, err
		}
		user = u
	default:
		return nil, protocol.Errorf(protocol.CodeBadRequest, "login needs username and password, or token")
	}
	sid, err := h.d.Sessions.Login(ctx, c, user, d.Device)
	if err != nil {
		return nil, err
	}
	return protocol.LoginReply{Username: user, Visitor: protocol.IsVisitor(user), Node: h.d.Node, SessionID: sid}, nil
}

func (h *Handler) chat(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.ChatData
	if req.Chat != nil {
		d = *req.Chat
	} else if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	switch {
	case d.Conv != "" && (d.Room != "" || d.To != ""):
		return nil, protocol.Errorf(protocol.CodeBadRequest, "give one of to, room and conv")
	case d.Conv != "":
		if _, _, ok := protocol.ParseSupportConv(d.Conv); !ok {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "conv must be a support conversation (cs:<visitor>:<n>); send to a user with to, to a room with room")
		}
	case protocol.IsVisitor(c.User()):
		return nil, protocol.Errorf(protocol.CodeForbidden, "a visitor sends only to its support conversation (conv)")
	case d.Room != "" && d.To != "":
		return nil, protocol.Errorf(protocol.CodeBadRequest, "give either to or room, not both")
	case d.Room != "":
		if !protocol.ValidName(d.Room) {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "invalid room name")
		}
	case d.To == "":
		return nil, protocol.Errorf(protocol.CodeBadRequest, "chat needs to (a user) or room")
	case !protocol.ValidName(d.To):
		return nil, protocol.Errorf(protocol.CodeBadRequest, "invalid username in to")
	}
	if err := checkText(d.Text); err != nil {
		return nil, err
	}
	if len(d.ClientMsgID) > protocol.MaxIDLen {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "clientMsgId is longer than %d bytes", protocol.MaxIDLen)
	}
	from := c.User()
	text := d.Text
	if h.d.Filter != nil {
		text = h.d.Filter(text)
	}
	m := protocol.Message{ID: h.d.NewID(), From: from, Text: text, TS: h.d.Now()}
	var (
		stored protocol.Message
		dup    bool
		err    error
	)
	if d.Conv != "" {
		if err := h.supportAvailable(); err != nil {
			return nil, err
		}
		m.Conv = d.Conv
		if err := h.screen(ctx, &m); err != nil {
			return nil, err
		}
		if err := h.d.Router.Ready(); err != nil {
			return nil, err
		}
		stored, dup, err = h.d.Support.Post(ctx, m, d.ClientMsgID)
		if err != nil {
			return nil, err
		}
		if !dup {
			// The sender's other connections (devices) see it too.
			h.d.Router.DeliverExcept(from, c.ConnID(), nil, &stored)
		}
		return protocol.ChatReply{ID: stored.ID, Conv: stored.Conv, Seq: stored.Seq, TS: stored.TS}, nil
	} else if d.Room != "" {
		m.Conv, m.Room = protocol.RoomConv(d.Room), d.Room
		if err := h.screen(ctx, &m); err != nil {
			return nil, err
		}
		if err := h.d.Router.Ready(); err != nil {
			return nil, err
		}
		stored, dup, err = h.d.Rooms.Post(ctx, m, d.ClientMsgID)
		if err != nil {
			return nil, err
		}
	} else {
		to, err := h.d.Users.Resolve(ctx, d.To)
		if err != nil {
			return nil, err
		}
		m.Conv, m.To = protocol.DMConv(from, to), to
		if err := h.screen(ctx, &m); err != nil {
			return nil, err
		}
		if err := h.d.Router.Ready(); err != nil {
			return nil, err
		}
		st, err := h.d.Journal.Append(ctx, m, d.ClientMsgID, []string{from, to})
		if err != nil {
			return nil, err
		}
		stored, dup = st.Message, st.Dup
		if !dup {
			h.d.Router.Deliver(stored, st.Push, []string{to})
			if to != from {
				// The sender's other connections (devices) see it too;
				// this one has the reply.
				h.d.Router.DeliverExcept(from, c.ConnID(), st.Push, &stored)
			}
		}
	}
	if !dup {
		h.d.Words.Count(stored)
	}
	return protocol.ChatReply{ID: stored.ID, Conv: stored.Conv, Seq: stored.Seq, TS: stored.TS}, nil
}

// screen asks the before-message hook, if there is one, about m, which
// is complete but for its seq: allow stores it as it is, reject refuses it
// (403, with the hook's reason), rewrite replaces its text, which then
// goes through the filter and the length check like a client's. Without
// a usable verdict (the hook failed, did not answer in time, answered
// something else or a text that fails the check) the message is stored
// as sent, or, fail-closed, refused with 503.
func (h *Handler) screen(ctx context.Context, m *protocol.Message) error {
	if h.d.Screen == nil {
		return nil
	}
	v, err := h.d.Screen.Screen(ctx, *m)
	if err == nil {
		switch v.Action {
		case VerdictAllow:
			return nil
		case VerdictReject:
			if v.Reason == "" {
				return protocol.Errorf(protocol.CodeForbidden, "message rejected")
			}
			return protocol.Errorf(protocol.CodeForbidden, "message rejected: %s", v.Reason)
		case VerdictRewrite:
			text := v.Text
			if h.d.Filter != nil {
				text = h.d.Filter(text)
			}
			if err = checkText(text); err == nil {
				m.Text = text
				return nil
			}
			err = fmt.Errorf("rewrite to an unusable text: %w", err)
		default:
			err = fmt.Errorf("unknown action %q", v.Action)
		}
	}
	if !h.d.Screen.FailClosed() {
		return nil
	}
	return fmt.Errorf("%w (before-message hook: %v)", protocol.Errorf(protocol.CodeUnavailable,
		"the message could not be checked before it is stored, so it was not stored; retry shortly"), err)
}

func checkText(text string) error {
	switch {
	case text == "":
		return protocol.Errorf(protocol.CodeBadRequest, "text is empty")
	case len(text) > protocol.MaxTextBytes:
		return protocol.Errorf(protocol.CodeTooLarge, "text of %d bytes is over the limit of %d", len(text), protocol.MaxTextBytes)
	}
	return nil
}

// convFor resolves the conversation a history request names.
func convFor(user string, d protocol.HistoryData) (string, error) {
	n := 0
	for _, s := range []string{d.Conv, d.With, d.Room} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return "", protocol.Errorf(protocol.CodeBadRequest, "give exactly one of conv, with or room")
	}
	switch {
	case d.With != "":
		if !protocol.ValidName(d.With) {
			return "", protocol.Errorf(protocol.CodeBadRequest, "invalid username in with")
		}
		return protocol.DMConv(user, d.With), nil
	case d.Room != "":
		if !protocol.ValidName(d.Room) {
			return "", protocol.Errorf(protocol.CodeBadRequest, "invalid room name")
		}
		return protocol.RoomConv(d.Room), nil
	}
	return d.Conv, nil
}

// readable checks that user may read conv. A direct conversation is
// readable by its two participants; a room by its members, which are the
// users whose conversation list holds it (joining adds it, leaving removes
// it). member is loaded once per request, when a room needs it.
type readable struct {
	h      *Handler
	user   string
	member map[string]bool
}

func (r *readable) check(ctx context.Context, conv string) error {
	kind, a, b, ok := protocol.ParseConv(conv)
	if !ok {
		return protocol.Errorf(protocol.CodeBadRequest, "invalid conversation %q", conv)
	}
	if kind == "dm" {
		if r.user != a && r.user != b {
			return protocol.Errorf(protocol.CodeForbidden, "not a participant of %s", conv)
		}
		return nil
	}
	if kind == "cs" && r.user == a {
		return nil // the visitor's own
	}
	if protocol.IsVisitor(r.user) {
		return protocol.Errorf(protocol.CodeForbidden, "not your conversation: %s", conv)
	}
	if r.member == nil {
		convs, err := r.h.d.Journal.Convs(ctx, r.user)
		if err != nil {
			return err
		}
		r.member = make(map[string]bool, len(convs))
		for _, cv := range convs {
			r.member[cv] = true
		}
	}
	if !r.member[conv] && kind == "cs" && r.h.d.Support != nil {
		// Not in the agent's list: Redis may have lost it. The support
		// store says whom the conversation was ever assigned to.
		ok, err := r.h.wasAssigned(ctx, r.user, a, conv)
		if err != nil {
			return err
		}
		if ok {
			r.member[conv] = true
		}
	}
	if !r.member[conv] {
		if kind == "cs" {
			return protocol.Errorf(protocol.CodeForbidden, "%s was never assigned to you (supportHistory reads any visitor's)", conv)
		}
		return protocol.Errorf(protocol.CodeForbidden, "not a member of room %q", a)
	}
	return nil
}

func (h *Handler) history(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.HistoryData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	conv, err := convFor(c.User(), d)
	if err != nil {
		return nil, err
	}
	if d.With != "" {
		with, err := h.d.Users.Resolve(ctx, d.With)
		if err != nil {
			return nil, err
		}
		conv = protocol.DMConv(c.User(), with)
	}
	rd := readable{h: h, user: c.User()}
	if err := rd.check(ctx, conv); err != nil {
		return nil, err
	}
	limit := d.Limit
	switch {
	case limit == 0:
		limit = protocol.DefaultHistory
	case limit < 0 || limit > protocol.MaxHistoryLimit:
		return nil, protocol.Errorf(protocol.CodeBadRequest, "limit must be 1 to %d", protocol.MaxHistoryLimit)
	}
	if d.Before < 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "before must not be negative")
	}
	msgs, err := h.d.Journal.Range(ctx, conv, 0, d.Before, limit, true)
	if err != nil {
		return nil, err
	}
	return protocol.Messages{Messages: nonNil(msgs)}, nil
}

func (h *Handler) sync(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.SyncData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if len(d.Convs) > protocol.MaxSyncConvs {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "sync of %d conversations is over the limit of %d", len(d.Convs), protocol.MaxSyncConvs)
	}
	user := c.User()
	offsets := d.Convs
	if len(offsets) == 0 {
		convs, err := h.d.Journal.Convs(ctx, user)
		if err != nil {
			return nil, err
		}
		if len(convs) > protocol.MaxSyncConvs {
			// Bounded like a listed sync: the first MaxSyncConvs in id
			// order; the rest are synced by naming them.
			convs = convs[:protocol.MaxSyncConvs]
		}
		offsets = make(map[string]int64, len(convs))
		for _, cv := range convs {
			offsets[cv] = 0
		}
	}
	convs := make([]string, 0, len(offsets))
	rd := readable{h: h, user: user}
	for cv, off := range offsets {
		if err := rd.check(ctx, cv); err != nil {
			var pe *protocol.Error
			if errors.As(err, &pe) && pe.Code == protocol.CodeForbidden && (strings.HasPrefix(cv, protocol.RoomPrefix) || strings.HasPrefix(cv, protocol.SupportPrefix)) {
				// A room the user has left: nothing to sync, and not
				// an error, so a client's old offsets do not break
				// its sync.
				continue
			}
			return nil, err
		}
		if off < 0 {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "offset of %s is negative", cv)
		}
		convs = append(convs, cv)
	}
	latest, err := h.d.Journal.Latest(ctx, convs)
	if err != nil {
		return nil, err
	}
	readableOffsets := make(map[string]int64, len(convs))
	for _, cv := range convs {
		readableOffsets[cv] = offsets[cv]
	}
	unsure, err := h.d.Journal.Unsure(ctx, readableOffsets)
	if err != nil {
		return nil, err
	}
	out := protocol.SyncReply{Convs: make(map[string]protocol.SyncConv, len(convs))}
	// Conversations are read until half the request's time is spent; the
	// rest are answered with "more" and no messages, and the client asks
	// again from the same offsets. A slow history read (MongoDB, after
	// Redis lost its data) then slows a catch-up down but never fails it:
	// every sync answers at least one conversation.
	stop := h.d.Now() + syncBudget(ctx)
	read := 0
	for _, cv := range convs {
		off, top := offsets[cv], latest[cv]
		sc := protocol.SyncConv{Latest: top, Messages: []protocol.Message{}}
		gap := unsure[cv]
		switch {
		case gap.Rebuild:
			sc.Rebuild, sc.Floor = true, min(gap.Floor, top)
		case off > top:
			sc.Rebuild, sc.Floor = true, top
		case gap.Settling:
			sc.Settling, sc.Floor = true, gap.Floor
			if off < gap.Floor {
				msgs, err := h.d.Journal.Range(ctx, cv, off, gap.Floor+1, protocol.MaxSyncMessages, false)
				if err != nil {
					return nil, err
				}
				sc.Messages = nonNil(msgs)
				sc.More = len(msgs) > 0 && msgs[len(msgs)-1].Seq < gap.Floor
			}
		case off < top && read > 0 && h.d.Now() >= stop:
			sc.More = true
		case off < top:
			read++
			msgs, err := h.d.Journal.Range(ctx, cv, off, top+1, protocol.MaxSyncMessages, false)
			if err != nil {
				return nil, err
			}
			sc.Messages = nonNil(msgs)
			sc.More = len(msgs) > 0 && msgs[len(msgs)-1].Seq < top
		}
		out.Convs[cv] = sc
	}
	if err := h.addReadPositions(ctx, user, out); err != nil {
		return nil, err
	}
	return out, nil
}

// syncBudget is how long, in milliseconds, a sync reads conversations:
// half of what is left of the request's time (2.5 s without a deadline).
func syncBudget(ctx context.Context) int64 {
	d := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	return max(d/2, 0).Milliseconds()
}

func (h *Handler) userInfo(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.UserInfoData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	if !protocol.ValidName(d.Username) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "invalid username")
	}
	user, err := h.d.Users.Resolve(ctx, d.Username)
	if err != nil {
		return nil, err
	}
	p, err := h.d.Sessions.Lookup(ctx, user)
	if err != nil {
		return nil, err
	}
	return protocol.UserInfoReply{Username: user, Online: p.Online, Node: p.Node, LoginTime: p.LoginTime, Devices: p.Devices}, nil
}

func nonNil(m []protocol.Message) []protocol.Message {
	if m == nil {
		return []protocol.Message{}
	}
	return m
}

func (h *Handler) roomName(req protocol.Request) (string, error) {
	var d protocol.RoomData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return "", err
	}
	if !protocol.ValidName(d.Room) {
		return "", protocol.Errorf(protocol.CodeBadRequest, "invalid room name")
	}
	return d.Room, nil
}

func (h *Handler) joinRoom(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	room, err := h.roomName(req)
	if err != nil {
		return nil, err
	}
	members, err := h.d.Rooms.Join(ctx, c.User(), room)
	if err != nil {
		return nil, err
	}
	recent, err := h.d.Journal.Range(ctx, protocol.RoomConv(room), 0, 0, protocol.RecentLen, true)
	if err != nil {
		return nil, err
	}
	return protocol.JoinReply{Room: room, Members: members, Recent: nonNil(recent)}, nil
}

func (h *Handler) leaveRoom(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	room, err := h.roomName(req)
	if err != nil {
		return nil, err
	}
	members, err := h.d.Rooms.Leave(ctx, c.User(), room)
	if err != nil {
		return nil, err
	}
	return protocol.RoomReply{Room: room, Members: members}, nil
}

func (h *Handler) rooms(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.Empty
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	list, err := h.d.Rooms.List(ctx, c.User())
	if err != nil {
		return nil, err
	}
	if list == nil {
		list = []protocol.RoomInfo{}
	}
	return protocol.RoomsReply{Rooms: list}, nil
}

// rebuild restores messages the client holds and the server lost. Every
// message is checked to belong to the conversation as a message there
// could: right conversation, a participant as sender, a valid text. Events
// come as they were stored, messages in their final state (edited, or
// recalled with no text); an edit must be its message's author's and a
// recall its author's, an operator's or the room owner's (the windows are
// not checked again: the events were accepted when they were made).
func (h *Handler) rebuild(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.RebuildData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	user := c.User()
	rd := readable{h: h, user: user}
	if err := rd.check(ctx, d.Conv); err != nil {
		return nil, err
	}
	if len(d.Messages) == 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "rebuild needs messages")
	}
	if len(d.Messages) > protocol.MaxSyncMessages {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "rebuild of %d messages is over the limit of %d", len(d.Messages), protocol.MaxSyncMessages)
	}
	kind, a, b, _ := protocol.ParseConv(d.Conv)
	tops, err := h.d.Journal.Latest(ctx, []string{d.Conv})
	if err != nil {
		return nil, err
	}
	limit := tops[d.Conv] + protocol.MaxRebuildAhead
	seqs := make(map[int64]bool, len(d.Messages))
	for i, m := range d.Messages {
		bad := func(why string) error {
			return protocol.Errorf(protocol.CodeBadRequest, "message %d (seq %d): %s", i, m.Seq, why)
		}
		switch {
		case m.Conv != d.Conv:
			return nil, bad("conv is not " + d.Conv)
		case m.Seq <= 0:
			return nil, bad("seq must be positive")
		case m.Seq > limit:
			return nil, bad(fmt.Sprintf("seq is more than %d above the server's latest", protocol.MaxRebuildAhead))
		case seqs[m.Seq]:
			return nil, bad("seq given twice")
		case m.ID == "" || len(m.ID) > protocol.MaxIDLen:
			return nil, bad("id must be 1 to 64 bytes")
		case m.TS <= 0:
			return nil, bad("ts must be positive")
		}
		if why := eventShape(kind, m); why != "" {
			return nil, bad(why)
		}
		if kind == "dm" {
			if !(m.From == a && m.To == b || m.From == b && m.To == a) || m.Room != "" {
				return nil, bad("from and to must be the conversation's two users")
			}
		} else if kind == "cs" {
			if m.Room != "" || !(m.From == a || protocol.ValidName(m.From)) || !(m.To == "" || m.To == a || protocol.ValidName(m.To)) {
				return nil, bad("from must be the visitor or an agent, and room empty")
			}
		} else if m.Room != a || m.To != "" || !protocol.ValidName(m.From) {
			return nil, bad("room must be " + a + " and from a valid name")
		}
		seqs[m.Seq] = true
		if h.d.Filter != nil {
			// What comes back goes through the filter like anything sent.
			d.Messages[i].Text = h.d.Filter(m.Text)
		}
	}
	room := ""
	if kind == "room" {
		room = a
	}
	if err := h.checkAuthors(ctx, user, d.Conv, room, d.Messages); err != nil {
		return nil, err
	}
	var members []string
	switch kind {
	case "dm":
		members = []string{a, b}
	case "cs":
		members = []string{a}
	}
	restored, latest, err := h.d.Journal.Restore(ctx, d.Conv, d.Messages, members)
	if err != nil {
		return nil, err
	}
	return protocol.RebuildReply{Conv: d.Conv, Restored: restored, Latest: latest}, nil
}

func (h *Handler) popular(ctx context.Context, c Conn, req protocol.Request) (any, error) {
	var d protocol.PopularData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return nil, err
	}
	switch {
	case d.N == 0:
		d.N = protocol.DefaultPopular
	case d.N < 0 || d.N > protocol.MaxPopular:
		return nil, protocol.Errorf(protocol.CodeBadRequest, "n must be 1 to %d", protocol.MaxPopular)
	}
	words, err := h.d.Words.Top(ctx, d.N)
	if err != nil {
		return nil, err
	}
	if words == nil {
		words = []protocol.WordCount{}
	}
	return protocol.PopularReply{Words: words}, nil
}
