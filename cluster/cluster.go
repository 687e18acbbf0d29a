package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/rs/zerolog"
)

// Leader identifies the current leader.
type Leader struct {
	ID    string // node id; "" when unknown
	Epoch int64  // czxid of the leader's election znode: grows with every new leader
	Peer  string // the leader's peer-link address
}

// State is one snapshot of what this node knows. A snapshot is never
// modified once published: treat Members as read-only.
type State struct {
	Connected bool     // false while the ZooKeeper client has no live session: pause leader duties
	Members   []Member // live nodes under <root>/nodes, sorted by ID; last known while disconnected
	Leader    Leader   // zero ID when unknown; last known while disconnected
	IsLeader  bool     // this node leads and is connected with a valid session
	Session   int64    // ZooKeeper session id the node is (or was last) registered with
	// Since is when the node published this snapshot. A reader that acts
	// on it later (a term takes a moment to start) acts on what was true
	// then: logs carry it so an operator can tell the two apart.
	Since time.Time
}

// Cluster is one node's membership in the chat cluster.
//
// New wires it, Start connects and registers, Close leaves. State, Updates
// and CurrentLeader may be called from any goroutine.
//
// Goroutines: after Start, one loop goroutine (run) owns every ZooKeeper
// write and every published State; Close starts one shutdown goroutine that
// takes over when the loop has ended (a failed Start closes the client in
// a goroutine of its own, which Close waits for). The ZooKeeper client runs
// its own goroutines, which end when the client is closed.
type Cluster struct {
	cfg          Config
	log          zerolog.Logger
	base         string   // <chroot><root>: the one place the chroot is applied; <root> in the comments
	nodesPath    string   // <root>/nodes
	electionPath string   // <root>/election
	termPath     string   // <root>/term
	selfPath     string   // <root>/nodes/<id>
	selfData     []byte   // Self as JSON
	acl          []zk.ACL // of every znode the cluster creates, see clusterACL
	parents      []string // persistent znodes a node needs, from the top (persistentPaths)
	owned        []string // persistent znodes whose ACL Start mends (persistentPaths)

	updates  chan State    // cap 1, latest wins; sent to only by the loop owner, closed by shutdown
	kick     chan struct{} // cap 1; the event callback wakes the loop owner
	pending  atomic.Uint32 // flag* bits set by the event callback, taken by the loop owner
	stop     chan struct{} // closed once by Close
	loopDone chan struct{} // closed when the loop owner (Start, then run) is done
	closed   chan struct{} // closed when shutdown has finished

	closeOnce    sync.Once
	teardownOnce sync.Once

	mu sync.Mutex // guards the fields below; never held across a ZooKeeper call
	// conn is set once by Start, under mu, before the loop runs; the loop
	// owner reads it without mu, everyone else under mu.
	conn     *zkConn
	events   <-chan zk.Event
	started  bool
	closing  bool
	netConn  net.Conn // the client's latest TCP connection (see dial)
	dials    uint64   // connections dial opened: tells authenticate of a reconnect
	noDial   bool     // teardown began: dial refuses new connections
	cur      State    // last published snapshot
	own      string   // own election znode name, "" when not in the election
	watching string   // election znode name watched (the predecessor), "" when none

	// ls is owned by the loop owner: Start until it starts run, then run,
	// then shutdown once loopDone is closed. Nothing else touches it.
	ls loopState
}

// New validates cfg, applies the defaults and wires a Cluster. It starts no
// goroutine and opens no connection.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Servers = slices.Clone(cfg.Servers)
	data, err := json.Marshal(cfg.Self)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode self: %w", err)
	}
	base := cfg.Chroot + cfg.Root
	parents, owned := persistentPaths(cfg.Chroot, cfg.Root)
	return &Cluster{
		cfg:          cfg,
		log:          cfg.Logger, // the caller's context (node, component) as it is
		base:         base,
		nodesPath:    base + "/nodes",
		electionPath: base + "/election",
		termPath:     base + "/term",
		selfPath:     base + "/nodes/" + cfg.Self.ID,
		selfData:     data,
		acl:          clusterACL(cfg.Auth),
		parents:      parents,
		owned:        owned,
		updates:      make(chan State, 1),
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		loopDone:     make(chan struct{}),
		closed:       make(chan struct{}),
	}, nil
}

