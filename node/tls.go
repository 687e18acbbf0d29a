package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"chatcluster/internal/keypair"
	"chatcluster/peerlink"
)

// TLS of the node's listeners. The client listener serves wss:// when
// given a certificate (Config.TLSCertFile); the peer link adds mutual TLS
// to the cluster secret when given a certificate and the cluster's CA
// (Config.PeerTLSCertFile). Either is loaded by New, so a node with
// unreadable or expired certificates does not start, and again by
// ReloadTLS (SIGHUP).

// checkTLS checks that the TLS files come in their sets.
func (c *Config) checkTLS() []error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together: give both for wss://, or neither"))
	}
	set := 0
	for _, f := range []string{c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile} {
		if f != "" {
			set++
		}
	}
	if set != 0 && set != 3 {
		errs = append(errs, errors.New("--peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file go together: give all three for mutual TLS on the peer link, or none"))
	}
	return errs
}

// loadTLS loads the certificates the configuration names. New only.
func (s *Server) loadTLS() error {
	if s.cfg.TLSCertFile != "" {
		p, err := keypair.Load(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("node: client TLS (--tls-cert-file): %w", err)
		}
		s.clientCert = p
	}
	if s.cfg.PeerTLSCertFile != "" {
		t, err := peerlink.LoadTLS(s.cfg.PeerTLSCertFile, s.cfg.PeerTLSKeyFile, s.cfg.PeerTLSCAFile)
		if err != nil {
			return fmt.Errorf("node: peer TLS (--peer-tls-cert-file): %w", err)
		}
		s.peerTLS = t
	}
	return nil
}

// clientListener puts TLS on the client listener ln (already batching,
// see wsconn) when the node serves wss.
func (s *Server) clientListener(ln net.Listener) net.Listener {
	if s.clientCert == nil {
		return ln
	}
	return tls.NewListener(ln, s.clientCert.ServerConfig())
}

// ReloadTLS reads the certificate files again, for connections made from
// now on; on error the certificates in use stay (each set is loaded on
// its own). Safe from any goroutine.
func (s *Server) ReloadTLS() error {
	var errs []error
	if s.clientCert != nil {
		if err := s.clientCert.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("client TLS: %w", err))
		} else {
			s.log.Info().Str("file", s.cfg.TLSCertFile).Time("notAfter", s.clientCert.Certificate().Leaf.NotAfter).Msg("client certificate loaded")
		}
	}
	if s.peerTLS != nil {
		if err := s.peerTLS.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("peer TLS: %w", err))
		} else {
			s.log.Info().Str("file", s.cfg.PeerTLSCertFile).Str("ca", s.cfg.PeerTLSCAFile).Msg("peer certificate and CA loaded")
		}
	}
	return errors.Join(errs...)
}
