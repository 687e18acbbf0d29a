package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"chatcluster/protocol"
)

// client is one WebSocket connection. It has exactly two goroutines: the
// read loop (which also runs the handler, one request at a time) and the
// write loop, which alone writes to ws.
type client struct {
	srv  *Server
	ws   *websocket.Conn
	id   string
	log  zerolog.Logger
	user atomic.Pointer[string] // set once by login
	ver  atomic.Int64           // the login's session version, set with user

	send    *frameQueue   // frames for the write loop
	closing chan struct{} // closed once by close
	once    sync.Once

	// closeCode/closeText are set before closing is closed and read by the
	// write loop after it.
	closeCode int
	closeText string

	tokens  float64 // rate limiter, read loop only
	lastTok time.Time
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
// reads. Safe from any goroutine.
func (c *client) enqueue(frame []byte) bool {
	select {
	case <-c.closing:
		return false
	default:
	}
	return c.pushed(c.send.push(frame))
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
	dup, err := c.send.pushMessage(m.Conv, m.Seq, frame)
	if dup {
		c.srv.m.PushRepeated.Inc()
		return false
	}
	return c.pushed(err)
}

// pushed handles the outcome of a push: a refused one disconnects c as too
// slow.
func (c *client) pushed(err error) bool {
	if err == nil {
		return true
	}
	if c.close(websocket.ClosePolicyViolation, "too slow: send queue full") {
		c.srv.m.SlowDisconnects.Inc()
		ev := c.log.Warn()
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
	return closed
}

func (c *client) writeLoop() {
	defer c.ws.Close()
	ping := time.NewTicker(c.srv.cfg.PingInterval)
	defer ping.Stop()
	write := func(b []byte) bool {
		_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
			// A write that times out is a client that stopped reading:
			// nothing was taken from the socket for WriteTimeout.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && c.close(websocket.ClosePolicyViolation, "too slow: not reading") {
				c.srv.m.SlowDisconnects.Inc()
				c.log.Warn().Dur("write_timeout", c.srv.cfg.WriteTimeout).Msg("client stopped reading, disconnecting")
			}
			c.close(websocket.CloseGoingAway, "write failed")
			return false
		}
		c.srv.m.ClientFramesOut.Inc()
		return true
	}
	var batch [][]byte
	for {
		select {
		case <-c.send.ready:
			batch = c.send.take(batch)
			for _, b := range batch {
				if !write(b) {
					return
				}
			}
			// An idle connection keeps no frame alive.
			clear(batch)
		case <-ping.C:
			if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.srv.cfg.WriteTimeout)) != nil {
				c.close(websocket.CloseGoingAway, "ping failed")
				return
			}
		case <-c.closing:
			// Flush what was queued before the close (a kicked push, the
			// last replies), then say goodbye. A client closed for being
			// too slow would not take it: it gets only the close frame.
			pending := c.send.take(batch)
			if c.closeCode == websocket.ClosePolicyViolation {
				pending = nil
			}
			for _, b := range pending {
				if !write(b) {
					return
				}
			}
			msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			return
		}
	}
}

func (c *client) readLoop(ctx context.Context) {
	defer c.srv.disconnected(c)
	defer c.close(websocket.CloseNormalClosure, "")
	c.ws.SetReadLimit(protocol.MaxFrameSize)
	deadline := 2*c.srv.cfg.PingInterval + 5*time.Second
	_ = c.ws.SetReadDeadline(time.Now().Add(deadline))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(deadline))
	})
	c.tokens, c.lastTok = 2*c.srv.cfg.RateLimit, time.Now()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.log.Warn().Int("limit", protocol.MaxFrameSize).Msg("client frame over the read limit, closing")
				c.close(websocket.CloseMessageTooBig, "frame over the limit")
			}
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(deadline))
		c.handle(ctx, data)
	}
}

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
		ev := c.log.Warn()
		if reply.Code >= 500 {
			ev = c.log.Error()
		}
		if reply.Cause != nil {
			ev = ev.AnErr("cause", reply.Cause)
		}
		ev.Str("action", req.Action).Int("code", reply.Code).Str("error", reply.Error).Msg("request failed")
	}
	b, err := protocol.EncodeReply(reply)
	if err != nil {
		c.log.Error().Err(err).Msg("encode reply")
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
