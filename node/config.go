package node

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"chatcluster/accounts"
	"chatcluster/cluster"
	"chatcluster/handler"
	"chatcluster/internal/redisconn"
	"chatcluster/protocol"
	"chatcluster/webhook"
)

// Config is everything a node needs. Zero fields take the defaults of
// DefaultConfig where noted.
type Config struct {
	ID         string // unique node id, e.g. "n1"
	Listen     string // client WebSocket listener, host:port
	Advertise  string // WebSocket URL clients are told to use; default ws://<Listen>/ws (see addr.go)
	PeerListen string // peer-link listener, host:port; never the client port
	// PeerAdvertise is the host:port the other nodes dial for the peer
	// link; default PeerListen (see addr.go).
	PeerAdvertise string

	// TLSCertFile and TLSKeyFile, both or neither, make the client
	// listener serve TLS (wss://): a PEM certificate chain and its key.
	// The default Advertise is then wss://<Listen>/ws. See tls.go.
	TLSCertFile, TLSKeyFile string
	// PeerTLSCertFile, PeerTLSKeyFile and PeerTLSCAFile, all three or
	// none, add mutual TLS to the peer link, on top of the cluster
	// secret: this node's certificate and key, and the cluster's CA,
	// which must have signed the certificate of every node it links to.
	PeerTLSCertFile, PeerTLSKeyFile, PeerTLSCAFile string
	// AdminListen is the admin listener, host:port: GET /metrics and
	// /debug/pprof/. "" opens none. Never the client or peer port.
	AdminListen string

	ZK               []string // ZooKeeper servers, host:port (cluster.ParseConnectString)
	ZKChroot         string   // the connection string's chroot; "" none
	ZKRoot           string
	ZKSessionTimeout time.Duration
	// ZKAuth is the cluster's ZooKeeper digest credential (see
	// cluster.Config.Auth); zero: world-writable znodes.
	ZKAuth cluster.Credential

	Redis       redisconn.Config // one server, or a Sentinel set
	RedisPrefix string
	// RedisWaitReplicas, when above 0, makes every stored message wait (at
	// most RedisWaitTimeout) until that many replicas have it before it is
	// acknowledged: a master lost to a failover then takes no
	// acknowledged message with it (docs/protocol.md, 7).
	RedisWaitReplicas int
	RedisWaitTimeout  time.Duration
	Mongo             string // mongodb:// URI
	MongoDB           string // database name

	Secret []byte // shared cluster secret for the peer link, at least 16 bytes

	// A client's send queue (see frameQueue): SendQueue frames may wait
	// for its write loop at any time; more are accepted while the write
	// loop keeps taking them, and a queue that stays at SendQueue or more
	// for SlowClientTimeout marks the client too slow. SendQueueBytes
	// bounds the bytes waiting, whatever the time.
	SendQueue         int
	SendQueueBytes    int
	SlowClientTimeout time.Duration
	PeerQueue         int           // frames queued per peer link / while no leader
	WriteTimeout      time.Duration // per client write
	PingInterval      time.Duration // server ping to clients; a client silent for 2x is dropped
	DrainTimeout      time.Duration // how long Close lets clients go before closing them
	RequestTimeout    time.Duration // bound for one client request's store calls
	RateLimit         float64       // client requests per second (burst 2x)

	// BcryptCost is the bcrypt cost of the hash a password login of an
	// unknown name is checked against, so it takes as long as a wrong
	// password (stored hashes carry their own cost). 0: bcrypt.DefaultCost.
	BcryptCost int

	// LoginThrottle throttles failed password logins (WebSocket login with
	// a password), sharing its counters through Redis with the gateways and
	// the other nodes.
	LoginThrottle accounts.ThrottleConfig

	WordFilterFile string        // word list of the dirty-word filter; "" filters nothing
	HotWordsReset  time.Duration // how often the leader resets the hot-word ranking; 0 never
	// SupportGrace is how long an agent holding support conversations may
	// be offline before the leader puts them back in the queue.
	SupportGrace time.Duration
	// HotWordsDirect counts the words of direct messages too. Off by
	// default: the ranking is public, and direct messages are private.
	HotWordsDirect bool

	// LoginPolicy says how many connections a user may hold at once:
	// PolicySingle (the default), one, a new login kicking the older; or
	// PolicyMulti, one per device, up to MaxDevices, the oldest kicked
	// beyond. It is the cluster's: every node must run the same one.
	LoginPolicy string
	MaxDevices  int // devices per user under PolicyMulti, 1 to MaxDevicesLimit

	// EditWindow is how long after sending it its author may edit a
	// message, RecallWindow how long the author may recall it. Operators
	// (users, by their own names) may recall any message of a
	// conversation they can read, at any time, as a room's owner may in
	// the room. For rooms the leader's settings count: set them alike on
	// every node.
	EditWindow   time.Duration
	RecallWindow time.Duration
	Operators    []string

	// Webhooks are the webhook endpoints and the before-message hook
	// (package webhook); the zero value: none. Give every node the same.
	Webhooks webhook.Config

	Logger zerolog.Logger

	// Set by Validate: Advertise and PeerAdvertise were derived from the
	// listen addresses, so a port 0 in them is the port bound (Start).
	advertiseDerived, peerAdvertiseDerived bool
}

// Login policies (Config.LoginPolicy).
const (
	PolicySingle = "single"
	PolicyMulti  = "multi"
)