// Start connects to ZooKeeper, registers <root>/nodes/<id>, enters the
// election and reads the members and the leader. It returns once all that
// is done, so State is complete when it returns nil.
//
// With Config.Auth, Start first authenticates, then gives the cluster's
// ACL to its persistent znodes that are still world-writable (the chroot
// and what is below it, or the root without a chroot; nodes, election and
// term), each once and logged at WARN, so a cluster that ran without
// credentials is secured by its first node that has them. If ZooKeeper
// refuses a change (NoAuth: the znodes' ACL admits another credential, or
// this node has none), Start fails at once with an error wrapping
// ErrAccess that says which.
//
// If <root>/nodes/<id> is held by another session, Start waits up to
// Config.StaleWait for it to go (a crashed earlier run of this node), then
// fails with an error wrapping ErrDuplicateID. On any error, or when ctx
// ends first, Start closes its session, which removes whatever it had
// created; Close is still fine to call. Start may be called once.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closing:
		c.mu.Unlock()
		return ErrClosed
	case c.started:
		c.mu.Unlock()
		return ErrStarted
	}
	c.started = true
	c.mu.Unlock()

	conn, events, err := zk.Connect(c.cfg.Servers, c.cfg.SessionTimeout,
		zk.WithEventCallback(c.onEvent),
		zk.WithDialer(c.dial),
		zk.WithLogger(zkLogger{c.log}),
		zk.WithLogInfo(false))
	if err != nil {
		close(c.loopDone)
		return fmt.Errorf("cluster: connect: %w", err)
	}
	c.mu.Lock()
	c.conn, c.events = &zkConn{Conn: conn, observe: c.cfg.Observe}, events
	c.mu.Unlock()
	ev := c.log.Info().Strs("servers", c.cfg.Servers).Str("chroot", c.cfg.Chroot).Str("root", c.cfg.Root).
		Dur("session_timeout", c.cfg.SessionTimeout)
	if !c.cfg.Auth.IsZero() {
		ev = ev.Str("zk_user", c.cfg.Auth.User)
	}
	ev.Msg("joining cluster")

	var b backoff
	var lastErr error
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		err := c.step(true)
		if err == nil && c.ls.ready() {
			break
		}
		if errors.Is(err, ErrDuplicateID) || errors.Is(err, ErrAccess) {
			c.abandon()
			return err
		}
		var retry <-chan time.Time
		if err != nil {
			lastErr = err
			d := b.next()
			c.log.Debug().Err(err).Dur("retry_in", d).Msg("start: retrying")
			timer.Reset(d)
			retry = timer.C
		} else {
			b.reset()
		}
		select {
		case <-ctx.Done():
			c.abandon()
			if lastErr != nil {
				return fmt.Errorf("cluster: start: %w (last error: %v)", ctx.Err(), lastErr)
			}
			return fmt.Errorf("cluster: start: %w", ctx.Err())
		case <-c.stop:
			c.abandon()
			return ErrClosed
		case <-c.kick:
			timer.Stop()
		case <-retry:
		}
	}

	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.abandon()
		return ErrClosed
	}
	go c.run() // owned by the Cluster: ends on Close, signalled by loopDone
	c.mu.Unlock()
	return nil
}

// abandon undoes a failed Start: closing the client ends the session, which
// removes whatever ephemeral znodes it had created. Called by Start only.
// The client's shutdown runs in the background so that Start returns at
// once; Close waits for it.
func (c *Cluster) abandon() {
	c.ls.leaving = true
	s := c.ls.published
	s.Connected, s.IsLeader = false, false
	c.publish(s)
	c.ls = loopState{published: s}
	go c.teardown() // owned by Close, which waits for it through teardownOnce
	close(c.loopDone)
}

