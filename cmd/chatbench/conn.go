package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/protocol"
)

const writeTimeout = 10 * time.Second

// Request ids: chat requests carry "m<key>" (the tracker's key), other
// requests "r<n>".
const chatIDPrefix = "m"

// client is one benchmark connection. Chat replies and message pushes go
// straight to the tracker from the read loop; other requests wait for
// their reply with do. Safe for concurrent use.
type client struct {
	idx  int    // index in the run: shard hint, source address
	user string // the user it logs in as
	node string // the node's id or URL it is connected to

	ws  *websocket.Conn
	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	waiting map[string]chan frame // guarded by mu
	nextID  int                   // guarded by mu
	err     error                 // why the read loop ended; guarded by mu

	trk  func() *tracker // the tracker of the scenario running now (may return nil)
	done chan struct{}   // closed when the read loop ended
}

type frame struct {
	Action string          `json:"action"`
	ID     *string         `json:"id"`
	Code   *int            `json:"code"`
	Data   json.RawMessage `json:"data"`
	Error  string          `json:"error"`
}

// dialer dials from one of several loopback source addresses, so that no
// (source, destination) pair runs out of ephemeral ports.
type dialer struct {
	sources []net.IP // empty: let the kernel choose
}

// newDialer returns a dialer over 127.0.0.1 .. 127.0.0.n (n ≤ 0: no
// source address is chosen).
func newDialer(n int) *dialer {
	d := &dialer{}
	for i := 1; i <= n && i < 255; i++ {
		d.sources = append(d.sources, net.IPv4(127, 0, 0, byte(i)))
	}
	return d
}

// source is the source address of connection idx, or nil.
func (d *dialer) source(idx int) net.IP {
	if len(d.sources) == 0 {
		return nil
	}
	return d.sources[idx%len(d.sources)]
}

// dial opens connection idx to url.
func (d *dialer) dial(ctx context.Context, idx int, url string, trk func() *tracker) (*client, error) {
	nd := &net.Dialer{Timeout: 5 * time.Second}
	if ip := d.source(idx); ip != nil && isLoopbackURL(url) {
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	wd := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: nd.DialContext, ReadBufferSize: 4096, WriteBufferSize: 4096}
	ws, _, err := wd.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	c := &client{idx: idx, ws: ws, node: url, waiting: map[string]chan frame{}, trk: trk, done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

// isLoopbackURL reports whether a ws:// URL names a 127.x address (a
// loopback source address cannot reach anything else).
func isLoopbackURL(url string) bool {
	rest := strings.TrimPrefix(strings.TrimPrefix(url, "ws://"), "wss://")
	return strings.HasPrefix(rest, "127.") || strings.HasPrefix(rest, "localhost")
}

func (c *client) readLoop() {
	defer close(c.done)
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
		now := time.Now()
		var f frame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		if f.Code == nil { // a push
			if f.Action == protocol.PushMessage {
				c.onMessage(f.Data, now)
			}
			continue
		}
		id := ""
		if f.ID != nil {
			id = *f.ID
		}
		if k, ok := strings.CutPrefix(id, chatIDPrefix); ok && f.Action == protocol.ActionChat {
			if key, err := strconv.ParseUint(k, 10, 64); err == nil {
				if t := c.trk(); t != nil {
					var r protocol.ChatReply
					if *f.Code == 0 {
						_ = json.Unmarshal(f.Data, &r) // the seq only narrows a later sync
					}
					t.reply(c.idx, key, *f.Code, now, r.Conv, r.Seq)
				}
			}
			continue
		}
		c.mu.Lock()
		ch, ok := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ok {
			ch <- f
		}
	}
}

func (c *client) onMessage(data json.RawMessage, now time.Time) {
	t := c.trk()
	if t == nil {
		return
	}
	var m struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(data, &m) != nil {
		return
	}
	if k, ok := t.parseText(m.Text); ok {
		t.deliver(c.idx, k, now)
	}
}

func (c *client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// replyError is a reply with a non-zero code.
type replyError struct {
	Code int
	Msg  string
}

func (e *replyError) Error() string { return fmt.Sprintf("code %d: %s", e.Code, e.Msg) }

var errConnClosed = errors.New("chatbench: connection closed")

// do sends a request and waits for its reply, decoding its data into out
// (may be nil).
func (c *client) do(ctx context.Context, action string, data, out any) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("%w: %v", errConnClosed, err)
	}
	c.nextID++
	id := "r" + strconv.Itoa(c.nextID)
	ch := make(chan frame, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	b, err := json.Marshal(map[string]any{"action": action, "id": id, "data": data})
	if err != nil {
		return err
	}
	if err := c.write(b); err != nil {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return fmt.Errorf("%w: %v", errConnClosed, err)
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return fmt.Errorf("%w: %v", errConnClosed, c.readErr())
		}
		if *f.Code != 0 {
			return &replyError{Code: *f.Code, Msg: f.Error}
		}
		if out != nil {
			return json.Unmarshal(f.Data, out)
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return ctx.Err()
	}
}

func (c *client) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// login logs in with a token (cluster) or a name and password (baseline).
func (c *client) login(ctx context.Context, user, password, token string) error {
	d := protocol.LoginData{Username: user, Password: password}
	if token != "" {
		d = protocol.LoginData{Token: token}
	}
	var r protocol.LoginReply
	if err := c.do(ctx, protocol.ActionLogin, d, &r); err != nil {
		return fmt.Errorf("login of %s: %w", user, err)
	}
	c.user = user
	if r.Node != "" {
		c.node = r.Node
	}
	return nil
}

// chat sends message k without waiting for the reply; the read loop hands
// the reply to the tracker. to or room names the recipient; clientMsgID
// must be unique across runs (tracker.clientMsgID).
func (c *client) chat(k uint64, clientMsgID, to, room, text string) error {
	id := chatIDPrefix + strconv.FormatUint(k, 10)
	b, err := json.Marshal(protocol.Request{Action: protocol.ActionChat, ID: id,
		Data: mustJSON(protocol.ChatData{To: to, Room: room, Text: text, ClientMsgID: clientMsgID})})
	if err != nil {
		return err
	}
	return c.write(b)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// closed is closed when the connection's read loop has ended.
func (c *client) closed() <-chan struct{} { return c.done }

// sync asks for the messages after offsets, per conversation.
func (c *client) sync(ctx context.Context, offsets map[string]int64) (protocol.SyncReply, error) {
	var r protocol.SyncReply
	err := c.do(ctx, protocol.ActionSync, protocol.SyncData{Convs: offsets}, &r)
	return r, err
}

// close closes the connection and waits for the read loop.
func (c *client) close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
	<-c.done
}

// closeAll closes clients in parallel (bounded).
func closeAll(cs []*client) {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range cs {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.close()
		}()
	}
	wg.Wait()
}
