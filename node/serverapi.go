package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"chatcluster/handler"
	"chatcluster/peerlink"
	"chatcluster/protocol"
)

// The server API, node side: the gateway forwards each call of
// /api/server/... to a live node as POST protocol.ServerPath + op on the
// node's peer listener, signed with the cluster secret (peerlink.SignCall),
// and the node runs it through the code paths its clients' requests take:
// a message goes through the handler's chat action (word filter, Journal,
// Router or the leader's rooms), room operations and the online list are
// requests to the leader. The answer is the gateway's: an HTTP status and
// a JSON body, {"error"} on failure, signed back (Acceptor.SignAnswer).

// serverReadWait bounds the reading of a call's body.
const serverReadWait = 10 * time.Second

// defaultKickReason is what a user disconnected without a reason is told.
const defaultKickReason = "disconnected by the server"

// serveServer runs one server API call. HTTP server goroutine of the peer
// listener.
func (s *Server) serveServer(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(serverReadWait))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxServerRequestBody))
	if err != nil {
		http.Error(w, "cannot read the call: "+err.Error(), http.StatusBadRequest)
		return
	}
	call, err := s.peers.VerifyCall(r, body)
	var rf *peerlink.Refusal
	if errors.As(err, &rf) {
		s.log.Warn().Str("from", call.Caller).Str("remote", r.RemoteAddr).Str("op", op).Msg("server API call refused: " + rf.Reason)
		http.Error(w, rf.Reason, rf.Status)
		return
	}
	log := s.log.With().Str("component", "server-api").Str("op", op).Str("caller", call.Caller).Str("key", r.URL.Query().Get("key")).Logger()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	status, out, err := s.runServer(ctx, log, op, body)
	cancel()
	retry := 0
	if err != nil {
		pe := handler.ClientError(err)
		ev := log.Warn()
		if pe.Code >= 500 {
			ev = log.Error().AnErr("cause", err)
		}
		ev.Int("status", pe.Code).Str("error", pe.Msg).Msg("server API call failed")
		if rd, ok := pe.Data.(protocol.RetryData); ok {
			retry = rd.RetryAfter
		}
		status, out = pe.Code, map[string]string{"error": pe.Msg}
	}
	b, err := json.Marshal(out)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if retry > 0 {
		h.Set("Retry-After", strconv.Itoa(retry))
	}
	s.peers.SignAnswer(h, call, status, b)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// runServer runs operation op with the call's body and returns the status
// and data of its answer, or an error for handler.ClientError.
func (s *Server) runServer(ctx context.Context, log zerolog.Logger, op string, body []byte) (int, any, error) {
	switch op {
	case protocol.ServerPublish:
		return s.apiPublish(ctx, log, body)
	case protocol.ServerDisconnect:
		return s.apiDisconnect(ctx, log, body)
	case protocol.ServerOnline:
		return s.apiOnline(ctx, body)
	case protocol.ServerMembers:
		return s.apiMembers(ctx, body)
	case protocol.ServerCreateRoom:
		return s.apiCreateRoom(ctx, log, body)
	case protocol.ServerDeleteRoom:
		return s.apiDeleteRoom(ctx, log, body)
	}
	return 0, nil, protocol.Errorf(protocol.CodeNotFound, "no server API operation %q", op)
}

// decodeCall decodes a call's body into v: one JSON object with known
// fields only.
func decodeCall(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the object")
	}
	if err != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "body must be one JSON object: %v", err)
	}
	return nil
}

// apiConn is the connection a message of the server API is sent on, as
// the handler sees it: logged in as the sender.
type apiConn struct{ user string }

func (c apiConn) ConnID() string     { return "server-api" }
func (c apiConn) User() string       { return c.user }
func (c apiConn) RemoteAddr() string { return "" }

// sender resolves the user a server API message is sent as: an existing
// account, which is no visitor.
func (s *Server) sender(ctx context.Context, name string) (string, error) {
	if !protocol.ValidName(name) || protocol.IsVisitor(name) {
		return "", protocol.Errorf(protocol.CodeBadRequest, "from must be the name of a user: 1 to %d letters, digits, '_', '-' or '.'", protocol.MaxUsernameLen)
	}
	user, err := users{s.accounts}.Resolve(ctx, name)
	if errors.Is(err, handler.ErrUnknownUser) {
		return "", protocol.Errorf(protocol.CodeNotFound, "no user %q: messages are sent as an existing account (register the bot's with POST /api/register first)", name)
	}
	return user, err
}

