package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"chatcluster/handler"
	"chatcluster/internal/wsconn"
	"chatcluster/protocol"
)

// client is one WebSocket connection. A read loop (which also runs the
// handler, one request at a time; see readLoop) runs as long as the
// connection; a write loop runs only while there is something to write
// (see writeLoop), so an idle connection costs one goroutine.
type client struct {
	srv    *Server
	ws     *websocket.Conn
	out    *wsconn.Conn // the connection under ws, which batches what the write loop writes; nil when not wrapped
	id     string
	remote string
	user   atomic.Pointer[string] // set once by login
	ver    atomic.Int64           // the login's session version, set with user
	// device is the device the login named ("" none), set before user
	// and not changed after.
	device string
	// loggedIn is when the login happened, unix ms, set before the
	// connection is found by its user (deliverPushed).
	loggedIn atomic.Int64

	send    *frameQueue   // frames for the write loop
	closing chan struct{} // closed once by close
	once    sync.Once
	kicked  atomic.Bool // a kicked push was queued (kick)

	// closeCode/closeText are set before closing is closed and read by the
	// write loop after it.
	closeCode int
	closeText string

	// ping fires every PingInterval to have the write loop ping the client:
	// pingDue says so. Reset and stopped by the write loop only.
	ping    *time.Timer
	pingDue atomic.Bool

	tokens  float64 // rate limiter, read loops only
	lastTok time.Time
	// lastFrame is when the last frame was read (readHandoff); read
	// loops only.
	lastFrame time.Time

	typing handler.TypingLimit // typing requests passed on (TypingLimit)
	// announced says a user.login event was emitted for this connection,
	// so its end emits a user.logout (webhooks.go).
	announced atomic.Bool
}

// newClient makes the client of a WebSocket that was just opened. It
// starts no goroutine: the caller runs readLoop; writes start their loop.
func newClient(s *Server, ws *websocket.Conn, remote string) *client {
	c := &client{
		srv: s, ws: ws, out: wsconn.Of(ws.NetConn()), id: s.ids.next(), remote: remote,
		send:    newFrameQueue(s.cfg.SendQueue, s.cfg.SendQueueBytes, s.cfg.SlowClientTimeout),
		closing: make(chan struct{}),
	}
	ws.SetReadLimit(protocol.MaxFrameSize)
	_ = ws.SetReadDeadline(time.Now().Add(c.readIdle()))
	ws.SetPongHandler(func(string) error {
		return ws.SetReadDeadline(time.Now().Add(c.readIdle()))
	})
	c.tokens, c.lastTok = 2*s.cfg.RateLimit, time.Now()
	c.ping = time.AfterFunc(s.cfg.PingInterval, c.pingNow)
	return c
}

// log is the connection's logger: the node's, with the connection's
// fields (conn, remote, and user once logged in) on each line. A logger of
// its own, made with With, would hold half a kilobyte per connection.
func (c *client) log() connLog { return connLog{c} }

type connLog struct{ c *client }

func (l connLog) Debug() *zerolog.Event { return l.fields(l.c.srv.log.Debug()) }
func (l connLog) Info() *zerolog.Event  { return l.fields(l.c.srv.log.Info()) }
func (l connLog) Warn() *zerolog.Event  { return l.fields(l.c.srv.log.Warn()) }
func (l connLog) Error() *zerolog.Event { return l.fields(l.c.srv.log.Error()) }

func (l connLog) fields(e *zerolog.Event) *zerolog.Event {
	if e == nil { // a level that is off
		return nil
	}
	e = e.Str("conn", l.c.id)
	if l.c.remote != "" {
		e = e.Str("remote", l.c.remote)
	}
	if u := l.c.User(); u != "" {
		e = e.Str("user", u)
	}
	return e
}

