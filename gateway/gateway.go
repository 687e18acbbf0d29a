package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"chatcluster/accounts"
	"chatcluster/directory"
	"chatcluster/history"
	"chatcluster/internal/keypair"
	"chatcluster/internal/redisconn"
	"chatcluster/metrics"
	"chatcluster/protocol"
	"chatcluster/web"
)

// Config of a gateway.
type Config struct {
	Listen      string
	AdminListen string           // pprof (and /metrics again), host:port; "" opens none
	Redis       redisconn.Config // one server, or a Sentinel set
	RedisPrefix string
	Mongo       string
	MongoDB     string
	BcryptCost  int           // cost of new password hashes; 0: bcrypt.DefaultCost
	TokenTTL    time.Duration // 0: accounts.DefaultTokenTTL
	// Throttle of failed password logins, shared through Redis with every
	// gateway and node of the cluster.
	Throttle accounts.ThrottleConfig
	// VisitorsPerMinute bounds the visitors one address creates a minute
	// (POST /api/visitor); 0 bounds nothing.
	VisitorsPerMinute int
	// TLSCertFile and TLSKeyFile, both or neither, make the gateway serve
	// HTTPS on Listen. Its web client then needs the nodes to publish
	// wss:// URLs (a page served over HTTPS may not open ws://).
	TLSCertFile, TLSKeyFile string

	// The server API (serverapi.go). APIKeysFile is its file of operators'
	// keys (package apikey); "" turns it off. Secret is the cluster
	// secret, with which the gateway signs the calls it forwards to the
	// nodes: required with APIKeysFile. APIRate and APIBurst bound each
	// key's requests (a second, and at once; rate 0: no bound);
	// APITimeout bounds one call (0: DefaultAPITimeout).
	APIKeysFile string
	Secret      []byte
	APIRate     float64
	APIBurst    int
	APITimeout  time.Duration
	// PeerTLSCertFile, PeerTLSKeyFile and PeerTLSCAFile, all three or
	// none, are the gateway's certificate and the cluster's CA for nodes
	// whose peer listeners require mutual TLS (the nodes' --peer-tls-*).
	PeerTLSCertFile, PeerTLSKeyFile, PeerTLSCAFile string

	Logger zerolog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080", RedisPrefix: "chat:", MongoDB: "chat", Throttle: accounts.DefaultThrottle(),
		VisitorsPerMinute: accounts.DefaultVisitorsPerMinute, APIRate: DefaultAPIRate, APIBurst: DefaultAPIBurst,
		APITimeout: DefaultAPITimeout, Logger: zerolog.Nop()}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", c.Listen, err))
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			errs = append(errs, fmt.Errorf("--admin-listen %q: %w", c.AdminListen, err))
		} else if c.AdminListen == c.Listen {
			errs = append(errs, errors.New("--admin-listen must differ from --listen: pprof is never on the public port"))
		}
	}
	if err := c.Redis.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Mongo == "" {
		errs = append(errs, errors.New("a MongoDB URI is required (--mongo)"))
	}
	if c.BcryptCost != 0 && (c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost) {
		errs = append(errs, fmt.Errorf("--bcrypt-cost %d must be between %d and %d", c.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost))
	}
	if err := c.Throttle.Validate(); err != nil {
		errs = append(errs, err)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together: give both for HTTPS, or neither"))
	}
	if c.APIKeysFile != "" && len(c.Secret) < 16 {
		errs = append(errs, errors.New("--api-keys-file needs the cluster secret (--cluster-secret-file, the nodes' file): the gateway forwards server API calls to the nodes with it"))
	}
	if c.APIRate < 0 || c.APIBurst < 0 || c.APITimeout < 0 {
		errs = append(errs, errors.New("--api-rate, --api-burst and --api-timeout must not be negative"))
	}
	if n := btoi(c.PeerTLSCertFile != "") + btoi(c.PeerTLSKeyFile != "") + btoi(c.PeerTLSCAFile != ""); n != 0 && n != 3 {
		errs = append(errs, errors.New("--peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file go together: give all three, or none"))
	}
	return errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Gateway serves the HTTP API.