// apiPublish sends a message as a user: the handler's chat action, as if
// the user had sent it on a connection to this node. A sender that is not
// a member of the room is made one first (the room must exist).
func (s *Server) apiPublish(ctx context.Context, log zerolog.Logger, body []byte) (int, any, error) {
	var d protocol.ServerMessage
	if err := decodeCall(body, &d); err != nil {
		return 0, nil, err
	}
	from, err := s.sender(ctx, d.From)
	if err != nil {
		return 0, nil, err
	}
	// Joining the room first only for a message the chat action may
	// take: one it refuses for its own fields makes nobody a member.
	if d.Room != "" && d.To == "" && protocol.ValidName(d.Room) && d.Text != "" && len(d.Text) <= protocol.MaxTextBytes && len(d.ClientMsgID) <= protocol.MaxIDLen {
		if _, err := (roomsSvc{s}).ask(ctx, protocol.PeerFrame{Op: protocol.RoomEnter, User: from, Room: d.Room}); err != nil {
			return 0, nil, err
		}
	}
	data, _ := json.Marshal(protocol.ChatData{To: d.To, Room: d.Room, Text: d.Text, ClientMsgID: d.ClientMsgID})
	rep := s.handler.Handle(ctx, apiConn{user: from}, protocol.Request{Action: protocol.ActionChat, ID: "server-api", Data: data})
	if rep.Code != protocol.CodeOK {
		pe := &protocol.Error{Code: rep.Code, Msg: rep.Error, Data: rep.Data}
		if rep.Cause != nil {
			return 0, nil, fmt.Errorf("%w (%v)", pe, rep.Cause)
		}
		return 0, nil, pe
	}
	ev := log.Info().Str("from", from)
	if cr, ok := rep.Data.(protocol.ChatReply); ok {
		ev = ev.Str("conv", cr.Conv).Int64("seq", cr.Seq)
	}
	ev.Msg("message published")
	return http.StatusOK, rep.Data, nil
}

// reason checks the reason of a disconnect or a room deletion.
func reason(r string) error {
	if len(r) > protocol.MaxReasonLen || !utf8.ValidString(r) {
		return protocol.Errorf(protocol.CodeBadRequest, "reason must be UTF-8 of at most %d bytes", protocol.MaxReasonLen)
	}
	return nil
}

// apiDisconnect closes every connection of a user (or a visitor), on
// every node, with a kicked push that gives the reason. The user may log
// in again.
func (s *Server) apiDisconnect(ctx context.Context, log zerolog.Logger, body []byte) (int, any, error) {
	var d protocol.ServerDisconnectData
	if err := decodeCall(body, &d); err != nil {
		return 0, nil, err
	}
	if !protocol.ValidName(d.Username) && !protocol.ValidVisitor(d.Username) {
		return 0, nil, protocol.Errorf(protocol.CodeBadRequest, "invalid username (a user's name, or a visitor's id)")
	}
	if err := reason(d.Reason); err != nil {
		return 0, nil, err
	}
	if d.Reason == "" {
		d.Reason = defaultKickReason
	}
	user := d.Username
	if !protocol.IsVisitor(user) {
		var err error
		user, err = (users{s.accounts}).Resolve(ctx, d.Username)
		if errors.Is(err, handler.ErrUnknownUser) {
			return 0, nil, protocol.Errorf(protocol.CodeNotFound, "unknown user %q", d.Username)
		} else if err != nil {
			return 0, nil, err
		}
	}
	p, err := (sessionsSvc{s}).Lookup(ctx, user)
	if err != nil {
		return 0, nil, err
	}
	// Every node is told, not only the one the session names: a
	// connection the session store does not know of (its record was lost,
	// or is being replaced) goes too.
	s.kickLocal(user, "", d.Reason)
	for id := range *s.members.Load() {
		if id == s.cfg.ID {
			continue
		}
		f := protocol.PeerFrame{Type: protocol.PeerKick, Dest: id, Users: []string{user}, Server: &protocol.ServerPeer{Reason: d.Reason}}
		if !s.routes.toLeader(&f) {
			return 0, nil, handler.ErrBusy
		}
	}
	log.Info().Str("user", user).Bool("online", p.Online).Str("reason", d.Reason).Msg("user disconnected")
	return http.StatusOK, protocol.ServerDisconnectReply{Username: user, Online: p.Online}, nil
}