// Buffers of a client connection, in bytes.
const (
	// clientReadBuffer is a client connection's read buffer. Requests
	// are small; a larger one is read past the buffer.
	clientReadBuffer = 512
	// clientFrameBuffer is the buffer gorilla/websocket puts a frame
	// together in, borrowed from a pool for the time of one frame.
	clientFrameBuffer = 4 << 10
	// clientBatchBuffer is the buffer a client write loop gathers a batch
	// of frames in (see wsconn), borrowed from the first frame of a batch
	// to its flush; a larger batch leaves in more writes.
	clientBatchBuffer = 16 << 10
)

// clientUpgrader is the upgrader of the client listener. An idle client
// connection holds only a small read buffer: it writes with buffers
// borrowed for the time of a frame and of a batch.
func clientUpgrader() websocket.Upgrader {
	return websocket.Upgrader{
		ReadBufferSize:  clientReadBuffer,
		WriteBufferSize: clientFrameBuffer,
		WriteBufferPool: &sync.Pool{},
		// Clients authenticate in-band (password or token in login),
		// never by cookie, so a cross-origin page gains nothing.
		CheckOrigin: func(*http.Request) bool { return true },
	}
}

func (c *client) ConnID() string { return c.id }

func (c *client) User() string {
	if p := c.user.Load(); p != nil {
		return *p
	}
	return ""
}

// enqueue hands a frame to the write loop without blocking. A client that
// does not keep up (its queue has stayed over the bound while its write
// loop did not come back for it, or it holds too many bytes; see
// frameQueue) is disconnected rather than allowed to hold back the sender
// or the node's memory. A burst alone never disconnects a client that
// reads. A read or typing frame (protocol.IsReceiptFrame) waits, for at
// most lazyFlush, to go out in the same write as the next frame that
// does not (see lazyFlusher). Safe from any goroutine.
func (c *client) enqueue(frame []byte) bool {
	select {
	case <-c.closing:
		return false
	default:
	}
	if protocol.IsReceiptFrame(frame) {
		due, err := c.send.pushLazy(frame)
		if due {
			c.srv.lazy.add(c)
		}
		return c.pushed(false, err)
	}
	start, err := c.send.push(frame)
	return c.pushed(start, err)
}

// enqueueMessage is enqueue for the push of message m, encoded in frame,
// which a connection gets once: it reports false, queueing nothing, for a
// message of a conversation at or below one already pushed to it (see
// frameQueue.pushMessage).
func (c *client) enqueueMessage(m *protocol.Message, frame []byte) bool {
	select {
	case <-c.closing:
		return false
	default:
	}
	dup, start, err := c.send.pushMessage(m.Conv, m.Seq, frame)
	if dup {
		c.srv.m.PushRepeated.Inc()
		return false
	}
	return c.pushed(start, err)
}

// pushed handles the outcome of a push: it starts the write loop when the
// push says none runs, and disconnects c as too slow when it was refused.
func (c *client) pushed(start bool, err error) bool {
	if start {
		c.startWriter()
	}
	if err == nil {
		return true
	}
	if c.close(websocket.ClosePolicyViolation, "too slow: send queue full") {
		c.srv.m.SlowDisconnects.Inc()
		ev := c.log().Warn()
		if errors.Is(err, errQueueBytes) {
			ev = ev.Int("bound_bytes", c.send.maxBytes)
		} else {
			ev = ev.Int("bound_frames", c.send.soft).Dur("behind_for", c.send.behindFor)
		}
		ev.AnErr("why", err).Msg("client too slow, disconnecting")
	}
	return false
}

// kick sends a kicked push and closes the connection.
func (c *client) kick(reason string) {
	// Once: two logins racing can each find this one to kick (the newer
	// login here, and the loser of the race for the session in Redis).
	if !c.kicked.CompareAndSwap(false, true) {
		return
	}
	if b, err := protocol.EncodePush(protocol.PushKicked, protocol.KickedPush{Reason: reason}); err == nil && c.enqueue(b) {
		c.srv.m.PushKicked.Inc()
	}
	c.close(websocket.CloseNormalClosure, reason)
}

