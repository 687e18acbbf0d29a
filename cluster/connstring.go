package cluster

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"
)

// DefaultPort is the port ParseConnectString gives a server named without
// one, as ZooKeeper's own clients do.
const DefaultPort = 2181

var (
	// ErrConnectString wraps every problem ParseConnectString finds.
	ErrConnectString = errors.New("cluster: malformed ZooKeeper connection string")
	// ErrCredential wraps every problem ParseCredential finds. Its
	// messages never contain the password.
	ErrCredential = errors.New("cluster: malformed ZooKeeper credential")
)

// ParseConnectString splits a ZooKeeper connection string in ZooKeeper's
// own form: servers separated by commas, then optionally the chroot, an
// absolute path right after the last server:
//
//	host1:2181,host2:2181,host3:2181/chat
//
// It returns the servers as host:port (DefaultPort where none is given;
// an IPv6 address goes in brackets) and the chroot for Config.Chroot
// ("" when there is none; a chroot of "/" alone is none too). Spaces
// around a server are ignored. Every error wraps ErrConnectString and
// says what is wrong where.
func ParseConnectString(s string) (servers []string, chroot string, err error) {
	bad := func(format string, args ...any) ([]string, string, error) {
		return nil, "", fmt.Errorf("%w %q: "+format, append([]any{ErrConnectString, s}, args...)...)
	}
	hosts := strings.TrimSpace(s)
	if i := strings.IndexByte(hosts, '/'); i >= 0 {
		hosts, chroot = hosts[:i], hosts[i:]
		switch {
		case strings.Contains(chroot, ","):
			return bad("the chroot goes after the last server (%q)", chroot)
		case chroot == "/":
			chroot = ""
		default:
			if why := validRoot(chroot); why != "" {
				return bad("chroot %q: %s", chroot, why)
			}
		}
	}
	if strings.TrimSpace(hosts) == "" {
		return bad("no servers (want host:port,host:port[/chroot])")
	}
	for i, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		addr, why := serverAddr(h)
		if why != "" {
			return bad("server %d (%q): %s", i+1, h, why)
		}
		servers = append(servers, addr)
	}
	return servers, chroot, nil
}

// serverAddr returns h as host:port, or why it is not a server address.
func serverAddr(h string) (string, string) {
	switch {
	case h == "":
		return "", "empty (two commas in a row, or one at an end?)"
	case strings.ContainsFunc(h, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return "", "contains a space or control character"
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"):
		h += ":" + strconv.Itoa(DefaultPort) // [v6 address]
	case !strings.Contains(h, ":"):
		h += ":" + strconv.Itoa(DefaultPort)
	case strings.Count(h, ":") > 1 && !strings.HasPrefix(h, "["):
		return "", "an IPv6 address goes in brackets: [address]:port"
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		return "", "want host:port"
	}
	if host == "" {
		return "", "no host before the port"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Sprintf("port %q is not a number from 1 to 65535", port)
	}
	return h, ""
}

// Credential is a ZooKeeper digest credential: the identity the cluster's
// nodes authenticate as, and which the cluster's znodes' ACL admits.
// Every node of a cluster has the same one. String and GoString hide the
// password, so a Credential can be logged or printed with a Config.
type Credential struct {
	User     string
	Password string
}

// ParseCredential reads "user:password" (surrounding white space, such as
// the line break that ends a file, is dropped). The user may not contain
// ":" or white space; the password may contain anything but line breaks
// and other control characters. Every error wraps ErrCredential and never
// contains the password.
func ParseCredential(s string) (Credential, error) {
	user, pw, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Credential{}, fmt.Errorf("%w: want user:password on one line", ErrCredential)
	}
	c := Credential{User: user, Password: pw}
	if why := c.validate(); why != "" {
		return Credential{}, fmt.Errorf("%w: %s", ErrCredential, why)
	}
	return c, nil
}

// validate returns why c cannot be used, or "".
func (c Credential) validate() string {
	switch {
	case c.User == "":
		return "no user name before the colon"
	case strings.ContainsFunc(c.User, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return "the user name contains a colon, a space or a control character"
	case c.Password == "":
		return "empty password"
	case strings.ContainsFunc(c.Password, unicode.IsControl):
		return "the password contains a line break or another control character (one line, user:password)"
	}
	return ""
}

// IsZero reports whether c is no credential at all.
func (c Credential) IsZero() bool { return c == Credential{} }

// String is "user:***", or "none".
func (c Credential) String() string {
	if c.IsZero() {
		return "none"
	}
	return c.User + ":***"
}

// GoString is String, so %#v hides the password too.
func (c Credential) GoString() string { return c.String() }

// auth is the credential as AddAuth takes it.
func (c Credential) auth() []byte { return []byte(c.User + ":" + c.Password) }
