package baseline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"chatcluster/protocol"
)

// Limits of one connection, the same as a chat node's defaults.
const (
	sendQueue    = 1024
	writeTimeout = 10 * time.Second
	maxFrame     = 64 << 10
)

// Server is the relay. Create it with New, serve it with Start or mount
// Handler yourself, and stop it with Close.
type Server struct {
	upgrader websocket.Upgrader
	reg      *prometheus.Registry
	mux      *http.ServeMux

	mu    sync.Mutex
	users map[string]*conn           // logged-in connection per user; guarded by mu
	rooms map[string]map[string]bool // room -> members; guarded by mu
	seqs  map[string]int64           // conv -> last seq; guarded by mu
	conns map[*conn]struct{}         // every open connection; guarded by mu

	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup // connection goroutines
}

// New returns a relay that is not serving yet.
func New() *Server {
	s := &Server{
		upgrader: websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096, CheckOrigin: func(*http.Request) bool { return true }},
		reg:      prometheus.NewRegistry(),
		mux:      http.NewServeMux(),
		users:    map[string]*conn{},
		rooms:    map[string]map[string]bool{},
		seqs:     map[string]int64{},
		conns:    map[*conn]struct{}{},
	}
	s.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chat_connections_logged_in", Help: "logged-in client connections"},
			func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.users)) }),
	)
	s.mux.HandleFunc("/ws", s.serveWS)
	s.mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return s
}

// Handler serves /ws and /metrics.
func (s *Server) Handler() http.Handler { return s.mux }

// Start listens on addr (host:port; port 0 picks one) and serves in the
// background. Addr tells where.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return nil
}

// Addr is the listening address after Start.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening, closes every connection and waits for their
// goroutines.
func (s *Server) Close(ctx context.Context) error {
	var err error
	if s.srv != nil {
		err = s.srv.Shutdown(ctx)
	}
	s.mu.Lock()
	for c := range s.conns {
		c.ws.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return err
}

// conn is one client. Its reader goroutine runs the requests; its writer
// goroutine drains out.
type conn struct {
	ws   *websocket.Conn
	out  chan []byte
	done chan struct{} // closed when the connection ends
	once sync.Once
	user string // set by the reader goroutine only
}

func (c *conn) end() { c.once.Do(func() { close(c.done); c.ws.Close() }) }

// send queues a frame; a full queue disconnects the client, like a node.
func (c *conn) send(b []byte) {
	select {
	case c.out <- b:
	case <-c.done:
	default:
		c.end()
	}
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(maxFrame)
	c := &conn{ws: ws, out: make(chan []byte, sendQueue), done: make(chan struct{})}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(2)
	go s.writeLoop(c)
	go s.readLoop(c)
}

func (s *Server) writeLoop(c *conn) {
	defer s.wg.Done()
	for {
		select {
		case b := <-c.out:
			c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if c.ws.WriteMessage(websocket.TextMessage, b) != nil {
				c.end()
				return
			}
		case <-c.done:
			return
		}
	}
}

func (s *Server) readLoop(c *conn) {
	defer s.wg.Done()
	defer func() {
		c.end()
		s.mu.Lock()
		delete(s.conns, c)
		if c.user != "" && s.users[c.user] == c {
			delete(s.users, c.user)
		}
		s.mu.Unlock()
	}()
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		req, err := protocol.DecodeRequest(b)
		if err != nil {
			s.reply(c, protocol.ReplyError(req.Action, req.ID, err))
			continue
		}
		s.reply(c, s.handle(c, req))
	}
}

func (s *Server) reply(c *conn, r protocol.Reply) {
	b, err := protocol.EncodeReply(r)
	if err == nil {
		c.send(b)
	}
}

func ok(req protocol.Request, data any) protocol.Reply {
	return protocol.Reply{Action: req.Action, ID: req.ID, Code: 0, Data: data}
}

func fail(req protocol.Request, code int, msg string) protocol.Reply {
	return protocol.ReplyError(req.Action, req.ID, protocol.Errorf(code, "%s", msg))
}

