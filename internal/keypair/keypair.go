package keypair

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Pair is a certificate chain and its private key, read from two PEM
// files. Its methods are safe for concurrent use.
type Pair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// Load reads certFile and keyFile. It fails if they do not hold a
// certificate and its key, or if the certificate has expired or is not
// valid yet.
func Load(certFile, keyFile string) (*Pair, error) {
	p := &Pair{certFile: certFile, keyFile: keyFile}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload reads the files again; on error the certificate in use stays.
func (p *Pair) Reload() error {
	c, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		return fmt.Errorf("keypair: %s and %s: %w", p.certFile, p.keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("keypair: %s: %w", p.certFile, err)
		}
	}
	now := time.Now()
	switch {
	case now.After(c.Leaf.NotAfter):
		return fmt.Errorf("keypair: the certificate in %s expired at %s", p.certFile, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.Leaf.NotBefore):
		return fmt.Errorf("keypair: the certificate in %s is not valid before %s", p.certFile, c.Leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	p.cur.Store(&c)
	return nil
}

// Certificate is the certificate in use.
func (p *Pair) Certificate() *tls.Certificate { return p.cur.Load() }

// CertFile is the file the certificate is read from.
func (p *Pair) CertFile() string { return p.certFile }

// GetCertificate is for tls.Config.GetCertificate: a server's certificate.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.cur.Load(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate: the
// certificate a client presents.
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.cur.Load(), nil
}

// ServerConfig is the TLS configuration of an HTTPS or wss listener
// serving the pair's certificate: TLS 1.2 or newer, HTTP/1.1 only (a
// WebSocket upgrade is an HTTP/1.1 request).
func (p *Pair) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: p.GetCertificate, NextProtos: []string{"http/1.1"}}
}

// errNoCA: a CA file holds no certificate.
var errNoCA = errors.New("keypair: no PEM certificate in the CA file")

// LoadCAs reads the PEM certificates of file into a pool.
func LoadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keypair: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w %s", errNoCA, file)
	}
	return pool, nil
}
