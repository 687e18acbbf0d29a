package peerlink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"

	"chatcluster/internal/keypair"
	"chatcluster/internal/wsconn"
)

// Mutual TLS on the peer link, in addition to the cluster secret. With it
// a node's peer listener accepts only connections that present a
// certificate the cluster's CA signed, and a leader dialling a node checks
// the node's certificate against the same CA and against the host of the
// peer address the node publishes (an IP address must be one of the
// certificate's IP SANs, a name one of its DNS SANs). Either end without
// TLS fails the link with an error that says so: a link never falls back
// to plain text.

// Errors of Dial that are about TLS.
var (
	// ErrTLSMismatch: one end of the link uses TLS and the other does not.
	ErrTLSMismatch = errors.New("peerlink: one end of the link uses TLS and the other does not")
	// ErrPeerCertificate: the certificate of one end was refused by the
	// other.
	ErrPeerCertificate = errors.New("peerlink: peer certificate refused")
)

// TLS is this node's certificate for the peer link and the cluster's CA.
// Its methods are safe for concurrent use.
type TLS struct {
	pair   *keypair.Pair
	caFile string
	cas    atomic.Pointer[x509.CertPool]
}

// LoadTLS reads this node's certificate and key and the cluster's CA
// certificates from PEM files.
func LoadTLS(certFile, keyFile, caFile string) (*TLS, error) {
	p, err := keypair.Load(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	t := &TLS{pair: p, caFile: caFile}
	pool, err := keypair.LoadCAs(caFile)
	if err != nil {
		return nil, err
	}
	t.cas.Store(pool)
	return t, nil
}

// Reload reads the files again, for links opened from now on. If either
// the CA or the certificate does not load, what is in use stays.
func (t *TLS) Reload() error {
	pool, err := keypair.LoadCAs(t.caFile)
	if err != nil {
		return err
	}
	if err := t.pair.Reload(); err != nil {
		return err
	}
	t.cas.Store(pool)
	return nil
}

// serverConfig is the peer listener's: TLS 1.3, and a client certificate
// the CA signed is required.
func (t *TLS) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return &tls.Config{
				MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
				GetCertificate: t.pair.GetCertificate,
				ClientAuth:     tls.RequireAndVerifyClientCert, ClientCAs: t.cas.Load(),
			}, nil
		},
	}
}

// clientConfig is a dialling leader's; the server name is the host of
// the URL dialled, set by the dialer.
func (t *TLS) clientConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: t.cas.Load(), GetClientCertificate: t.pair.GetClientCertificate}
}

// Listen makes ln, a TCP listener, a peer listener: what the write loop
// of a link writes leaves in batches (wsconn), under TLS when t is set.
// Without t, a dialling node that speaks TLS to it is logged on log; with
// t, a failed handshake is logged by the HTTP server's ErrorLog.
func Listen(ln net.Listener, t *TLS, log zerolog.Logger) net.Listener {
	if t == nil {
		return wsconn.Listen(sniffListener{Listener: ln, log: log}, nil)
	}
	return tls.NewListener(wsconn.Listen(ln, nil), t.serverConfig())
}

// sniffListener logs connections whose first byte opens a TLS handshake
// (0x16), which a plain peer listener cannot serve; what they send still
// goes to the HTTP server, which answers it 400.
type sniffListener struct {
	net.Listener
	log zerolog.Logger
}

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, log: l.log}, nil
}

// sniffConn looks at the first byte read. Its reads are made by one
// goroutine at a time (the HTTP server's, then the link's read loop).
type sniffConn struct {
	net.Conn
	log     zerolog.Logger
	checked bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.checked && n > 0 {
		c.checked = true
		if p[0] == 0x16 {
			c.log.Warn().Str("remote", c.RemoteAddr().String()).
				Msg("peer link refused: the dialling node speaks TLS and this peer listener does not; give both ends --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file, or neither")
		}
	}
	return n, err
}

// ErrorLog is the error log of the peer listener's HTTP server: failed
// TLS handshakes are logged at WARN with the dialling address and why,
// other lines as they come.
func ErrorLog(l zerolog.Logger) *log.Logger {
	return log.New(errorLogWriter{l}, "", 0)
}

type errorLogWriter struct{ l zerolog.Logger }

func (w errorLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, "http: TLS handshake error from ")
	if !ok {
		w.l.Warn().Str("err", line).Msg("peer listener")
		return len(p), nil
	}
	remote, why, _ := strings.Cut(rest, ": ")
	ev := w.l.Warn().Str("remote", remote).Str("err", why)
	switch {
	case strings.Contains(why, "HTTP request to an HTTPS server"):
		ev.Msg("peer link refused: the dialling node speaks plain text and this peer listener requires TLS; give both ends --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file, or neither")
	case strings.Contains(why, "unknown authority") || strings.Contains(why, "certificate"):
		ev.Msg("peer link refused: TLS handshake failed over a certificate; every node's certificate must be signed by the CA of --peer-tls-ca-file, and name the host of its --peer-advertise")
	default:
		ev.Msg("peer link refused: TLS handshake failed")
	}
	return len(p), nil
}

// dialError says why dialling target at addr failed, for a log line an
// operator can act on. resp is the HTTP answer, if any.
func dialError(target, addr string, withTLS bool, resp *http.Response, err error) error {
	if resp != nil {
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		}
		if !withTLS && resp.StatusCode == http.StatusBadRequest && strings.Contains(string(body), "HTTPS server") {
			return fmt.Errorf("%w: peer %s at %s requires TLS on its peer listener and this node has no peer TLS; give it --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file too",
				ErrTLSMismatch, target, addr)
		}
		if why := strings.TrimSpace(string(body)); why != "" {
			return fmt.Errorf("peer %s refused the link: %s: %s", target, resp.Status, why)
		}
		return fmt.Errorf("peer %s refused the link: %s", target, resp.Status)
	}
	if !withTLS {
		return err
	}
	var rh tls.RecordHeaderError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var op *net.OpError
	switch {
	case errors.As(err, &rh):
		return fmt.Errorf("%w: peer %s at %s does not speak TLS on its peer listener; give it --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file too (%v)",
			ErrTLSMismatch, target, addr, err)
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: peer %s at %s presented a certificate the cluster's CA (--peer-tls-ca-file) did not sign: %v", ErrPeerCertificate, target, addr, err)
	case errors.As(err, &host):
		return fmt.Errorf("%w: the certificate of peer %s is not valid for %s, the address it publishes: its --peer-advertise host must be one of the certificate's names: %v",
			ErrPeerCertificate, target, addr, err)
	case errors.As(err, &op) && op.Op == "remote error":
		return fmt.Errorf("%w: peer %s at %s refused this node's certificate (is it signed by the CA that node trusts?): %v", ErrPeerCertificate, target, addr, err)
	}
	return err
}