// Updates returns the channel of State snapshots. They come in order, from
// one goroutine; a reader that falls behind gets the latest snapshot
// (intermediate ones may be skipped, never reordered). The channel is
// closed by Close after a last snapshot with Connected and IsLeader false.
func (c *Cluster) Updates() <-chan State { return c.updates }

// State returns the latest published snapshot.
func (c *Cluster) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.cur
	s.Members = slices.Clone(s.Members)
	return s
}

// CurrentLeader reads the leader from ZooKeeper now, after a sync, for
// fencing checks: it fails with ErrNotConnected unless the session is live,
// and with ErrNoLeader when nobody is in the election. ctx is checked
// between round trips; each round trip is bounded by the ZooKeeper client
// (about two thirds of the session timeout when the server hangs).
func (c *Cluster) CurrentLeader(ctx context.Context) (Leader, error) {
	c.mu.Lock()
	conn, closing := c.conn, c.closing
	c.mu.Unlock()
	switch {
	case closing:
		return Leader{}, ErrClosed
	case conn == nil || conn.State() != zk.StateHasSession:
		return Leader{}, ErrNotConnected
	}
	if err := ctx.Err(); err != nil {
		return Leader{}, err
	}
	if _, err := conn.Sync(c.electionPath); err != nil {
		return Leader{}, fmt.Errorf("cluster: current leader: %w", err)
	}
	for range 5 {
		if err := ctx.Err(); err != nil {
			return Leader{}, err
		}
		names, _, err := conn.Children(c.electionPath)
		if err != nil {
			return Leader{}, fmt.Errorf("cluster: current leader: %w", err)
		}
		cands := sortElection(names)
		if len(cands) == 0 {
			return Leader{}, ErrNoLeader
		}
		l, err := c.readLeader(conn, cands[0])
		if errors.Is(err, zk.ErrNoNode) {
			continue // the leader just left: look again
		}
		if err != nil {
			return Leader{}, fmt.Errorf("cluster: current leader: %w", err)
		}
		return l, nil
	}
	return Leader{}, fmt.Errorf("cluster: current leader: election keeps changing: %w", ErrNoLeader)
}

// readLeader reads the election znode name and returns it as a Leader.
func (c *Cluster) readLeader(conn *zkConn, name string) (Leader, error) {
	data, stat, err := conn.Get(c.electionPath + "/" + name)
	if err != nil {
		return Leader{}, err
	}
	var m Member
	if err := json.Unmarshal(data, &m); err != nil {
		c.log.Warn().Err(err).Str("znode", name).Msg("malformed election znode")
	}
	return Leader{ID: m.ID, Epoch: stat.Czxid, Peer: m.Peer}, nil
}

// Close leaves the cluster and stops everything, in this order:
//
//  1. stop the loop: no more reaction to ZooKeeper events;
//  2. publish a State with IsLeader=false: leader duties end here;
//  3. delete the own election znode (the successor takes over at once);
//  4. delete <root>/nodes/<id> (the node drops out of the live list);
//  5. close the ZooKeeper session and wait for the client's goroutines;
//  6. close the Updates channel.
//
// Steps 3 and 4 are skipped when ZooKeeper is unreachable: the session
// expiry removes the znodes. Close is idempotent and safe to call
// concurrently. Each step is bounded even if ZooKeeper hangs: in total
// about one second then (the client waits that long for its close
// request), a few milliseconds when it answers. If ctx ends first, Close
// returns ctx's error and the steps still finish in the background; a
// later Close waits for them.
func (c *Cluster) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		close(c.stop)
		go c.shutdown() // owned by Close: signals c.closed when done
	})
	select {
	case <-c.closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: close: %w", ctx.Err())
	}
}