// close asks the write loop to flush what is queued, send a close frame
// and drop the connection. Idempotent; safe from any goroutine. It reports
// whether this call closed it.
func (c *client) close(code int, text string) (closed bool) {
	c.once.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.closing)
		closed = true
	})
	if closed {
		c.wake()
	}
	return closed
}

// pingNow runs when the ping timer fires.
func (c *client) pingNow() {
	c.pingDue.Store(true)
	c.wake()
}

// wake makes sure a write loop runs and looks at the connection again.
// Safe from any goroutine.
func (c *client) wake() {
	if c.send.poke() {
		c.startWriter()
	}
}

// startWriter starts the write loop, which the queue said is to run. A
// node that is stopping starts nothing: the connection is dropped.
func (c *client) startWriter() {
	if !c.srv.goAttach(c.writeLoop) {
		c.ping.Stop()
		c.ws.Close()
	}
}

// writeLoop writes what is queued, a batch at a time, and returns when
// nothing is: the next push (or the ping timer, or close) starts it again
// (see frameQueue). Each batch goes out in one write on the socket when it
// fits the batch buffer (see wsconn): the frames queued while a batch was
// being written make the next one. At most one write loop runs per
// connection; it alone writes data frames to ws, and it pings, closes and
// drops the connection.
func (c *client) writeLoop() {
	var batch [][]byte
	for {
		var ok bool
		batch, ok = c.send.next(batch)
		if !ok {
			return
		}
		if c.isClosing() {
			c.finish(batch)
			return
		}
		c.out.Cork()
		writes := c.out.Writes()
		ping := c.pingDue.Swap(false)
		if ping && c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.srv.cfg.WriteTimeout)) != nil {
			c.close(websocket.CloseGoingAway, "ping failed")
			c.drop()
			return
		}
		for i, b := range batch {
			if c.isClosing() {
				// Closed meanwhile: what is left goes as close says.
				c.finish(batch[i:])
				return
			}
			if !c.wrote(c.writeFrame(b)) {
				return
			}
		}
		if !c.wrote(c.out.Flush(time.Now().Add(c.srv.cfg.WriteTimeout))) {
			return
		}
		c.srv.m.ClientFramesOut.Add(float64(len(batch)))
		c.srv.m.ClientWrites.Add(float64(c.out.Writes() - writes))
		if ping {
			c.ping.Reset(c.srv.cfg.PingInterval)
		}
		// An idle connection keeps no frame alive.
		clear(batch)
	}
}

func (c *client) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// writeFrame writes one data frame, within WriteTimeout. Write loop only.
func (c *client) writeFrame(b []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// wrote handles the outcome of a write: a failed one closes and drops the
// connection, and one that timed out marks the client too slow. It
// reports whether the write succeeded. Write loop only.
func (c *client) wrote(err error) bool {
	if err == nil {
		return true
	}
	// A write that times out is a client that stopped reading: nothing
	// was taken from the socket for WriteTimeout.
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && c.close(websocket.ClosePolicyViolation, "too slow: not reading") {
		c.srv.m.SlowDisconnects.Inc()
		c.log().Warn().Dur("write_timeout", c.srv.cfg.WriteTimeout).Msg("client stopped reading, disconnecting")
	}
	c.close(websocket.CloseGoingAway, "write failed")
	c.drop()
	return false
}

// finish writes what was queued before the close (a kicked push, the last
// replies), then says goodbye and drops the connection. A client closed
// for being too slow would not take them: it gets only the close frame.
// Write loop only; the last thing it does.
func (c *client) finish(pending [][]byte) {
	if c.closeCode == websocket.ClosePolicyViolation {
		pending = nil
	}
	c.out.Cork()
	for _, b := range pending {
		if c.writeFrame(b) != nil {
			c.drop()
			return
		}
	}
	deadline := time.Now().Add(time.Second)
	if len(pending) > 0 {
		deadline = time.Now().Add(c.srv.cfg.WriteTimeout)
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, deadline)
	if c.out.Flush(deadline) == nil {
		c.srv.m.ClientFramesOut.Add(float64(len(pending)))
	}
	c.drop()
}

// drop ends the connection: the read loop, blocked on it, returns. The
// write loop that drops it is the last: the queue still says one runs, so
// none starts again. Write loop only.
func (c *client) drop() {
	c.ping.Stop()
	c.ws.Close()
}

// readLoop reads frames and handles them, one at a time and in order.
// After each frame it hands reading on to a new goroutine and returns:
// handling grows a goroutine's stack (a login takes it to 8 KiB), and a
// goroutine that then blocks in a read keeps all of it, so every idle
// connection would. A fresh one waits for the next frame in 4 KiB. The
// last one, whose read fails, closes the connection.
func (c *client) readLoop(ctx context.Context) {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.log().Warn().Int("limit", protocol.MaxFrameSize).Msg("client frame over the read limit, closing")
				c.close(websocket.CloseMessageTooBig, "frame over the limit")
			}
			c.close(websocket.CloseNormalClosure, "")
			c.srv.disconnected(c)
			return
		}
		now := time.Now()
		_ = c.ws.SetReadDeadline(now.Add(c.readIdle()))
		quiet := now.Sub(c.lastFrame) >= readHandoff
		c.lastFrame = now
		c.handle(ctx, data)
		if quiet && c.srv.goAttach(func() { c.readLoop(ctx) }) {
			return
		}
		// A busy connection reads on here; so does one of a node that is
		// stopping and starts nothing.
	}
}

