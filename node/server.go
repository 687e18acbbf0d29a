package node

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/accounts"
	"chatcluster/chatlog"
	"chatcluster/cluster"
	"chatcluster/directory"
	"chatcluster/handler"
	"chatcluster/history"
	"chatcluster/internal/keypair"
	"chatcluster/internal/redisconn"
	"chatcluster/internal/wsconn"
	"chatcluster/leader"
	"chatcluster/metrics"
	"chatcluster/peerlink"
	"chatcluster/protocol"
	"chatcluster/receipt"
	"chatcluster/roomstore"
	"chatcluster/session"
	"chatcluster/webhook"
	"chatcluster/wordfilter"
)

// Server is one chat node. Create it with New, run it with Start, stop it
// with Close.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	started time.Time

	rdb      redis.UniversalClient
	store    *history.Store
	rooms    *roomstore.Store // room membership: MongoDB and its copy in Redis
	chatlog  *chatlog.Log
	journal  *journal
	reads    *receipt.Store // read positions
	lazy     *lazyFlusher   // connections whose read and typing frames wait (lazy.go)
	ids      idSource       // message and connection ids
	words    *wordsSvc
	filter   *wordfilter.Filter
	accounts *accounts.Accounts
	dir      *directory.Directory
	sessions *session.Store
	devices  *session.Devices // the multi login policy's sessions; nil under the single one
	local    *session.Local[*client]
	handler  *handler.Handler
	cluster  *cluster.Cluster
	writer   *history.Writer

	// Webhooks (webhooks.go): events always; hooks with endpoints; screen
	// with a before-message hook.
	events *webhook.Emitter
	hooks  *webhook.Dispatcher
	screen *webhook.Hook

	clientLn, peerLn, adminLn net.Listener
	clientHTTP                *http.Server
	peerHTTP                  *http.Server
	adminHTTP                 *http.Server       // nil without Config.AdminListen
	peers                     *peerlink.Acceptor // the peer listener's half of the handshake
	clientCert                *keypair.Pair      // the client listener's certificate; nil: plain ws
	peerTLS                   *peerlink.TLS      // the peer link's mutual TLS; nil: plain TCP

	// clientUpgrader is the client listener's upgrader; batches are the
	// batch buffers of the client write loops.
	clientUpgrader websocket.Upgrader
	batches        *wsconn.Buffers

	reg *prometheus.Registry // this node's metrics, served on the admin listener
	m   *metrics.Node
	wm  *metrics.Webhooks

	// conns holds every open client connection, logged in or not, so Close
	// can reach them all.
	connsMu sync.Mutex
	conns   map[*client]struct{} // guarded by connsMu

	// Cluster view, written only by the watch loop.
	members  atomic.Pointer[map[string]cluster.Member]
	maxEpoch atomic.Int64   // the newest leader epoch this node has seen
	ups      leader.UpMarks // as leader: the numbered frames handled, per node
	// parked: as leader, pushes for recipients not placed yet. It
	// outlives a term, so a term that pauses and resumes (ZooKeeper
	// lost for a moment) still delivers what it parked.
	parked *leader.Parking

	messagesIn atomic.Int64 // messages accepted from this node's clients

	loginSeed maphash.Seed
	loginMu   [64]sync.Mutex // logins of one user on this node, by user hash

	// beat is the value of the boot keys this node last wrote and Redis
	// confirmed; it belongs to watchRedis (set first by Start).
	beat string

	lastLeader cluster.Leader // leader of the last state applied; watch loop only

	routes *router

	// waitLog logs replication that fell short, at most once a second.
	waitLog zerolog.Logger

	ctx    context.Context // canceled when Close begins its last phase
	cancel context.CancelFunc

	wgMu     sync.RWMutex
	wg       sync.WaitGroup
	stopping bool // guarded by wgMu

	ready     chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and wires a Server. It opens no socket and starts no