// shutdown carries out Close. It runs once, in its own goroutine.
func (c *Cluster) shutdown() {
	defer close(c.closed)
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started {
		close(c.updates)
		return
	}
	bound := time.NewTimer(c.cfg.SessionTimeout)
	select {
	case <-c.loopDone:
	case <-bound.C:
		// The loop is stuck in a ZooKeeper call to a hanging server:
		// closing the client makes every pending call return.
		c.log.Warn().Msg("close: loop still busy with ZooKeeper; closing the client")
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		if conn != nil {
			conn.Close()
		}
		<-c.loopDone
	}
	bound.Stop()

	// The loop has ended: this goroutine now owns c.ls.
	wasMember := c.ls.session != 0
	if wasMember {
		c.ls.leaving = true
		s := c.ls.published
		s.Connected, s.IsLeader = false, false
		c.publish(s)
		c.leave()
	}
	c.teardown()
	close(c.updates)
	if wasMember {
		c.log.Info().Msg("left the cluster")
	}
}

// leave deletes the own znodes if the session that created them is still
// live. Called by shutdown only.
func (c *Cluster) leave() {
	conn := c.conn
	ls := &c.ls
	if conn.State() != zk.StateHasSession || conn.SessionID() != ls.session {
		return
	}
	if ls.election != "" {
		if err := conn.Delete(c.electionPath+"/"+ls.election, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			c.log.Debug().Err(err).Msg("close: delete election znode")
		}
	}
	if ok, stat, err := conn.Exists(c.selfPath); err == nil && ok && stat.EphemeralOwner == ls.session {
		if err := conn.Delete(c.selfPath, stat.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
			c.log.Debug().Err(err).Msg("close: delete node znode")
		}
	}
}

// teardown closes the ZooKeeper client and waits until its goroutines have
// ended (the client closes its event channel last). Idempotent.
func (c *Cluster) teardown() {
	c.teardownOnce.Do(func() {
		c.mu.Lock()
		conn, events := c.conn, c.events
		c.mu.Unlock()
		if conn == nil {
			return
		}
		c.mu.Lock()
		c.noDial = true
		c.mu.Unlock()
		conn.Close() // sends the close request if the session is live
		// A connection to a hanging server may still block the client in
		// a read (its handshake waits up to 10x the read timeout):
		// closing the socket ends it now.
		c.mu.Lock()
		nc := c.netConn
		c.mu.Unlock()
		if nc != nil {
			nc.Close()
		}
		for range events {
		}
	})
}

// errNoDial is what dial returns once teardown has begun.
var errNoDial = errors.New("cluster: closing")

// dial is the ZooKeeper client's dialer. It keeps the latest connection so
// that teardown can close it, and refuses new ones once teardown began.
func (c *Cluster) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	no := c.noDial
	c.mu.Unlock()
	if no {
		return nil, errNoDial
	}
	nc, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noDial {
		nc.Close()
		return nil, errNoDial
	}
	c.netConn = nc
	c.dials++
	return nc, nil
}

// dialGen returns the number of connections dial has opened.
func (c *Cluster) dialGen() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// Event flags, set by onEvent and taken by the loop owner.
const (
	flagMembers  uint32 = 1 << iota // <root>/nodes children changed
	flagElection                    // the watched predecessor changed
	flagSelf                        // <root>/nodes/<id> changed
	flagResync                      // the client dropped its watches
)

// onEvent is the ZooKeeper client's event callback. The client calls it
// synchronously from its own goroutines, so it only records and signals.
func (c *Cluster) onEvent(ev zk.Event) {
	var f uint32
	switch {
	case ev.Type == zk.EventSession:
		// The loop reads the client's state and session itself.
	case ev.Type == zk.EventNotWatching:
		f = flagResync
	case ev.Path == c.nodesPath:
		f = flagMembers | flagElection
	case ev.Path == c.selfPath:
		f = flagSelf | flagMembers
	case path.Dir(ev.Path) == c.electionPath:
		f = flagElection
	}
	if f != 0 {
		c.pending.Or(f)
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// zkLogger sends the ZooKeeper client's own messages to DEBUG: the
// operator-facing events are logged by this package.
type zkLogger struct{ log zerolog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Debug().Str("source", "zookeeper-client").Msgf(format, args...)
}
