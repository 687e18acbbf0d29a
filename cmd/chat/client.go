package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"chatcluster/chatclient"
)

// client is one terminal session of a user.
//
// Goroutines: run (the caller's) executes the commands; the supervisor owns
// the connection (connects, watches, reconnects) and for each connection
// starts a push reader and a keepalive, which end with that connection.
// The stdin reader ends at the end of the input. run waits for the
// supervisor, which waits for its goroutines, before it returns.
type client struct {
	cfg  config
	gw   *chatclient.Gateway
	term *terminal // the prompt, and the lock of out and diag
	out  *printer  // the user's output
	diag *printer  // diagnostics

	// deliverMu serialises the delivery of messages (the push reader, the
	// command loop and the catch-up after a reconnect), so that the
	// messages of a conversation are printed in seq order. It may be held
	// across a sync request; take it before offs' lock, never after.
	deliverMu sync.Mutex
	offs      *offsets
	signals   signals // what typing and read pushes printed lately

	mu       sync.Mutex
	conn     *chatclient.Conn // the logged-in connection; nil while reconnecting; guarded by mu
	node     string           // its node id; guarded by mu
	connSet  chan struct{}    // closed and replaced when conn changes; guarded by mu
	exitCode int              // set before finished is closed; guarded by mu

	finished   chan struct{} // closed when the session must end (kicked, gave up)
	finishOnce sync.Once
}

func newClient(cfg config, stdout, stderr io.Writer) *client {
	term := &terminal{promptW: stdout, enabled: cfg.Prompt}
	return &client{
		cfg:      cfg,
		gw:       &chatclient.Gateway{URL: strings.TrimRight(cfg.Gateway, "/"), HTTP: gatewayHTTP(cfg.TLS)},
		term:     term,
		out:      &printer{w: stdout, term: term},
		diag:     &printer{w: stderr, term: term},
		offs:     ownOffsets(cfg.User),
		connSet:  make(chan struct{}),
		finished: make(chan struct{}),
	}
}

// run connects, executes the commands read from in until its end, /quit,
// or ctx ends, and returns the exit status.
func (c *client) run(ctx context.Context, in io.Reader) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.term.close()

	if c.cfg.Register {
		if err := c.register(ctx); err != nil {
			c.out.line("error: %s", userError(err))
			return exitFailed
		}
	}
	conn, node, err := c.establish(ctx, "", true)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		c.out.line("error: %s", userError(err))
		return exitFailed
	}
	supervised := make(chan struct{})
	go func() {
		defer close(supervised)
		c.supervise(ctx, conn, node)
	}()

	// The stdin reader may still be blocked in a read when run returns: a
	// read from a terminal or pipe cannot be interrupted. It then ends
	// with the process; it holds nothing and sends nothing after stop.
	lines := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	go readLines(in, lines, stop, c.diag)

	code := c.commands(ctx, lines)
	cancel()
	<-supervised
	return code
}

// commands executes the lines in order until the input ends, /quit, the
// session is finished or ctx ends.
func (c *client) commands(ctx context.Context, lines <-chan string) int {
	var st cmdState
	if c.cfg.Room != "" {
		c.exec(ctx, &st, command{kind: cmdJoin, arg: c.cfg.Room})
	}
	for {
		select {
		case <-c.finished:
			return c.code()
		default:
		}
		c.term.awaitInput(promptFor(st.room))
		select {
		case <-c.finished:
			return c.code()
		case <-ctx.Done():
			return exitOK
		case line, ok := <-lines:
			if !ok {
				return exitOK
			}
			c.term.inputTaken()
			cmd, err := parseCommand(cleanInput(line))
			if err != nil {
				c.out.line("error: %s", err)
				continue
			}
			if cmd.kind == cmdQuit {
				return exitOK
			}
			c.exec(ctx, &st, cmd)
		}
	}
}

// readLines sends the lines of r, without line endings, until r ends or
// stop is closed; it closes lines when it returns.
func readLines(r io.Reader, lines chan<- string, stop <-chan struct{}, diag *printer) {
	defer close(lines)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			select {
			case lines <- line:
			case <-stop:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				diag.line("chat: reading input: %v", err)
			}
			return
		}
	}
}

// finish ends the session with an exit status and a last line for the
// user. Only the first call counts.
func (c *client) finish(code int, msg string) {
	c.finishOnce.Do(func() {
		c.mu.Lock()
		c.exitCode = code
		c.mu.Unlock()
		c.out.line("%s", msg)
		close(c.finished)
	})
}

func (c *client) code() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exitCode
}

// setConn makes conn (nil: none) the connection commands use.
func (c *client) setConn(conn *chatclient.Conn, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn, c.node = conn, node
	close(c.connSet)
	c.connSet = make(chan struct{})
}

// awaitConn returns the current connection, waiting while there is none or
// while it is still old (a connection a request just lost).
func (c *client) awaitConn(ctx context.Context, old *chatclient.Conn) (*chatclient.Conn, error) {
	for {
		c.mu.Lock()
		conn, ch := c.conn, c.connSet
		c.mu.Unlock()
		if conn != nil && conn != old {
			return conn, nil
		}
		select {
		case <-ch:
		case <-c.finished:
			return nil, errEnded
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// request runs f on the current connection with the reply timeout. When
// the connection is lost before the reply, it waits for the next one and
// runs f again; so it does after a 503 reply, with a backoff. f must be
// safe to repeat (a chat resend carries the same clientMsgId).
func (c *client) request(ctx context.Context, f func(context.Context, *chatclient.Conn) error) (*chatclient.Conn, error) {
	var old *chatclient.Conn
	delay := backoffMin
	for attempt := 0; ; attempt++ {
		conn, err := c.awaitConn(ctx, old)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err = f(rctx, conn)
		if err != nil && rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no reply from %s within %s", c.nodeOf(conn), c.cfg.Timeout)
		}
		cancel()
		switch {
		case err == nil || attempt >= retries || ctx.Err() != nil:
			return conn, err
		case errors.Is(err, chatclient.ErrClosed):
			// The supervisor notices the loss and reconnects; closing
			// makes sure it does when only the write side broke.
			_ = conn.Close()
			old = conn
		case chatclient.Code(err) == 503:
			if !sleep(ctx, delay) {
				return conn, err
			}
			delay = min(2*delay, backoffMax)
		default:
			return conn, err
		}
	}
}

// nodeOf names the node of conn for messages.
func (c *client) nodeOf(conn *chatclient.Conn) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn == c.conn && c.node != "" {
		return c.node
	}
	return "the node"
}

// sleep waits d and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// userError is the text of err for the user: server and gateway reasons
// appear without their codes.
func userError(err error) string {
	s := err.Error()
	var re *chatclient.ReplyError
	if errors.As(err, &re) {
		s = strings.Replace(s, re.Error(), re.Msg, 1)
	}
	var he *chatclient.HTTPError
	if errors.As(err, &he) && he.Msg != "" {
		s = strings.Replace(s, he.Error(), he.Msg, 1)
	}
	return s
}

// permanentError is an error that retrying cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// errEnded is returned to a command waiting for a connection when the
// session ended (kicked, or out of reconnect attempts); the user has been
// told why.
var errEnded = errors.New("chat: the session ended")

// gatewayHTTP is the HTTP client of the gateway API: with tlsConf, one
// that trusts its CA; nil, chatclient's default.
func gatewayHTTP(tlsConf *tls.Config) *http.Client {
	if tlsConf == nil {
		return nil
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
}