// goroutine.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger.With().Str("node", cfg.ID).Logger(),
		local: session.NewLocal[*client](),
		lazy:  newLazyFlusher(),
		conns: make(map[*client]struct{}),
		ready: make(chan struct{}),
	}
	s.peers, s.clientUpgrader = peerlink.NewAcceptor(cfg.Secret, cfg.ID), clientUpgrader()
	s.batches = wsconn.NewBuffers(clientBatchBuffer)
	if err := s.loadTLS(); err != nil {
		return nil, err
	}
	if cfg.WordFilterFile != "" {
		f, err := wordfilter.Load(cfg.WordFilterFile)
		if err != nil {
			return nil, fmt.Errorf("node: word filter: %w", err)
		}
		s.filter = f
		s.log.Info().Str("file", cfg.WordFilterFile).Int("words", f.Len()).Msg("word filter loaded")
	}
	s.loginSeed = maphash.MakeSeed()
	empty := map[string]cluster.Member{}
	s.members.Store(&empty)
	s.routes = newRouter(s)
	s.waitLog = s.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Second})
	s.reg = metrics.NewRegistry()
	s.m = metrics.NewNode(s.reg, s.metricSources())
	s.wm = metrics.NewWebhooks(s.reg, s.webhookSources())
	s.parked = leader.NewParking(s.m.RouteParkExpired)
	return s, nil
}

