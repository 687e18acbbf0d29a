package cluster

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"
)

// Defaults applied by New to a zero Config field.
const (
	DefaultRoot           = "/chat"
	DefaultSessionTimeout = 2 * time.Second
)

// Errors returned by this package. Test them with errors.Is.
var (
	// ErrConfig wraps every problem Config.Validate finds.
	ErrConfig = errors.New("cluster: invalid config")
	// ErrDuplicateID means <root>/nodes/<id> is held by another live
	// ZooKeeper session: another process runs with the same node id.
	ErrDuplicateID = errors.New("cluster: node id already registered by another live process")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrStarted is returned by a second call to Start.
	ErrStarted = errors.New("cluster: already started")
	// ErrNotConnected is returned by CurrentLeader when the client has no
	// live ZooKeeper session (not started, disconnected or closed).
	ErrNotConnected = errors.New("cluster: not connected to ZooKeeper")
	// ErrNoLeader is returned by CurrentLeader when nobody is in the
	// election.
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrAccess means ZooKeeper refused this node a change to the cluster's
	// znodes (NoAuth): their ACL does not admit the node's credential, or
	// the node has none and they have an ACL.
	ErrAccess = errors.New("cluster: ZooKeeper denied access to the cluster's znodes")
)

// Member is what a node publishes about itself, as JSON, in its nodes and
// election znodes.
type Member struct {
	ID   string `json:"id"`   // unique node id, also the znode name under <root>/nodes
	WS   string `json:"ws"`   // client WebSocket URL
	Peer string `json:"peer"` // peer-link address
	// Run tells runs of the same id apart (the node's start time, unix
	// ns): state a node left behind names the run that wrote it.
	Run int64 `json:"run,omitempty"`
}

// Config configures a Cluster. Zero fields take the defaults above.
type Config struct {
	// Servers are the ZooKeeper servers, "host:port" each (see
	// ParseConnectString).
	Servers []string
	// Chroot, if set, is the chroot of the connection string
	// ("host:2181,host2:2181/chroot"): an absolute path the cluster's
	// paths are relative to, so that its znodes are <Chroot><Root>/...
	// The ZooKeeper client has no chroot of its own; New applies it as a
	// prefix of Root. Start creates it if it is missing. "" is none.
	Chroot string
	// Root is the absolute ZooKeeper path everything lives under, below
	// Chroot. Default DefaultRoot.
	Root string
	// Auth is the cluster's ZooKeeper digest credential. With it, the
	// node authenticates its ZooKeeper client before its first request
	// (the client sends it again on every later connection and session),
	// creates every znode with an ACL that gives that identity every
	// permission and everyone else READ only, and at Start gives that ACL
	// to the cluster's persistent znodes still world-writable from a run
	// without credentials (see Cluster.Start). Zero: no credential, and
	// every znode world-writable, as ZooKeeper's default.
	Auth Credential
	// SessionTimeout is the ZooKeeper session timeout asked for; the server
	// clamps it to [2, 20] ticks. A dead node's znodes go away, and a new
	// leader is elected, about this long after it stops. Default
	// DefaultSessionTimeout.
	SessionTimeout time.Duration
	// StaleWait is how long Start waits for <root>/nodes/<id> held by
	// another session to go away before it fails with ErrDuplicateID. It
	// lets a node that crashed be restarted at once: its old session still
	// holds the znode until the server expires it. Default 2*SessionTimeout.
	StaleWait time.Duration
	// Self describes this node. Self.ID is required.
	Self Member
	// Logger receives the package's logs (zero value: no logs).
	Logger zerolog.Logger
	// Observe, if set, is called after every ZooKeeper request with its
	// operation ("create", "get", "children", "auth", "getacl", ...), how
	// long it took and its error: nil when ZooKeeper answered, also when
	// the answer was "no node", "node exists" or "not authenticated". It
	// is called from the goroutine that made the request (the loop, or a
	// caller of CurrentLeader) and must not block.
	Observe func(op string, took time.Duration, err error)
}

func (c Config) withDefaults() Config {
	if c.Root == "" {
		c.Root = DefaultRoot
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.StaleWait == 0 {
		c.StaleWait = 2 * c.SessionTimeout
	}
	return c
}

// Validate reports every problem with c (after defaults) as one error that
// wraps ErrConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	if len(c.Servers) == 0 {
		bad("no ZooKeeper servers")
	}
	for _, s := range c.Servers {
		if strings.TrimSpace(s) == "" {
			bad("empty ZooKeeper server address")
		}
	}
	if err := validRoot(c.Root); err != "" {
		bad("root %q: %s", c.Root, err)
	}
	if c.Chroot != "" {
		if err := validRoot(c.Chroot); err != "" {
			bad("chroot %q: %s", c.Chroot, err)
		}
	}
	if !c.Auth.IsZero() {
		if err := c.Auth.validate(); err != "" {
			bad("ZooKeeper credential of user %q: %s", c.Auth.User, err)
		}
	}
	if c.SessionTimeout < 0 {
		bad("negative session timeout %s", c.SessionTimeout)
	}
	if c.StaleWait < 0 {
		bad("negative stale wait %s", c.StaleWait)
	}
	if err := validName(c.Self.ID); err != "" {
		bad("node id %q: %s", c.Self.ID, err)
	}
	return errors.Join(errs...)
}

// validRoot returns why p is not a usable absolute znode path, or "".
func validRoot(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "must start with /"
	}
	if p == "/" {
		return "must not be / itself"
	}
	if strings.HasSuffix(p, "/") {
		return "must not end with /"
	}
	for _, part := range strings.Split(p[1:], "/") {
		if why := validName(part); why != "" {
			return why
		}
	}
	return ""
}

// validName returns why s cannot be one znode name, or "".
func validName(s string) string {
	switch {
	case s == "":
		return "empty"
	case s == "." || s == "..":
		return "reserved name"
	case strings.Contains(s, "/"):
		return "contains /"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return "contains a space or control character"
		}
	}
	return ""
}