// readHandoff is the pause after which a frame's handler hands reading on
// to a new goroutine. Handling a request grows the reading goroutine's
// stack (a login takes it to 8 KiB), and a goroutine
// blocked in a read keeps what it grew: the runtime shrinks a stack only
// while less than a quarter of it is in use, which a read never is. A
// connection idle for hours should wait in a 4 KiB stack; one that sends
// several frames a second is better served reading on where it is, as a
// new goroutine for each frame grows its stack again each time (copying
// it, a tenth of a busy node's CPU). So a frame that came after a pause
// (the first, a login, is one) hands reading on; one that came soon after
// the one before does not. A connection that was busy and falls silent
// keeps its grown stack until its next frame.
const readHandoff = time.Second

// readIdle is how long a client may send nothing, not even a pong.
func (c *client) readIdle() time.Duration { return 2*c.srv.cfg.PingInterval + 5*time.Second }

// handle decodes and answers one frame. Read loop only.
func (c *client) handle(ctx context.Context, data []byte) {
	req, err := protocol.DecodeRequest(data)
	var reply protocol.Reply
	switch {
	case err != nil:
		reply = protocol.ReplyError(req.Action, req.ID, err)
	case !c.allow():
		reply = protocol.ReplyError(req.Action, req.ID, protocol.Errorf(protocol.CodeRateLimited, "over %v requests per second", c.srv.cfg.RateLimit))
	default:
		rctx, cancel := context.WithTimeout(ctx, c.srv.cfg.RequestTimeout)
		reply = c.srv.handler.Handle(rctx, c, req)
		cancel()
	}
	if reply.Code != protocol.CodeOK {
		ev := c.log().Warn()
		if reply.Code >= 500 {
			ev = c.log().Error()
		}
		if reply.Cause != nil {
			ev = ev.AnErr("cause", reply.Cause)
		}
		ev.Str("action", req.Action).Int("code", reply.Code).Str("error", reply.Error).Msg("request failed")
	}
	b, err := protocol.EncodeReply(reply)
	if err != nil {
		c.log().Error().Err(err).Msg("encode reply")
		return
	}
	c.enqueue(b)
}

// allow is a token bucket: RateLimit per second, bursts of twice that.
func (c *client) allow() bool {
	now := time.Now()
	rate := c.srv.cfg.RateLimit
	c.tokens += now.Sub(c.lastTok).Seconds() * rate
	c.lastTok = now
	if c.tokens > 2*rate {
		c.tokens = 2 * rate
	}
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}