func (s *Server) handle(c *conn, req protocol.Request) protocol.Reply {
	switch req.Action {
	case protocol.ActionLogin:
		var d protocol.LoginData
		if err := protocol.DecodeData(req.Data, &d); err != nil {
			return protocol.ReplyError(req.Action, req.ID, err)
		}
		name := d.Username
		if name == "" {
			name = d.Token // the relay has no accounts: a token names the user
		}
		if !protocol.ValidName(name) {
			return fail(req, 400, "invalid username")
		}
		s.mu.Lock()
		old := s.users[name]
		s.users[name] = c
		s.mu.Unlock()
		if old != nil && old != c {
			old.end()
		}
		c.user = name
		return ok(req, protocol.LoginReply{Username: name, Node: "baseline", SessionID: newID()})
	case protocol.ActionPing:
		return ok(req, protocol.Empty{})
	}
	if c.user == "" {
		return fail(req, 401, "log in first")
	}
	switch req.Action {
	case protocol.ActionJoin:
		var d protocol.RoomData
		if err := protocol.DecodeData(req.Data, &d); err != nil {
			return protocol.ReplyError(req.Action, req.ID, err)
		}
		if !protocol.ValidName(d.Room) {
			return fail(req, 400, "invalid room name")
		}
		s.mu.Lock()
		m := s.rooms[d.Room]
		if m == nil {
			m = map[string]bool{}
			s.rooms[d.Room] = m
		}
		m[c.user] = true
		members := make([]string, 0, len(m))
		for u := range m {
			members = append(members, u)
		}
		s.mu.Unlock()
		sort.Strings(members)
		return ok(req, protocol.JoinReply{Room: d.Room, Members: members, Recent: []protocol.Message{}})
	case protocol.ActionChat:
		return s.chat(c, req)
	case "typing", "read":
		return s.chatter(c, req)
	}
	return fail(req, 400, "unknown action "+strconv.Quote(req.Action))
}

func (s *Server) chat(c *conn, req protocol.Request) protocol.Reply {
	var d protocol.ChatData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return protocol.ReplyError(req.Action, req.ID, err)
	}
	switch {
	case d.To != "" && d.Room != "":
		return fail(req, 400, "give either to or room, not both")
	case d.To == "" && d.Room == "":
		return fail(req, 400, "chat needs to (a user) or room")
	case d.Text == "":
		return fail(req, 400, "text is empty")
	case len(d.Text) > protocol.MaxTextBytes:
		return fail(req, 413, "text is too long")
	}
	m := protocol.Message{ID: newID(), From: c.user, To: d.To, Room: d.Room, Text: d.Text, TS: time.Now().UnixMilli()}
	var to []*conn
	s.mu.Lock()
	if d.Room != "" {
		members, found := s.rooms[d.Room]
		if !found {
			s.mu.Unlock()
			return fail(req, 404, "unknown room "+strconv.Quote(d.Room))
		}
		if !members[c.user] {
			s.mu.Unlock()
			return fail(req, 403, "not a member of room "+strconv.Quote(d.Room))
		}
		m.Conv = protocol.RoomConv(d.Room)
		for u := range members {
			if rc := s.users[u]; rc != nil {
				to = append(to, rc)
			}
		}
	} else {
		m.Conv = protocol.DMConv(c.user, d.To)
		if rc := s.users[d.To]; rc != nil {
			to = append(to, rc)
		}
	}
	s.seqs[m.Conv]++
	m.Seq = s.seqs[m.Conv]
	s.mu.Unlock()
	if push, err := protocol.EncodePush(protocol.PushMessage, m); err == nil {
		for _, rc := range to { // one encoded frame for every recipient
			rc.send(push)
		}
	}
	return ok(req, protocol.ChatReply{ID: m.ID, Conv: m.Conv, Seq: m.Seq, TS: m.TS})
}

// chatterData is the data of a typing or read frame.
type chatterData struct {
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
}

// chatter relays a typing or read frame of a direct conversation to the
// other user, as the cluster does (without its checks, rate limit or
// store): what a relay does for what chat users send besides messages.
func (s *Server) chatter(c *conn, req protocol.Request) protocol.Reply {
	var d chatterData
	if err := protocol.DecodeData(req.Data, &d); err != nil {
		return protocol.ReplyError(req.Action, req.ID, err)
	}
	kind, a, b, valid := protocol.ParseConv(d.Conv)
	if !valid || kind != "dm" || (c.user != a && c.user != b) {
		return fail(req, 400, "the relay relays typing and read of direct conversations only")
	}
	other := a
	if other == c.user {
		other = b
	}
	var push []byte
	var err error
	if req.Action == "typing" {
		push, err = protocol.EncodePush("typing", map[string]string{"conv": d.Conv, "from": c.user})
	} else {
		push, err = protocol.EncodePush("read", map[string]any{"conv": d.Conv, "user": c.user, "seq": d.Seq})
	}
	s.mu.Lock()
	rc := s.users[other]
	s.mu.Unlock()
	if rc != nil && err == nil {
		rc.send(push)
	}
	if req.Action == "typing" {
		return ok(req, protocol.Empty{})
	}
	return ok(req, d)
}

// newID returns a message id shaped like the cluster's: the time in base
// 36, a dash, 16 hex digits.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}
