// Package chatclient is a Go client of the chat service: it asks a
// gateway for nodes and a token, holds a WebSocket to a node, matches
// replies to requests by id, and hands server pushes to the caller in the
// order they arrived. Tests, the terminal client and the load tool use it.
package chatclient

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/protocol"
)

// ErrClosed is returned for requests on a closed connection.
var ErrClosed = errors.New("chatclient: connection closed")

// ReplyError is a reply with a non-zero code.
type ReplyError struct {
	Code int
	Msg  string
}

func (e *ReplyError) Error() string { return fmt.Sprintf("code %d: %s", e.Code, e.Msg) }

// Code returns the reply code of err, 0 if err is nil and -1 if it is not
// a reply error.
func Code(err error) int {
	var re *ReplyError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &re):
		return re.Code
	}
	return -1
}

// Push is a server-initiated frame.
type Push struct {
	Action string
	Data   json.RawMessage
}

type reply struct {
	Code  int             `json:"code"`
	Data  json.RawMessage `json:"data"`
	Error string          `json:"error"`
	ID    string          `json:"id"`
}

// Conn is one WebSocket connection to a node. Its methods are safe for
// concurrent use.
type Conn struct {
	ws     *websocket.Conn
	wmu    sync.Mutex // serialises writes
	nextID atomic.Uint64

	mu      sync.Mutex
	waiting map[string]chan reply // guarded by mu
	err     error                 // why the read loop ended; guarded by mu

	pushes chan Push
	done   chan struct{}
}

// Dial opens a connection to a node's WebSocket URL. Pushes are buffered
// up to pushBuffer; beyond that the read loop waits for the caller.
func Dial(ctx context.Context, url string, pushBuffer int) (*Conn, error) {
	return DialTLS(ctx, url, pushBuffer, nil)
}

// DialTLS is Dial with the TLS configuration of wss:// URLs (for a CA of
// one's own); nil verifies the node's certificate against the system's.
func DialTLS(ctx context.Context, url string, pushBuffer int, tlsConf *tls.Config) (*Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: tlsConf}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	c := &Conn{ws: ws, waiting: map[string]chan reply{}, pushes: make(chan Push, pushBuffer), done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

// Pushes delivers server pushes in arrival order; it is closed when the
// connection ends.
func (c *Conn) Pushes() <-chan Push { return c.pushes }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	err := c.ws.Close()
	<-c.done
	return err
}

func (c *Conn) readLoop() {
	defer close(c.done)
	defer close(c.pushes)
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			for id, ch := range c.waiting {
				close(ch)
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			return
		}
		var f struct {
			Action string          `json:"action"`
			ID     *string         `json:"id"`
			Code   *int            `json:"code"`
			Data   json.RawMessage `json:"data"`
			Error  string          `json:"error"`
		}
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		if f.Code == nil { // a push
			c.pushes <- Push{Action: f.Action, Data: f.Data}
			continue
		}
		id := ""
		if f.ID != nil {
			id = *f.ID
		}
		c.mu.Lock()
		ch, ok := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ok {
			ch <- reply{Code: *f.Code, Data: f.Data, Error: f.Error, ID: id}
		}
	}
}