// apiOnline answers a page of the users online, as the leader knows them.
func (s *Server) apiOnline(ctx context.Context, body []byte) (int, any, error) {
	var d protocol.ServerOnlineData
	if err := decodeCall(body, &d); err != nil {
		return 0, nil, err
	}
	switch {
	case d.Limit == 0:
		d.Limit = protocol.DefaultOnlinePage
	case d.Limit < 0 || d.Limit > protocol.MaxOnlinePage:
		return 0, nil, protocol.Errorf(protocol.CodeBadRequest, "limit must be 1 to %d", protocol.MaxOnlinePage)
	}
	if len(d.After) > 4*protocol.MaxUsernameLen {
		return 0, nil, protocol.Errorf(protocol.CodeBadRequest, "after is too long for a username")
	}
	rep, err := (roomsSvc{s}).ask(ctx, protocol.PeerFrame{Op: protocol.RoomOnline, Server: &protocol.ServerPeer{After: d.After, Limit: d.Limit}})
	if err != nil {
		return 0, nil, err
	}
	out := protocol.ServerOnlineReply{Users: []protocol.OnlineUser{}}
	if rep.Server != nil {
		if rep.Server.Present != nil {
			out.Users = rep.Server.Present
		}
		if rep.Server.More && len(out.Users) > 0 {
			out.Next = out.Users[len(out.Users)-1].Username
		}
	}
	return http.StatusOK, out, nil
}

// roomCall decodes and checks the body of a room operation.
func roomCall(body []byte) (protocol.ServerRoomData, error) {
	var d protocol.ServerRoomData
	if err := decodeCall(body, &d); err != nil {
		return d, err
	}
	if !protocol.ValidName(d.Room) {
		return d, protocol.Errorf(protocol.CodeBadRequest, "invalid room name")
	}
	return d, reason(d.Reason)
}

// apiMembers answers a room's members and which of them are online.
func (s *Server) apiMembers(ctx context.Context, body []byte) (int, any, error) {
	d, err := roomCall(body)
	if err != nil {
		return 0, nil, err
	}
	rep, err := (roomsSvc{s}).ask(ctx, protocol.PeerFrame{Op: protocol.RoomMembers, Room: d.Room})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, protocol.ServerMembersReply{Room: d.Room, Members: nonNilStrings(rep.Members), Online: nonNilStrings(rep.Users)}, nil
}

// apiCreateRoom creates a room with members, which must be users.
func (s *Server) apiCreateRoom(ctx context.Context, log zerolog.Logger, body []byte) (int, any, error) {
	d, err := roomCall(body)
	if err != nil {
		return 0, nil, err
	}
	if len(d.Members) > protocol.MaxCreateMembers {
		return 0, nil, protocol.Errorf(protocol.CodeBadRequest, "a room is created with at most %d members; more can join it", protocol.MaxCreateMembers)
	}
	members := make([]string, 0, len(d.Members))
	for _, m := range d.Members {
		if !protocol.ValidName(m) || protocol.IsVisitor(m) {
			return 0, nil, protocol.Errorf(protocol.CodeBadRequest, "invalid username %q in members", m)
		}
		u, err := (users{s.accounts}).Resolve(ctx, m)
		if errors.Is(err, handler.ErrUnknownUser) {
			return 0, nil, protocol.Errorf(protocol.CodeNotFound, "unknown user %q in members", m)
		} else if err != nil {
			return 0, nil, err
		}
		members = append(members, u)
	}
	rep, err := (roomsSvc{s}).ask(ctx, protocol.PeerFrame{Op: protocol.RoomCreate, Room: d.Room, Members: members})
	if err != nil {
		return 0, nil, err
	}
	log.Info().Str("room", d.Room).Int("members", len(rep.Members)).Msg("room created")
	return http.StatusCreated, protocol.RoomReply{Room: d.Room, Members: nonNilStrings(rep.Members)}, nil
}

// apiDeleteRoom deletes a room for good; it answers the members it had.
func (s *Server) apiDeleteRoom(ctx context.Context, log zerolog.Logger, body []byte) (int, any, error) {
	d, err := roomCall(body)
	if err != nil {
		return 0, nil, err
	}
	if len(d.Members) > 0 {
		return 0, nil, protocol.Errorf(protocol.CodeBadRequest, "members are for creating a room, not deleting one")
	}
	rep, err := (roomsSvc{s}).ask(ctx, protocol.PeerFrame{Op: protocol.RoomDelete, Room: d.Room, Server: &protocol.ServerPeer{Reason: d.Reason}})
	if err != nil {
		return 0, nil, err
	}
	log.Info().Str("room", d.Room).Int("members", len(rep.Members)).Str("reason", d.Reason).Msg("room deleted")
	return http.StatusOK, protocol.RoomReply{Room: d.Room, Members: nonNilStrings(rep.Members)}, nil
}