type Gateway struct {
	cfg      Config
	log      zerolog.Logger
	started  time.Time
	rdb      redis.UniversalClient
	store    *history.Store
	accounts *accounts.Accounts
	dir      *directory.Directory
	ln       net.Listener
	srv      *http.Server
	done     chan struct{} // closed when Serve returned

	reg       *prometheus.Registry // served at GET /metrics
	m         *metrics.Gateway
	adminLn   net.Listener  // nil without Config.AdminListen
	adminSrv  *http.Server  // nil without Config.AdminListen
	adminDone chan struct{} // closed when the admin Serve returned
	cert      *keypair.Pair // nil without Config.TLSCertFile
	api       *serverAPI

	closeOnce sync.Once
}

// New validates cfg and loads its certificate, if any. It opens no
// socket.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry()
	g := &Gateway{cfg: cfg, log: cfg.Logger.With().Str("component", "gateway").Logger(), done: make(chan struct{}),
		reg: reg, m: metrics.NewGateway(reg), adminDone: make(chan struct{})}
	if cfg.TLSCertFile != "" {
		p, err := keypair.Load(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: TLS (--tls-cert-file): %w", err)
		}
		g.cert = p
	}
	api, err := newServerAPI(g, cfg)
	if err != nil {
		return nil, err
	}
	g.api = api
	return g, nil
}

// ReloadAPIKeys reads the server API's key file again; on error the keys
// in use stay. Without the server API it does nothing.
func (g *Gateway) ReloadAPIKeys() error { return g.api.load(false) }

// URL is the gateway's base URL once started, http:// or https://.
func (g *Gateway) URL() string {
	if g.cert != nil {
		return "https://" + g.Addr()
	}
	return "http://" + g.Addr()
}

// ReloadTLS reads the certificate files again, for connections made from
// now on; on error the certificate in use stays. Without TLS it does
// nothing.
func (g *Gateway) ReloadTLS() error {
	if g.cert == nil {
		return nil
	}
	if err := g.cert.Reload(); err != nil {
		return err
	}
	g.log.Info().Str("file", g.cfg.TLSCertFile).Time("notAfter", g.cert.Certificate().Leaf.NotAfter).Msg("certificate loaded")
	return nil
}

// Addr is the address the gateway listens on, once started.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// AdminAddr is the address of the admin listener once started, "" if none.
func (g *Gateway) AdminAddr() string {
	if g.adminLn == nil {
		return ""
	}
	return g.adminLn.Addr().String()
}

// Start connects to Redis and MongoDB and starts serving.
func (g *Gateway) Start(ctx context.Context) error {
	g.started = time.Now()
	rdb, err := redisconn.Open(g.cfg.Redis, redisconn.Options{})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.rdb = rdb
	g.rdb.AddHook(g.m.RedisHook())
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = g.rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		g.rdb.Close()
		return fmt.Errorf("gateway: cannot reach Redis at %s: %w", g.cfg.Redis, err)
	}
	g.store, err = history.Open(ctx, g.cfg.Mongo, g.cfg.MongoDB, history.WithMonitor(g.m.MongoMonitor()), history.WithLogger(g.log))
	if err != nil {
		g.rdb.Close()
		return fmt.Errorf("gateway: cannot open MongoDB at %s: %w", g.cfg.Mongo, err)
	}
	g.accounts = accounts.New(accounts.Config{
		Redis: g.rdb, Prefix: g.cfg.RedisPrefix, Store: g.store, Cost: g.cfg.BcryptCost, TokenTTL: g.cfg.TokenTTL,
		Throttle: g.cfg.Throttle, Logger: g.cfg.Logger.With().Str("component", "accounts").Logger(),
	})
	if err = g.accounts.MigrateNames(ctx); err != nil {
		g.rdb.Close()
		_ = g.store.Close(ctx)
		return fmt.Errorf("gateway: reserving the names of existing users: %w", err)
	}
	g.dir = directory.New(g.rdb, g.cfg.RedisPrefix)
	if err := g.api.load(true); err != nil {
		g.log.Error().Err(err).Msg("server API keys not loaded: its endpoints answer 503 until a reload (SIGHUP) reads them")
	}
	// The admin listener first: once the public port accepts, so does it.
	if g.cfg.AdminListen != "" {
		if g.adminLn, err = net.Listen("tcp", g.cfg.AdminListen); err != nil {
			g.rdb.Close()
			_ = g.store.Close(ctx)
			return fmt.Errorf("gateway: admin listen: %w", err)
		}
	}
	g.ln, err = net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		if g.adminLn != nil {
			g.adminLn.Close()
			g.adminLn = nil
		}
		g.rdb.Close()
		_ = g.store.Close(ctx)
		return fmt.Errorf("gateway: listen: %w", err)
	}
	if g.cert != nil {
		g.ln = tls.NewListener(g.ln, g.cert.ServerConfig())
	}
	g.srv = &http.Server{
		ErrorLog:          keypair.ErrorLog(g.log, zerolog.DebugLevel, "listener"),
		Handler:           g.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		defer close(g.done)
		if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error().Err(err).Msg("listener failed")
		}
	}()
	if g.adminLn != nil {
		g.adminSrv = &http.Server{Handler: metrics.AdminMux(g.reg), ReadHeaderTimeout: 5 * time.Second}
		go func() { // owned by Close, which waits for adminDone
			defer close(g.adminDone)
			if err := g.adminSrv.Serve(g.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.log.Error().Err(err).Msg("admin listener failed")
			}
		}()
	}
	g.log.Info().Str("addr", g.Addr()).Str("url", g.URL()).Msg("gateway started")
	return nil
}