// MaxDevicesLimit bounds Config.MaxDevices: every login of a user reads
// all of the user's sessions.
const MaxDevicesLimit = 100

// DefaultConfig returns a Config with every default filled in and no
// addresses.
func DefaultConfig() Config {
	return Config{
		ZKRoot:            "/chat",
		ZKSessionTimeout:  2 * time.Second,
		RedisPrefix:       "chat:",
		RedisWaitTimeout:  100 * time.Millisecond,
		MongoDB:           "chat",
		SendQueue:         1024,
		SendQueueBytes:    64 << 20,
		SlowClientTimeout: 10 * time.Second,
		PeerQueue:         65536,
		WriteTimeout:      10 * time.Second,
		PingInterval:      30 * time.Second,
		DrainTimeout:      5 * time.Second,
		RequestTimeout:    5 * time.Second,
		RateLimit:         200,
		HotWordsReset:     24 * time.Hour,
		SupportGrace:      60 * time.Second,
		LoginPolicy:       PolicySingle,
		MaxDevices:        5,
		EditWindow:        handler.DefaultEditWindow,
		RecallWindow:      handler.DefaultRecallWindow,
		LoginThrottle:     accounts.DefaultThrottle(),
		Logger:            zerolog.Nop(),
	}
}

// Validate checks the configuration and fills Advertise and PeerAdvertise.
func (c *Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("node id is required (--id)"))
	}
	for name, addr := range map[string]string{"listen": c.Listen, "peer-listen": c.PeerListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", name, addr, err))
		}
	}
	if c.Listen != "" && c.Listen == c.PeerListen && !strings.HasSuffix(c.Listen, ":0") { // port 0: two ports the kernel picks
		errs = append(errs, errors.New("--listen and --peer-listen must differ: peers and clients never share a port"))
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			errs = append(errs, fmt.Errorf("--admin-listen %q: %w", c.AdminListen, err))
		}
		if c.AdminListen == c.Listen || c.AdminListen == c.PeerListen {
			errs = append(errs, errors.New("--admin-listen must differ from --listen and --peer-listen: metrics and pprof never share a client or peer port"))
		}
	}
	errs = append(errs, c.checkTLS()...)
	errs = append(errs, c.checkAdvertised()...)
	if len(c.ZK) == 0 {
		errs = append(errs, errors.New("at least one ZooKeeper server is required (--zk)"))
	}
	if err := c.Redis.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.RedisWaitReplicas < 0 {
		errs = append(errs, errors.New("--redis-wait-replicas must not be negative"))
	}
	if c.RedisWaitReplicas > 0 && c.RedisWaitTimeout <= 0 {
		errs = append(errs, errors.New("--redis-wait-timeout must be positive with --redis-wait-replicas"))
	}
	if c.Mongo == "" {
		errs = append(errs, errors.New("a MongoDB URI is required (--mongo)"))
	}
	if len(c.Secret) < 16 {
		errs = append(errs, errors.New("the cluster secret must be at least 16 bytes (--cluster-secret-file)"))
	}
	if c.BcryptCost != 0 && (c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost) {
		errs = append(errs, fmt.Errorf("--bcrypt-cost %d must be between %d and %d", c.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost))
	}
	if err := c.LoginThrottle.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.SupportGrace < time.Second {
		errs = append(errs, fmt.Errorf("--support-grace %v: must be at least 1s", c.SupportGrace))
	}
	switch c.LoginPolicy {
	case PolicySingle:
	case PolicyMulti:
		if c.MaxDevices < 1 || c.MaxDevices > MaxDevicesLimit {
			errs = append(errs, fmt.Errorf("--max-devices %d must be between 1 and %d", c.MaxDevices, MaxDevicesLimit))
		}
	default:
		errs = append(errs, fmt.Errorf("--login-policy %q must be %q or %q", c.LoginPolicy, PolicySingle, PolicyMulti))
	}
	if c.EditWindow <= 0 || c.RecallWindow <= 0 {
		errs = append(errs, errors.New("--edit-window and --recall-window must be positive"))
	}
	for _, op := range c.Operators {
		if !protocol.ValidName(op) {
			errs = append(errs, fmt.Errorf("--operators: %q is not a user name", op))
		}
	}
	if c.HotWordsReset < 0 {
		errs = append(errs, errors.New("--hot-words-reset must not be negative"))
	}
	if c.SendQueue <= 0 || c.PeerQueue <= 0 || c.SendQueueBytes <= 0 {
		errs = append(errs, errors.New("queue sizes must be positive"))
	}
	if c.SendQueueBytes > 0 && c.SendQueueBytes < 2*protocol.MaxFrameSize {
		errs = append(errs, fmt.Errorf("--send-queue-bytes %d must hold at least two frames of the largest size (%d bytes)", c.SendQueueBytes, 2*protocol.MaxFrameSize))
	}
	if c.SlowClientTimeout <= 0 {
		errs = append(errs, errors.New("--slow-client-timeout must be positive"))
	}
	if err := c.Webhooks.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// eventPolicy is who may edit and recall which message, as configured.
func (c *Config) eventPolicy() handler.EventPolicy {
	ops := make(map[string]bool, len(c.Operators))
	for _, op := range c.Operators {
		ops[op] = true
	}
	return handler.EventPolicy{EditWindow: c.EditWindow, RecallWindow: c.RecallWindow, Operators: ops}
}
