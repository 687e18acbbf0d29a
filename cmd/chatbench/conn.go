package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	ws   *websocket.Conn
	wmu  sync.Mutex // serialises writes
	wbuf []byte     // chat frames are built here; guarded by wmu
	wdl  time.Time  // the write deadline last set; guarded by wmu

	lastConv string // the conversation of the last chat reply; read loop only

	// Chatter (typing and read frames beside the messages of a dm run):
	// the highest seq of the client's own chat replies, which its read
	// frames report, and the chatter replies that were refused.
	lastSeq        atomic.Int64
	chatterRefused atomic.Int64

	mu      sync.Mutex
	waiting map[string]chan frame // guarded by mu
	nextID  int                   // guarded by mu
	err     error                 // why the read loop ended; guarded by mu

	trk func() *tracker // the tracker of the scenario running now (may return nil)
	// onPush, when set at dial, gets every push instead of the tracker
	// (the support scenario's connections). Read loop only.
	onPush pushFunc
	done   chan struct{} // closed when the read loop ended
}

// pushFunc sees one push: its action and raw data, which are valid only
// until it returns, and when it arrived. It is called from the
// connection's read loop, so it must not wait for the connection's own
// replies.
type pushFunc func(action, data []byte, at time.Time)

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
	return d.dialPush(ctx, idx, url, trk, nil)
}

// dialPush opens connection idx to url whose pushes go to onPush (nil:
// message pushes go to the tracker).
func (d *dialer) dialPush(ctx context.Context, idx int, url string, trk func() *tracker, onPush pushFunc) (*client, error) {
	nd := &net.Dialer{Timeout: 5 * time.Second}
	if ip := d.source(idx); ip != nil && isLoopbackURL(url) {
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	wd := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: nd.DialContext, ReadBufferSize: 4096, WriteBufferSize: 4096}
	ws, _, err := wd.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	if trk == nil {
		trk = func() *tracker { return nil }
	}
	c := &client{idx: idx, ws: ws, node: url, waiting: map[string]chan frame{}, trk: trk, onPush: onPush, done: make(chan struct{})}
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
	buf := make([]byte, 0, 2048) // reused for every frame: read loop only
	for {
		var err error
		buf, err = c.readFrame(buf[:0])
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
		c.onFrame(buf, time.Now())
		if cap(buf) > maxKeptReadBuf {
			buf = make([]byte, 0, 2048) // a large sync reply: do not keep its room
		}
	}
}

// maxKeptReadBuf bounds the read buffer a connection keeps between frames.
const maxKeptReadBuf = 64 << 10

// readFrame reads the next data frame into buf (grown as needed) without
// allocating one slice per frame, as ReadMessage does. Read loop only.
func (c *client) readFrame(buf []byte) ([]byte, error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// onFrame handles one frame from the server: message pushes and chat
// replies go to the tracker, read in place (frame.go); replies to other
// requests go to the request waiting for them. Read loop only: b is
// reused after it returns.
func (c *client) onFrame(b []byte, now time.Time) {
	var f frameFields
	if !scanFrame(b, &f) {
		return
	}
	if !f.hasCode { // a push
		if c.onPush != nil {
			c.onPush(f.action, f.data, now)
			return
		}
		if string(f.action) == protocol.PushMessage {
			c.onMessage(f.data, now)
		}
		return
	}
	if len(f.id) == len(chatterID) && string(f.id) == chatterID {
		if f.code != 0 {
			c.chatterRefused.Add(1)
		}
		return
	}
	if len(f.id) > len(chatIDPrefix) && string(f.id[:len(chatIDPrefix)]) == chatIDPrefix && string(f.action) == protocol.ActionChat {
		key, ok := parseDigits(f.id[len(chatIDPrefix):])
		if !ok {
			return
		}
		if t := c.trk(); t != nil {
			var conv string
			var seq int64
			if f.code == 0 {
				// The seq only narrows a later sync.
				if cv, s, ok := chatReplyData(f.data); ok {
					conv, seq = c.intern(cv), s
					if s > c.lastSeq.Load() {
						c.lastSeq.Store(s)
					}
				}
			}
			t.reply(c.idx, key, f.code, now, conv, seq)
		}
		return
	}
	// Any other reply: rare, so decoded in full.
	var fr frame
	if json.Unmarshal(b, &fr) != nil || fr.Code == nil {
		return
	}
	id := ""
	if fr.ID != nil {
		id = *fr.ID
	}
	c.mu.Lock()
	ch, ok := c.waiting[id]
	delete(c.waiting, id)
	c.mu.Unlock()
	if ok {
		ch <- fr
	}
}

// intern returns b as a string, the same string as last time when it is
// the same conversation (a client's replies nearly always are). Read loop
// only.
func (c *client) intern(b []byte) string {
	if string(b) != c.lastConv {
		c.lastConv = string(b)
	}
	return c.lastConv
}

func (c *client) onMessage(data []byte, now time.Time) {
	t := c.trk()
	if t == nil {
		return
	}
	text, ok := messageText(data)
	if !ok {
		return
	}
	if k, ok := t.parseTextBytes(text); ok {
		t.deliver(c.idx, k, now)
	}
}

// write sends one text frame. c.wmu must be held.
func (c *client) writeLocked(b []byte) error {
	// Setting a deadline costs a timer update; once a second is enough
	// for a bound of writeTimeout.
	if now := time.Now(); now.After(c.wdl.Add(-writeTimeout + time.Second)) {
		c.wdl = now.Add(writeTimeout)
		_ = c.ws.SetWriteDeadline(c.wdl)
	}
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
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

// chat sends message k of trk, due at due, without waiting for the reply;
// the read loop hands the reply to the tracker. to or room names the
// recipient. The frame is built in the connection's write buffer, so a
// send allocates nothing of its own.
func (c *client) chat(trk *tracker, k uint64, to, room string, due time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendChatFrame(c.wbuf[:0], trk, k, to, room, due.UnixNano())
	return c.writeLocked(c.wbuf)
}

// chatterID is the request id of every chatter frame: its replies are
// only counted (refused ones), never waited for.
const chatterID = "x"

// typing sends a typing frame for conv, without waiting for the reply.
func (c *client) typing(conv string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(c.wbuf[:0], `{"action":"typing","id":"x","data":{"conv":`...)
	c.wbuf = strconv.AppendQuote(c.wbuf, conv)
	c.wbuf = append(c.wbuf, "}}"...)
	return c.writeLocked(c.wbuf)
}

// read sends a read frame for conv up to seq, without waiting for the
// reply.
func (c *client) read(conv string, seq int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(c.wbuf[:0], `{"action":"read","id":"x","data":{"conv":`...)
	c.wbuf = strconv.AppendQuote(c.wbuf, conv)
	c.wbuf = append(c.wbuf, `,"seq":`...)
	c.wbuf = strconv.AppendInt(c.wbuf, seq, 10)
	c.wbuf = append(c.wbuf, "}}"...)
	return c.writeLocked(c.wbuf)
}

// closed is closed when the connection's read loop has ended.
func (c *client) closed() <-chan struct{} { return c.done }

// isClosed reports whether the connection's read loop has ended.
func (c *client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// abort drops a connection that stopped answering, without a goodbye: its
// read loop ends and waiting requests fail.
func (c *client) abort() { _ = c.ws.Close() }

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