// Close stops accepting requests, lets running ones finish within ctx,
// closes the admin listener (a profile in progress is cut off) and the
// server API's idle connections to the nodes, then closes Redis and
// MongoDB. Idempotent.
func (g *Gateway) Close(ctx context.Context) error {
	var err error
	g.closeOnce.Do(func() {
		if g.srv != nil {
			err = g.srv.Shutdown(ctx)
			<-g.done
		}
		if g.adminSrv != nil {
			_ = g.adminSrv.Close()
			<-g.adminDone
		}
		g.api.close()
		if g.rdb != nil {
			g.rdb.Close()
		}
		if g.store != nil {
			_ = g.store.Close(ctx)
		}
		g.log.Info().Msg("gateway stopped")
	})
	return err
}

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/nodes", g.nodes)
	mux.HandleFunc("POST /api/register", g.register)
	mux.HandleFunc("POST /api/login", g.login)
	mux.HandleFunc("POST /api/visitor", g.visitor)
	mux.HandleFunc("GET /api/cluster", g.cluster)
	mux.HandleFunc("GET /healthz", g.healthz)
	mux.Handle("GET /metrics", metrics.Handler(g.reg))
	g.api.routes(mux)
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	// The web client, the status page, the visitors' support page and
	// their files (package web).
	pages := web.New(notFound)
	mux.Handle("GET /{$}", pages)
	mux.Handle("GET /status", pages)
	mux.Handle("GET /support", pages)
	mux.Handle("GET /static/", pages)
	mux.Handle("/", notFound)
	return g.logRequests(mux)
}