// Ready is closed once Start has completed.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// goAttach runs f in a goroutine the server owns, unless Close began.
func (s *Server) goAttach(f func()) bool {
	s.wgMu.RLock()
	defer s.wgMu.RUnlock()
	if s.stopping {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Start connects to Redis and MongoDB, opens the client and peer
// listeners, registers in ZooKeeper and starts every loop. It returns once
// the node is registered; on error everything it opened is closed.
func (s *Server) Start(ctx context.Context) (err error) {
	s.started = time.Now()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Close(cctx)
		}
	}()

	// RESP2: the node uses nothing of RESP3 (no push notifications, no
	// client-side caching), and with RESP3 go-redis looks for pushes ahead
	// of every reply, a few per cent of a busy node's CPU.
	s.rdb, err = redisconn.Open(s.cfg.Redis, redisconn.Options{PoolSize: 64, MinIdleConns: 4, Protocol: 2})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	s.rdb.AddHook(s.m.RedisHook())
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = s.rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("node: cannot reach Redis at %s: %w", s.cfg.Redis, err)
	}
	s.store, err = history.Open(ctx, s.cfg.Mongo, s.cfg.MongoDB, history.WithMonitor(s.m.MongoMonitor()), history.WithLogger(s.log.With().Str("component", "history").Logger()))
	if err != nil {
		return fmt.Errorf("node: cannot open MongoDB at %s: %w", s.cfg.Mongo, err)
	}
	if err = s.markBoot(ctx); err != nil {
		return fmt.Errorf("node: writing to Redis: %w", err)
	}
	var logOpts []chatlog.Option
	if n := s.cfg.RedisWaitReplicas; n > 0 {
		logOpts = append(logOpts, chatlog.WithReplicas(n, s.cfg.RedisWaitTimeout, func(got int) {
			s.m.RedisWaitShort.Inc()
			s.waitLog.Warn().Int("replicas", got).Int("wanted", n).Dur("waited", s.cfg.RedisWaitTimeout).
				Msg("messages acknowledged before enough Redis replicas held them (logged at most once a second)")
		}))
	}
	s.chatlog = chatlog.New(s.rdb, s.cfg.RedisPrefix, logOpts...)
	llog := s.log.With().Str("component", "redis-layout").Logger()
	mg, err := s.chatlog.MigrateLayout(ctx, func(step string) { llog.Info().Msg(step) })
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if mg.Moved() {
		llog.Warn().Int("keys", mg.Keys).Int("streamEntries", mg.Entries).Int("clientMsgIds", mg.Idem).Int("deleted", mg.Obsolete).
			Str("layout", chatlog.LayoutVersion).Msg("moved the Redis keys of the earlier layout into this one")
	}
	s.journal = &journal{log: s.chatlog, store: s.store}
	s.reads = receipt.New(receipt.Config{Redis: s.rdb, Prefix: s.cfg.RedisPrefix, Durable: durableReads{s.store},
		Marker: s.chatlog.MarkerKey, Counter: s.chatlog.SeqKey, Beside: s.chatlog.RunLazy, Holder: s.cfg.ID, Log: s.log})
	s.words = newWordsSvc(s)
	if err = s.markFresh(ctx); err != nil {
		return err
	}
	s.accounts = accounts.New(accounts.Config{
		Redis: s.rdb, Prefix: s.cfg.RedisPrefix, Store: s.store, Cost: s.cfg.BcryptCost,
		Throttle: s.cfg.LoginThrottle, Logger: s.log.With().Str("component", "accounts").Logger(),
	})
	s.dir = directory.New(s.rdb, s.cfg.RedisPrefix)
	s.rooms = roomstore.New(s.store, s.rdb, s.cfg.RedisPrefix, s.log)
	s.sessions = session.NewStore(s.rdb, s.cfg.RedisPrefix)
	if s.multi() {
		s.devices = s.sessions.Devices(s.cfg.MaxDevices)
	}
	if err = s.setupWebhooks(ctx); err != nil {
		return err
	}
	s.handler = handler.New(handler.Deps{
		Node:     s.cfg.ID,
		Users:    users{s.accounts},
		Sessions: sessionsSvc{s},
		Journal:  s.journal,
		Router:   s.routes,
		Rooms:    roomsSvc{s},
		Support:  supportSvc{s},
		Visitors: visitors{s.accounts},
		Words:    s.words,
		Filter:   s.mask,
		Events:   s.cfg.eventPolicy(),
		Screen:   s.screenDep(),
		Now:      func() int64 { return time.Now().UnixMilli() },
		NewID:    s.ids.next,
		Reads:    readsSvc{s.reads},
		Pushes:   s.routes,
	})
	s.writer, err = history.NewWriter(history.WriterConfig{
		Redis: s.rdb, Prefix: s.cfg.RedisPrefix, Store: s.store, Consumer: s.cfg.ID,
		Forward: webhook.StreamSuffix, ForwardCap: s.forwardCap(), // what it wrote, to the webhook queue
		Logger: s.log, // the writer names itself (component history-writer)
	})
	if err != nil {
		return err
	}

	// The admin listener first: once the client port accepts, so does it.
	if s.cfg.AdminListen != "" {
		if s.adminLn, err = net.Listen("tcp", s.cfg.AdminListen); err != nil {
			return fmt.Errorf("node: admin listener: %w", err)
		}
		mux := metrics.AdminMux(s.reg)
		mux.HandleFunc("GET /support", s.serveSupport)
		s.adminHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		aln := s.adminLn
		s.goAttach(func() { s.serveHTTP(s.adminHTTP, aln, "admin") })
	}
	// Every connection either listener accepts batches the frames its
	// write loop writes: see wsconn.
	if s.clientLn, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		return fmt.Errorf("node: client listener: %w", err)
	}
	s.clientLn = s.clientListener(wsconn.Listen(s.clientLn, s.batches))
	if s.peerLn, err = net.Listen("tcp", s.cfg.PeerListen); err != nil {
		return fmt.Errorf("node: peer listener: %w", err)
	}
	s.peerLn = peerlink.Listen(s.peerLn, s.peerTLS, s.log)
	s.cfg.publish(s.clientLn.Addr(), s.peerLn.Addr())
	s.warnLoopback()
	cmux := http.NewServeMux()
	cmux.HandleFunc("/ws", s.serveWS)
	cmux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"node":%q,"connections":%d}`+"\n", s.cfg.ID, s.local.Len())
	})
	s.clientHTTP = &http.Server{Handler: cmux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: keypair.ErrorLog(s.log, zerolog.DebugLevel, "client listener")}
	pmux := http.NewServeMux()
	pmux.HandleFunc(peerlink.Path, s.servePeer)
	pmux.HandleFunc("POST "+protocol.ServerPath+"{op}", s.serveServer) // the server API, for the gateway (serverapi.go)
	s.peerHTTP = &http.Server{Handler: pmux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: peerlink.ErrorLog(s.log)}
	cln, pln := s.clientLn, s.peerLn
	s.goAttach(func() { s.serveHTTP(s.peerHTTP, pln, "peer") })

	clog := s.log.With().Str("component", "cluster").Logger()
	if s.cfg.ZKAuth.IsZero() {
		clog.Warn().Msg("no ZooKeeper credential (--zk-auth-file): the cluster's znodes are world-writable, " +
			"and anyone who reaches ZooKeeper can delete a node's registration or the leader's election znode")
	}
	s.cluster, err = cluster.New(cluster.Config{
		Servers: s.cfg.ZK, Chroot: s.cfg.ZKChroot, Root: s.cfg.ZKRoot, SessionTimeout: s.cfg.ZKSessionTimeout,
		Auth:    s.cfg.ZKAuth,
		Self:    cluster.Member{ID: s.cfg.ID, WS: s.cfg.Advertise, Peer: s.cfg.PeerAdvertise, Run: s.started.UnixNano()},
		Logger:  clog,
		Observe: s.m.ObserveZK,
	})
	if err != nil {
		return err
	}
	if err = s.cluster.Start(ctx); err != nil {
		return fmt.Errorf("node: join cluster: %w", err)
	}
	s.goAttach(s.watchCluster)
	s.routes.start()
	s.goAttach(s.words.run)
	s.goAttach(s.watchRedis)
	s.goAttach(func() { s.parked.ExpireLoop(s.ctx) })
	s.goAttach(func() { s.reads.Run(s.ctx) })
	s.goAttach(func() { s.lazy.run(s.ctx) })
	s.goAttach(func() {
		if err := s.writer.Run(s.ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error().Err(err).Msg("history writer stopped")
		}
	})
	s.runWebhooks()
	s.goAttach(func() { s.serveHTTP(s.clientHTTP, cln, "client") })
	s.log.Info().Str("ws", s.cfg.Advertise).Str("peer", s.cfg.PeerAdvertise).Str("listen", s.cfg.Listen).Str("peerListen", s.cfg.PeerListen).Str("admin", s.cfg.AdminListen).Msg("node started")
	close(s.ready)
	return nil
}

// markFresh tells the journal that Redis holds every sequence counter from
// the start when durable history is empty (a new deployment), so that a
// new conversation needs only Redis. Otherwise counters missing from Redis
// (it was restarted empty) are seeded from MongoDB one conversation at a
// time, which never reuses a seq.
func (s *Server) markFresh(ctx context.Context) error {
	empty, err := s.store.Empty(ctx)
	if err != nil {
		return fmt.Errorf("node: reading history: %w", err)
	}
	if !empty {
		return nil
	}
	if err := s.chatlog.MarkFresh(ctx); err != nil {
		return fmt.Errorf("node: marking a new deployment in Redis: %w", err)
	}
	return nil
}

func (s *Server) serveHTTP(srv *http.Server, ln net.Listener, name string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error().Err(err).Str("listener", name).Msg("listener failed")
	}
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.clientUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered
	}
	c := newClient(s, ws, r.RemoteAddr)
	s.m.ConnectionsOpened.Inc()
	s.connsMu.Lock()
	s.conns[c] = struct{}{}
	s.connsMu.Unlock()
	if !s.goAttach(func() { c.readLoop(s.ctx) }) {
		c.close(websocket.CloseGoingAway, "node is shutting down")
		s.dropConn(c)
	}
}

func (s *Server) dropConn(c *client) {
	s.connsMu.Lock()
	delete(s.conns, c)
	s.connsMu.Unlock()
}

// multi reports whether the node runs the multi login policy.
func (s *Server) multi() bool { return s.cfg.LoginPolicy == PolicyMulti }

// login binds c to user, on device ("" none): locally and in the global
// session, kicking what the login policy says it replaces (an older
// connection of the user, or of the device, or the oldest device).
func (s *Server) login(ctx context.Context, c *client, user, device string) (string, error) {
	if err := s.bind(ctx, c, user, device); err != nil {
		return "", err
	}
	// The leader learns of the login before the client hears it is logged
	// in, so room messages posted after the reply reach this connection
	// live. Bounded: without a leader the login goes on and the news
	// follows from the queue.
	octx, cancel := context.WithTimeout(ctx, onlineWait)
	if _, err := s.routes.request(octx, &protocol.PeerFrame{Type: protocol.PeerOnline, User: user, Conn: c.id, Online: true, Ver: c.ver.Load()}); err != nil {
		c.log().Debug().Err(err).Msg("leader has not confirmed the login yet")
	}
	cancel()
	ev := c.log().Info()
	if device != "" {
		ev = ev.Str("device", device)
	}
	ev.Msg("logged in")
	s.emitSession(webhook.UserLogin, c, user, c.loggedIn.Load())
	return c.id, nil
}

// bind makes c the user's connection (or one of them, under the multi
// policy) here and in the global session. The logins of one user on this
// node run one at a time, from taking the version to the write, so the
// local order of logins is their version order and the one Redis keeps is
// the one kept here.
func (s *Server) bind(ctx context.Context, c *client, user, device string) error {
	mu := &s.loginMu[maphash.String(s.loginSeed, user)%uint64(len(s.loginMu))]
	mu.Lock()
	defer mu.Unlock()
	ver, err := s.sessions.NextVersion(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	c.device = device
	c.user.Store(&user)
	c.ver.Store(ver)
	now := time.Now().UnixMilli()
	c.loggedIn.Store(now)
	rec := session.Record{User: user, Node: s.cfg.ID, Conn: c.id, LoginTime: now, Version: ver, Run: s.started.UnixNano(), Device: device}
	if s.multi() {
		return s.bindDevice(ctx, c, rec)
	}
	if old, replaced := s.local.Add(c); replaced && old != c {
		old.kick(protocol.KickElsewhere)
	}
	prev, stored, err := s.sessions.Put(ctx, rec)
	if err != nil {
		s.local.Remove(c)
		c.user.Store(nil)
		return fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	if !stored {
		// A newer login of the same user won the race: this one loses.
		s.local.Remove(c)
		c.kick(protocol.KickElsewhere)
		return protocol.Errorf(protocol.CodeConflict, "a newer login of %s exists", user)
	}
	if prev.Conn != "" && prev.Conn != c.id && prev.Node != s.cfg.ID && s.holds(prev) {
		s.routes.kickRemote(prev.Node, user, prev.Conn, protocol.KickElsewhere)
	}
	return nil
}

// bindDevice is bind under the multi policy: c is one more connection of
// the user, replacing an older one of the same named device; over the
// bound the oldest device goes. Caller holds the user's login lock.
func (s *Server) bindDevice(ctx context.Context, c *client, rec session.Record) error {
	if old, replaced := s.local.AddDevice(c, rec.Device); replaced && old != c {
		old.kick(protocol.KickSameDevice)
	}
	res, err := s.devices.Put(ctx, rec, s.liveNodes())
	if err != nil {
		s.local.Remove(c)
		c.user.Store(nil)
		return fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	if !res.Stored {
		// A newer login of the same device won the race, or the user is
		// logged in on as many devices as allowed, each newer.
		s.local.Remove(c)
		if res.Newer.Conn != "" {
			c.kick(protocol.KickSameDevice)
			return protocol.Errorf(protocol.CodeConflict, "a newer login of %s on this device exists", rec.User)
		}
		c.kick(protocol.KickTooManyDevices(s.devices.Max()))
		return protocol.Errorf(protocol.CodeConflict, "%s is logged in on %d newer devices", rec.User, s.devices.Max())
	}
	if res.Replaced.Conn != "" && res.Replaced.Conn != c.id {
		s.kickSession(res.Replaced, protocol.KickSameDevice)
	}
	for _, ev := range res.Evicted {
		s.kickSession(ev, protocol.KickTooManyDevices(s.devices.Max()))
	}
	return nil
}

// kickSession closes the connection of a global session, here or on its
// node if that still holds it.
func (s *Server) kickSession(r session.Record, reason string) {
	switch {
	case r.Node == s.cfg.ID:
		s.kickLocal(r.User, r.Conn, reason)
	case s.holds(r):
		s.routes.kickRemote(r.Node, r.User, r.Conn, reason)
	}
}

// liveNodes are the members as session.Devices counts them live.
func (s *Server) liveNodes() []session.Live {
	ms := *s.members.Load()
	out := make([]session.Live, 0, len(ms))
	for _, m := range ms {
		out = append(out, session.Live{Node: m.ID, Run: m.Run})
	}
	return out
}

// onlineWait bounds how long a login waits for the leader to record it.
const onlineWait = 500 * time.Millisecond

// disconnected runs once when c's read loop ends.
func (s *Server) disconnected(c *client) {
	s.dropConn(c)
	user := c.User()
	if user == "" {
		return
	}
	if c.announced.Load() {
		s.emitSession(webhook.UserLogout, c, user, time.Now().UnixMilli())
	}
	// Under the multi policy the leader holds every connection it was
	// told of until it is told it ended, also one replaced here by a
	// newer login of its device; under the single policy the newer login
	// took its place there.
	removed := s.local.Remove(c)
	if removed {
		c.log().Info().Msg("logged out")
	}
	if removed || s.multi() {
		s.routes.toLeader(&protocol.PeerFrame{Type: protocol.PeerOnline, User: user, Conn: c.id})
	}
	// Also for a connection replaced here meanwhile: the delete removes
	// only a record that still names this connection.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.sessionStore().Delete(ctx, user, c.id); err != nil {
		c.log().Warn().Err(err).Msg("could not remove global session; it counts as offline once this node is gone")
	}
}

// sessionStore is the global sessions of the login policy, as far as
// removing one goes.
func (s *Server) sessionStore() leader.Sessions {
	if s.devices != nil {
		return s.devices
	}
	return s.sessions
}

// kickLocal closes user's connection conn if it is on this node, or
// every connection of user if conn is "", with reason ("": logged in
// elsewhere).
func (s *Server) kickLocal(user, conn, reason string) {
	if reason == "" {
		reason = protocol.KickElsewhere
	}
	if conn == "" {
		for _, c := range s.local.Conns(user) {
			c.kick(reason)
		}
		return
	}
	if c, ok := s.local.Conn(user, conn); ok {
		c.kick(reason)
	}
}

// isLive reports whether node is registered in ZooKeeper now.
func (s *Server) isLive(node string) bool {
	_, ok := (*s.members.Load())[node]
	return ok
}

// holds reports whether the node a session names still holds it: the node
// is registered in ZooKeeper and is the same run of it that wrote the
// session (a node restarted under the same id has none of its old
// connections).
func (s *Server) holds(r session.Record) bool {
	m, ok := (*s.members.Load())[r.Node]
	return ok && (r.Run == 0 || m.Run == 0 || m.Run == r.Run)
}

// Close stops the node gracefully, in this order: stop accepting clients;
// leave ZooKeeper, so the gateway stops handing this node out and the
// leader stops routing here; tell every client to reconnect elsewhere and
// give them DrainTimeout to go; close the rest; flush queued peer traffic;
// close the peer and admin listeners (metrics stay up while the node
// drains); stop every goroutine; queue the last logouts for the webhooks;
// close Redis and MongoDB. It is idempotent
// and bounded by ctx.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.doClose(ctx) })
	return s.closeErr
}

func (s *Server) doClose(ctx context.Context) error {
	s.log.Info().Msg("node stopping")
	if s.clientHTTP != nil {
		_ = s.clientHTTP.Close() // hijacked WebSockets are ours to close below
	}
	if s.cluster != nil {
		if err := s.cluster.Close(ctx); err != nil {
			s.log.Warn().Err(err).Msg("leaving ZooKeeper")
		}
	}
	s.drainClients(ctx)
	s.routes.drain(ctx)

	s.wgMu.Lock()
	s.stopping = true
	s.wgMu.Unlock()
	if s.peerHTTP != nil {
		_ = s.peerHTTP.Close()
	}
	if s.adminHTTP != nil {
		_ = s.adminHTTP.Close()
	}
	s.routes.closeLinks()
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("node: goroutines still running at close deadline: %w", ctx.Err())
	}
	s.flushWebhooks()
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.store != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.store.Close(cctx)
		cancel()
	}
	s.log.Info().Msg("node stopped")
	return err
}

// drainClients pushes node{reconnect} to every client, waits up to
// DrainTimeout for them to leave, then closes the rest.
func (s *Server) drainClients(ctx context.Context) {
	push, _ := protocol.EncodePush(protocol.PushNode, protocol.NodePush{Reconnect: true})
	s.connsMu.Lock()
	all := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.connsMu.Unlock()
	for _, c := range all {
		if c.enqueue(push) {
			s.m.PushNode.Inc()
		}
	}
	deadline := time.NewTimer(s.cfg.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.connsMu.Lock()
		n := len(s.conns)
		s.connsMu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-tick.C:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		}
		break
	}
	s.connsMu.Lock()
	for c := range s.conns {
		c.close(websocket.CloseGoingAway, "node is shutting down")
	}
	s.connsMu.Unlock()
}

// mask applies the word filter to a message text.
func (s *Server) mask(text string) string {
	out, _ := s.filter.Mask(text)
	return out
}