// WriteRaw sends a raw frame, for tests of malformed input.
func (c *Conn) WriteRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// RawRequest sends a raw frame and waits for the reply carrying id (""
// for frames whose id the server cannot read). For tests of bad input.
func (c *Conn) RawRequest(ctx context.Context, id string, frame []byte) (json.RawMessage, error) {
	ch := c.expect(id)
	if err := c.WriteRaw(frame); err != nil {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return c.wait(ctx, id, ch)
}

func (c *Conn) expect(id string) chan reply {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err == nil {
		c.waiting[id] = ch
	} else {
		close(ch)
	}
	c.mu.Unlock()
	return ch
}

func (c *Conn) wait(ctx context.Context, id string, ch chan reply) (json.RawMessage, error) {
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: %v", ErrClosed, c.Err())
		}
		if r.Code != 0 {
			return nil, &ReplyError{Code: r.Code, Msg: r.Error}
		}
		return r.Data, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// Do sends action with data and decodes the reply's data into out (which
// may be nil).
func (c *Conn) Do(ctx context.Context, action string, data, out any) error {
	id := strconv.FormatUint(c.nextID.Add(1), 10)
	b, err := json.Marshal(map[string]any{"action": action, "id": id, "data": data})
	if err != nil {
		return err
	}
	ch := c.expect(id)
	if err := c.WriteRaw(b); err != nil {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	raw, err := c.wait(ctx, id, ch)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// Login logs in with a password.
func (c *Conn) Login(ctx context.Context, user, password string) (protocol.LoginReply, error) {
	var r protocol.LoginReply
	err := c.Do(ctx, protocol.ActionLogin, protocol.LoginData{Username: user, Password: password}, &r)
	return r, err
}

// LoginToken logs in with a gateway token.
func (c *Conn) LoginToken(ctx context.Context, token string) (protocol.LoginReply, error) {
	var r protocol.LoginReply
	err := c.Do(ctx, protocol.ActionLogin, map[string]string{"token": token}, &r)
	return r, err
}

// Chat sends text to a user.
func (c *Conn) Chat(ctx context.Context, to, text, clientMsgID string) (protocol.ChatReply, error) {
	var r protocol.ChatReply
	err := c.Do(ctx, protocol.ActionChat, protocol.ChatData{To: to, Text: text, ClientMsgID: clientMsgID}, &r)
	return r, err
}

// Keepalive pings the node every interval until stop is closed or the
// connection ends, and closes the connection when a ping gets no reply
// within timeout, so that a node that stopped answering is noticed.
func (c *Conn) Keepalive(stop <-chan struct{}, every, timeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := c.Do(ctx, protocol.ActionPing, protocol.Empty{}, nil)
		cancel()
		if err != nil && Code(err) <= 0 {
			_ = c.Close()
			return
		}
	}
}

// ChatRoom sends text to a room the user is a member of.
func (c *Conn) ChatRoom(ctx context.Context, room, text, clientMsgID string) (protocol.ChatReply, error) {
	var r protocol.ChatReply
	err := c.Do(ctx, protocol.ActionChat, protocol.ChatData{Room: room, Text: text, ClientMsgID: clientMsgID}, &r)
	return r, err
}

// Edit changes the text of one's own message seq of conv; the reply
// names the edit event.
func (c *Conn) Edit(ctx context.Context, conv string, seq int64, text string) (protocol.ChatReply, error) {
	var r protocol.ChatReply
	err := c.Do(ctx, protocol.ActionEdit, protocol.EditData{Conv: conv, Seq: seq, Text: text}, &r)
	return r, err
}

// Recall recalls message seq of conv; the reply names the recall event.
func (c *Conn) Recall(ctx context.Context, conv string, seq int64) (protocol.ChatReply, error) {
	var r protocol.ChatReply
	err := c.Do(ctx, protocol.ActionRecall, protocol.RecallData{Conv: conv, Seq: seq}, &r)
	return r, err
}

// JoinRoom joins (and if need be creates) a room; the reply holds its
// members and recent messages.
func (c *Conn) JoinRoom(ctx context.Context, room string) (protocol.RoomReply, error) {
	var r protocol.RoomReply
	err := c.Do(ctx, protocol.ActionJoin, protocol.RoomData{Room: room}, &r)
	return r, err
}

// LeaveRoom leaves a room.
func (c *Conn) LeaveRoom(ctx context.Context, room string) (protocol.RoomReply, error) {
	var r protocol.RoomReply
	err := c.Do(ctx, protocol.ActionLeave, protocol.RoomData{Room: room}, &r)
	return r, err
}

// Rooms lists every room.
func (c *Conn) Rooms(ctx context.Context) ([]protocol.RoomInfo, error) {
	var r protocol.RoomsReply
	err := c.Do(ctx, protocol.ActionRooms, protocol.Empty{}, &r)
	return r.Rooms, err
}

// Rebuild uploads messages of conv the client holds and the server lost.
//
// msgs go in ascending seq order, in as many requests as the frame limit
// needs (a frame over protocol.MaxFrameSize would close the connection):
// the reply sums what was restored and gives the last latest.
func (c *Conn) Rebuild(ctx context.Context, conv string, msgs []protocol.Message) (protocol.RebuildReply, error) {
	sorted := slices.Clone(msgs)
	slices.SortFunc(sorted, func(a, b protocol.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	out := protocol.RebuildReply{Conv: conv}
	for len(sorted) > 0 {
		n, size := 0, 0
		for n < len(sorted) && n < rebuildBatch {
			b, err := json.Marshal(sorted[n])
			if err != nil {
				return out, err
			}
			if n > 0 && size+len(b)+1 > rebuildBytes {
				break
			}
			size += len(b) + 1
			n++
		}
		var r protocol.RebuildReply
		if err := c.Do(ctx, protocol.ActionRebuild, protocol.RebuildData{Conv: conv, Messages: sorted[:n]}, &r); err != nil {
			return out, err
		}
		out.Restored += r.Restored
		out.Latest = r.Latest
		sorted = sorted[n:]
	}
	return out, nil
}

// One rebuild request holds at most rebuildBatch messages (the server's
// limit) of rebuildBytes of JSON in all, which leaves room in the frame
// for the envelope and the conversation id.
const (
	rebuildBatch = 1000
	rebuildBytes = protocol.MaxFrameSize - 1024
)

// Popular returns the n most used words (n 0: the server's default).
func (c *Conn) Popular(ctx context.Context, n int) ([]protocol.WordCount, error) {
	var r protocol.PopularReply
	err := c.Do(ctx, protocol.ActionPopular, protocol.PopularData{N: n}, &r)
	return r.Words, err
}

// History returns a page of a conversation.
func (c *Conn) History(ctx context.Context, q protocol.HistoryData) ([]protocol.Message, error) {
	var r protocol.Messages
	err := c.Do(ctx, protocol.ActionHistory, q, &r)
	return r.Messages, err
}

// Sync asks for what is missing after the given offsets (nil: everything).
func (c *Conn) Sync(ctx context.Context, offsets map[string]int64) (protocol.SyncReply, error) {
	var r protocol.SyncReply
	if offsets == nil {
		offsets = map[string]int64{}
	}
	err := c.Do(ctx, protocol.ActionSync, protocol.SyncData{Convs: offsets}, &r)
	return r, err
}

// SyncAll syncs the given conversations (nil: all of the user's) from their
// offsets, calling again while the server says there is more, and returns
// every missing message per conversation, oldest first, with the latest seq
// and the read positions.
// A conversation marked "more" without messages was not read this time and
// is asked for again from the same offset.
func (c *Conn) SyncAll(ctx context.Context, offsets map[string]int64) (map[string]protocol.SyncConv, error) {
	out := map[string]protocol.SyncConv{}
	next := offsets
	for {
		r, err := c.Sync(ctx, next)
		if err != nil {
			return nil, err
		}
		sent := next
		next = map[string]int64{}
		for conv, sc := range r.Convs {
			acc := out[conv]
			acc.Latest, acc.Rebuild, acc.Floor, acc.Settling = sc.Latest, sc.Rebuild, sc.Floor, sc.Settling
			acc.Read, acc.PeerRead = max(acc.Read, sc.Read), max(acc.PeerRead, sc.PeerRead)
			acc.Messages = append(acc.Messages, sc.Messages...)
			out[conv] = acc
			switch {
			case sc.More && len(sc.Messages) > 0:
				next[conv] = sc.Messages[len(sc.Messages)-1].Seq
			case sc.More:
				// Not read this time (the server ran out of time): again
				// from the same offset.
				next[conv] = sent[conv]
			}
		}
		if len(next) == 0 {
			return out, nil
		}
	}
}

// Gateway is an HTTP client of the gateway API.
type Gateway struct {
	URL  string // e.g. http://127.0.0.1:8080
	HTTP *http.Client
}

// NodeInfo is a node as the gateway lists it.
type NodeInfo struct {
	ID          string `json:"id"`
	WS          string `json:"ws"`
	Connections int    `json:"connections"`
}

// Nodes is the reply of GET /api/nodes.
type Nodes struct {
	Leader string     `json:"leader"`
	Nodes  []NodeInfo `json:"nodes"`
}

// HTTPError is a gateway reply with an error status.
type HTTPError struct {
	Status int
	Msg    string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("gateway: %d: %s", e.Status, e.Msg) }

func (g *Gateway) client() *http.Client {
	if g.HTTP != nil {
		return g.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (g *Gateway) call(ctx context.Context, method, path string, body, out any) error {
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.URL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return &HTTPError{Status: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Nodes lists the live nodes, best first.
func (g *Gateway) Nodes(ctx context.Context) (Nodes, error) {
	var n Nodes
	err := g.call(ctx, http.MethodGet, "/api/nodes", nil, &n)
	return n, err
}

// Register creates a user.
func (g *Gateway) Register(ctx context.Context, user, password string) error {
	return g.call(ctx, http.MethodPost, "/api/register", map[string]string{"username": user, "password": password}, nil)
}

// Login returns a session token and the nodes.
func (g *Gateway) Login(ctx context.Context, user, password string) (token string, nodes []NodeInfo, err error) {
	var r struct {
		Token string     `json:"token"`
		Nodes []NodeInfo `json:"nodes"`
	}
	err = g.call(ctx, http.MethodPost, "/api/login", map[string]string{"username": user, "password": password}, &r)
	return r.Token, r.Nodes, err
}

// Visitor creates a customer-service visitor (name and channel may be
// empty) and returns its id and token, for LoginToken.
func (g *Gateway) Visitor(ctx context.Context, name, channel string) (protocol.VisitorReply, error) {
	var r protocol.VisitorReply
	err := g.call(ctx, http.MethodPost, "/api/visitor", protocol.VisitorRequest{Name: name, Channel: channel}, &r)
	return r, err
}

// Support opens the visitor's support conversation, or resumes the open
// one.
func (c *Conn) Support(ctx context.Context) (protocol.SupportConv, error) {
	var r protocol.SupportConv
	err := c.Do(ctx, protocol.ActionSupport, protocol.Empty{}, &r)
	return r, err
}

// SupportResume resumes the visitor's conversation conv: the open one, or
// conv as closed when none is open (it opens none).
func (c *Conn) SupportResume(ctx context.Context, conv string) (protocol.SupportConv, error) {
	var r protocol.SupportConv
	err := c.Do(ctx, protocol.ActionSupport, protocol.SupportData{Conv: conv}, &r)
	return r, err
}

// ChatConv sends text to a support conversation.
func (c *Conn) ChatConv(ctx context.Context, conv, text, clientMsgID string) (protocol.ChatReply, error) {
	var r protocol.ChatReply
	err := c.Do(ctx, protocol.ActionChat, protocol.ChatData{Conv: conv, Text: text, ClientMsgID: clientMsgID}, &r)
	return r, err
}

// AgentStatus sets the agent available or away ("" changes nothing).
func (c *Conn) AgentStatus(ctx context.Context, status string) (protocol.AgentState, error) {
	var r protocol.AgentState
	err := c.Do(ctx, protocol.ActionAgentStatus, protocol.AgentStatusData{Status: status}, &r)
	return r, err
}

// SupportConvs lists the conversations the agent holds.
func (c *Conn) SupportConvs(ctx context.Context) (protocol.SupportConvsReply, error) {
	var r protocol.SupportConvsReply
	err := c.Do(ctx, protocol.ActionSupportConvs, protocol.Empty{}, &r)
	return r, err
}

// SupportClose closes a support conversation.
func (c *Conn) SupportClose(ctx context.Context, conv string) (protocol.SupportConv, error) {
	var r protocol.SupportConv
	err := c.Do(ctx, protocol.ActionSupportClose, protocol.ConvData{Conv: conv}, &r)
	return r, err
}

// SupportTransfer hands a support conversation to another agent.
func (c *Conn) SupportTransfer(ctx context.Context, conv, to string) (protocol.SupportConv, error) {
	var r protocol.SupportConv
	err := c.Do(ctx, protocol.ActionSupportTransfer, protocol.TransferData{Conv: conv, To: to}, &r)
	return r, err
}

// SupportHistory reads a page of a visitor's messages over all their
// conversations.
func (c *Conn) SupportHistory(ctx context.Context, q protocol.SupportHistoryData) (protocol.SupportHistoryReply, error) {
	var r protocol.SupportHistoryReply
	err := c.Do(ctx, protocol.ActionSupportHistory, q, &r)
	return r, err
}