// logRequests logs failed requests at WARN and the rest at DEBUG, and
// counts them by the route (mux pattern) they matched.
func (g *Gateway) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(sw, r)
		g.m.ObserveRequest(r.Pattern, sw.status, time.Since(start))
		ev := g.log.Debug()
		if sw.status >= 400 {
			ev = g.log.Warn()
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", sw.status).
			Dur("took", time.Since(start)).Str("remote", r.RemoteAddr).Msg("request")
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// nodeJSON is a node as the API shows it.
type nodeJSON struct {
	ID          string `json:"id"`
	WS          string `json:"ws"`
	Connections int    `json:"connections"`
}

type nodesReply struct {
	Leader string     `json:"leader"`
	Nodes  []nodeJSON `json:"nodes"`
}

// liveNodes reads the list; it writes the error reply itself on failure.
func (g *Gateway) liveNodes(w http.ResponseWriter, r *http.Request) (directory.View, []nodeJSON, bool) {
	v, err := g.readView(r.Context())
	switch {
	case errors.Is(err, directory.ErrNoView):
		writeError(w, http.StatusServiceUnavailable, "no chat node is live")
		return v, nil, false
	case err != nil:
		g.log.Error().Err(err).Msg("reading the node list")
		writeError(w, http.StatusServiceUnavailable, "node list unavailable")
		return v, nil, false
	}
	nodes := make([]nodeJSON, 0, len(v.Nodes))
	for _, n := range v.ByLoad() {
		nodes = append(nodes, nodeJSON{ID: n.ID, WS: n.WS, Connections: n.Connections})
	}
	return v, nodes, true
}

func (g *Gateway) nodes(w http.ResponseWriter, r *http.Request) {
	v, nodes, ok := g.liveNodes(w, r)
	if ok {
		writeJSON(w, http.StatusOK, nodesReply{Leader: v.Leader, Nodes: nodes})
	}
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// readCredentials decodes a small JSON body: one object and nothing after
// it but white space. It writes the 400 itself.
func readCredentials(w http.ResponseWriter, r *http.Request) (credentials, bool) {
	var c credentials
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(&c)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object {\"username\", \"password\"}: "+err.Error())
		return c, false
	}
	if c.Username == "" || c.Password == "" {
		writeError(w, http.StatusBadRequest, "username and password are required")
		return c, false
	}
	return c, true
}

func (g *Gateway) register(w http.ResponseWriter, r *http.Request) {
	c, ok := readCredentials(w, r)
	if !ok {
		return
	}
	name, err := g.accounts.Register(r.Context(), c.Username, c.Password)
	switch {
	case errors.Is(err, accounts.ErrInvalid):
		g.m.RegisterInvalid.Inc()
		writeError(w, http.StatusBadRequest, err.Error()[len("accounts: "):])
	case errors.Is(err, accounts.ErrTaken):
		g.m.RegisterTaken.Inc()
		writeError(w, http.StatusConflict, "username is taken")
	case err != nil:
		g.m.RegisterFailed.Inc()
		g.log.Error().Err(err).Msg("register")
		writeError(w, http.StatusServiceUnavailable, "user store unavailable; retry shortly")
	default:
		g.m.RegisterOK.Inc()
		g.log.Info().Str("user", name).Msg("user registered")
		writeJSON(w, http.StatusCreated, map[string]string{"username": name})
	}
}

// visitor creates a customer-service visitor: its id and the token its
// WebSocket login uses.
func (g *Gateway) visitor(w http.ResponseWriter, r *http.Request) {
	var req protocol.VisitorRequest
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	switch {
	case err == io.EOF:
		err = nil // no body: a visitor with the defaults
	case err == nil:
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "body must be empty or a JSON object {\"name\", \"channel\"}: "+err.Error())
		return
	}
	v, tok, err := g.accounts.CreateVisitor(r.Context(), req.Name, req.Channel, r.RemoteAddr, g.cfg.VisitorsPerMinute)
	var le *accounts.VisitorLimitError
	switch {
	case errors.Is(err, accounts.ErrInvalid):
		writeError(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "accounts: invalid username or password: "))
	case errors.As(err, &le):
		w.Header().Set("Retry-After", strconv.Itoa(le.RetryAfter()))
		writeError(w, http.StatusTooManyRequests, le.Error())
	case err != nil:
		g.log.Error().Err(err).Msg("create visitor")
		writeError(w, http.StatusServiceUnavailable, "session store unavailable; retry shortly")
	default:
		g.log.Info().Str("visitor", v.ID).Str("channel", v.Channel).Msg("visitor created")
		writeJSON(w, http.StatusCreated, protocol.VisitorReply{Visitor: v.ID, Token: tok, Name: v.Name, Channel: v.Channel})
	}
}

type loginReply struct {
	Username string     `json:"username"`
	Token    string     `json:"token"`
	Nodes    []nodeJSON `json:"nodes"`
}

