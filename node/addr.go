package node

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// What a node binds and what it publishes. The client and peer listeners
// bind Listen and PeerListen; in ZooKeeper the node publishes where the
// gateway's clients and the leader reach them, Advertise and
// PeerAdvertise. On one machine the two are the same and the published
// addresses default to the bound ones. On several hosts a node usually
// binds every address (0.0.0.0:9001) and publishes a name or address the
// others can dial (ws://host-a:9001/ws, host-a:9101): a wildcard, or no
// host at all, is never published, since nobody can dial it.

// wildcard reports whether host, of a listen address, binds every address
// of the machine: "", 0.0.0.0 or ::.
func wildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// dialable reports whether host, of an address to publish, names something
// another machine can dial: not empty and not a wildcard.
func dialable(host string) bool { return !wildcard(host) }

// clientScheme is the scheme of the client URL the node serves.
func (c *Config) clientScheme() string {
	if c.TLSCertFile != "" {
		return "wss"
	}
	return "ws"
}

// checkAdvertised checks what the node would publish and fills Advertise
// and PeerAdvertise when they were not given. Listen and PeerListen have
// been checked to be host:port already, or an error says they are not.
func (c *Config) checkAdvertised() []error {
	var errs []error
	scheme := c.clientScheme()
	if c.Advertise == "" {
		if host, port, err := net.SplitHostPort(c.Listen); err == nil {
			if wildcard(host) {
				errs = append(errs, fmt.Errorf("--listen %q binds every address, so it gives no URL to publish: set --advertise to the URL clients reach this node at, e.g. --advertise %s://<this host's name or address>:%s/ws", c.Listen, scheme, port))
			} else {
				c.Advertise = scheme + "://" + net.JoinHostPort(host, port) + "/ws"
				c.advertiseDerived = true
			}
		}
	} else if err := checkClientURL(c.Advertise, scheme); err != nil {
		errs = append(errs, err)
	}
	if c.PeerAdvertise == "" {
		if host, port, err := net.SplitHostPort(c.PeerListen); err == nil {
			if wildcard(host) {
				errs = append(errs, fmt.Errorf("--peer-listen %q binds every address, so it gives no address to publish: set --peer-advertise to the host:port the other nodes reach this node's peer listener at, e.g. --peer-advertise <this host's name or address>:%s", c.PeerListen, port))
			} else {
				c.PeerAdvertise = c.PeerListen
				c.peerAdvertiseDerived = true
			}
		}
	} else if err := checkPeerAddr(c.PeerAdvertise); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkClientURL checks an --advertise URL: ws:// or wss://, with a host
// that can be dialled and, if it has one, a port that can.
func checkClientURL(raw, scheme string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return fmt.Errorf("--advertise %q must be a ws:// or wss:// URL, e.g. %s://host-a:9001/ws", raw, scheme)
	}
	if !dialable(u.Hostname()) {
		return fmt.Errorf("--advertise %q names no host clients can dial: give this node's host name or address, e.g. %s://host-a:9001/ws", raw, u.Scheme)
	}
	if p := u.Port(); p != "" && !validPort(p) {
		return fmt.Errorf("--advertise %q: port %q is not one clients can dial (1 to 65535)", raw, p)
	}
	// Without TLS here a wss:// URL is fine (TLS ends at a proxy in front);
	// with it, clients told ws:// would speak plain text to a TLS port.
	if scheme == "wss" && u.Scheme == "ws" {
		return fmt.Errorf("--advertise %q is ws:// but the client listener serves TLS (--tls-cert-file): publish wss://%s", raw, strings.TrimPrefix(raw, "ws://"))
	}
	return nil
}

// checkPeerAddr checks a --peer-advertise address: host:port, both of
// which another node can dial.
func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		return fmt.Errorf("--peer-advertise %q must be host:port, e.g. host-a:9101: %w", addr, err)
	case !dialable(host):
		return fmt.Errorf("--peer-advertise %q names no host the other nodes can dial: give this node's host name or address, e.g. host-a:%s", addr, port)
	case !validPort(port):
		return fmt.Errorf("--peer-advertise %q: port %q is not one the other nodes can dial (1 to 65535)", addr, port)
	}
	return nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535
}

// publish fills in the port the kernel picked for a derived address whose
// listen port was 0 (tests, and nodes given --listen host:0), once the
// listeners are bound: what is published is always what can be dialled.
func (c *Config) publish(client, peer net.Addr) {
	if c.advertiseDerived {
		if host, port, err := net.SplitHostPort(c.Listen); err == nil && port == "0" {
			c.Advertise = c.clientScheme() + "://" + net.JoinHostPort(host, boundPort(client)) + "/ws"
		}
	}
	if c.peerAdvertiseDerived {
		if host, port, err := net.SplitHostPort(c.PeerListen); err == nil && port == "0" {
			c.PeerAdvertise = net.JoinHostPort(host, boundPort(peer))
		}
	}
}

func boundPort(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return strconv.Itoa(t.Port)
	}
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// warnLoopback warns when the node publishes a loopback address although
// it reaches ZooKeeper at one that is not: the cluster then spans hosts,
// and nodes on the others cannot dial this one. (A loopback address is
// what a node on one machine publishes by default, so it is not refused.)
func (s *Server) warnLoopback() {
	remoteZK := ""
	for _, z := range s.cfg.ZK {
		if host, _, err := net.SplitHostPort(z); err == nil && !loopback(host) {
			remoteZK = z
			break
		}
	}
	if remoteZK == "" {
		return
	}
	if u, err := url.Parse(s.cfg.Advertise); err == nil && loopback(u.Hostname()) {
		s.log.Warn().Str("ws", s.cfg.Advertise).Str("zk", remoteZK).
			Msg("this node publishes a loopback client URL but ZooKeeper is on another address: clients on other hosts cannot reach it; set --advertise")
	}
	if host, _, err := net.SplitHostPort(s.cfg.PeerAdvertise); err == nil && loopback(host) {
		s.log.Warn().Str("peer", s.cfg.PeerAdvertise).Str("zk", remoteZK).
			Msg("this node publishes a loopback peer address but ZooKeeper is on another address: a leader on another host cannot link to it; set --peer-advertise")
	}
}

// loopback reports whether host is localhost or a loopback address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