func (g *Gateway) login(w http.ResponseWriter, r *http.Request) {
	c, ok := readCredentials(w, r)
	if !ok {
		return
	}
	user, err := g.accounts.Login(r.Context(), c.Username, c.Password, r.RemoteAddr)
	var te *accounts.ThrottledError
	switch {
	case errors.As(err, &te):
		g.m.LoginThrottled.Inc()
		w.Header().Set("Retry-After", strconv.Itoa(te.RetryAfter()))
		writeError(w, http.StatusTooManyRequests, te.Reason())
		return
	case errors.Is(err, accounts.ErrBadCredentials):
		g.m.LoginDenied.Inc()
		writeError(w, http.StatusUnauthorized, "wrong username or password")
		return
	case err != nil:
		g.m.LoginFailed.Inc()
		g.log.Error().Err(err).Msg("login")
		writeError(w, http.StatusServiceUnavailable, "user store unavailable; retry shortly")
		return
	}
	tok, err := g.accounts.IssueToken(r.Context(), user)
	if err != nil {
		g.m.LoginFailed.Inc()
		g.log.Error().Err(err).Msg("issue token")
		writeError(w, http.StatusServiceUnavailable, "session store unavailable; retry shortly")
		return
	}
	g.m.LoginOK.Inc()
	nodes := []nodeJSON{}
	if v, err := g.readView(r.Context()); err == nil {
		for _, n := range v.ByLoad() {
			nodes = append(nodes, nodeJSON{ID: n.ID, WS: n.WS, Connections: n.Connections})
		}
	}
	writeJSON(w, http.StatusOK, loginReply{Username: user, Token: tok, Nodes: nodes})
}

type clusterNode struct {
	ID          string  `json:"id"`
	WS          string  `json:"ws"`
	Connections int     `json:"connections"`
	Leader      bool    `json:"leader"`
	Linked      bool    `json:"linked"`
	Started     int64   `json:"started,omitempty"`
	Uptime      float64 `json:"uptimeSeconds,omitempty"`
	Messages    int64   `json:"messages"` // accepted from its clients since it started
}

type clusterReply struct {
	Leader        string        `json:"leader"`
	Epoch         int64         `json:"epoch"`
	Term          int64         `json:"term"` // 1, 2, ... per leader; 0 until the leader has counted it
	LeaderSince   int64         `json:"leaderSince"`
	Updated       int64         `json:"updated"`
	Connections   int           `json:"connections"`
	Backlog       int64         `json:"historyBacklog"` // messages not yet in MongoDB
	Nodes         []clusterNode `json:"nodes"`
	GatewayUptime float64       `json:"gatewayUptimeSeconds"`
	// Support is customer service as the leader published it; left out
	// until it has.
	Support *directory.Support `json:"support,omitempty"`
}

func (g *Gateway) cluster(w http.ResponseWriter, r *http.Request) {
	v, err := g.readView(r.Context())
	if err != nil && !errors.Is(err, directory.ErrNoView) {
		writeError(w, http.StatusServiceUnavailable, "node list unavailable")
		return
	}
	now := time.Now()
	out := clusterReply{Leader: v.Leader, Epoch: v.Epoch, Term: v.Term, LeaderSince: v.LeaderSince, Updated: v.Updated,
		Backlog: v.Backlog, Nodes: []clusterNode{}, GatewayUptime: now.Sub(g.started).Seconds(), Support: v.Support}
	for _, n := range v.Nodes {
		cn := clusterNode{ID: n.ID, WS: n.WS, Connections: n.Connections, Leader: n.ID == v.Leader, Linked: n.Linked, Started: n.Started, Messages: n.Messages}
		if n.Started > 0 {
			cn.Uptime = now.Sub(time.UnixMilli(n.Started)).Seconds()
		}
		out.Connections += n.Connections
		out.Nodes = append(out.Nodes, cn)
	}
	writeJSON(w, http.StatusOK, out)
}

// readView reads the live-node list the leader publishes, counting the
// read by its result.
func (g *Gateway) readView(ctx context.Context) (directory.View, error) {
	v, err := g.dir.Read(ctx)
	switch {
	case err == nil:
		g.m.NodeListOK.Inc()
	case errors.Is(err, directory.ErrNoView):
		g.m.NodeListEmpty.Inc()
	default:
		g.m.NodeListFailed.Inc()
	}
	return v, err
}

func (g *Gateway) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{"redis": "ok", "mongo": "ok"}
	code := http.StatusOK
	if err := g.rdb.Ping(ctx).Err(); err != nil {
		status["redis"], code = err.Error(), http.StatusServiceUnavailable
	}
	if err := g.store.Ping(ctx); err != nil {
		status["mongo"], code = err.Error(), http.StatusServiceUnavailable
	}
	writeJSON(w, code, status)
}
