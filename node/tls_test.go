package node

import (
	"strings"
	"testing"
	"time"

	"chatcluster/internal/testenv"
)

// TLS files come in their sets; with a client certificate the default URL
// is wss://, and a ws:// one is refused.
func TestConfigTLS(t *testing.T) {
	for _, tc := range []struct {
		name      string
		set       func(*Config)
		wantWS    string
		errSaying string
	}{
		{name: "client TLS", set: func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "c.pem", "k.pem" }, wantWS: "wss://127.0.0.1:9001/ws"},
		{name: "client TLS, advertised wss", set: func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.Advertise = "c.pem", "k.pem", "wss://host-a:9001/ws"
		}, wantWS: "wss://host-a:9001/ws"},
		{name: "client TLS, advertised ws", set: func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.Advertise = "c.pem", "k.pem", "ws://host-a:9001/ws"
		}, errSaying: "is ws:// but the client listener serves TLS (--tls-cert-file): publish wss://host-a:9001/ws"},
		{name: "no client TLS, advertised wss (TLS ends in front)", set: func(c *Config) { c.Advertise = "wss://chat.example.com/ws" },
			wantWS: "wss://chat.example.com/ws"},
		{name: "certificate without key", set: func(c *Config) { c.TLSCertFile = "c.pem" }, errSaying: "--tls-cert-file and --tls-key-file go together"},
		{name: "key without certificate", set: func(c *Config) { c.TLSKeyFile = "k.pem" }, errSaying: "--tls-cert-file and --tls-key-file go together"},
		{name: "peer TLS", set: func(c *Config) { c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = "c.pem", "k.pem", "ca.pem" },
			wantWS: "ws://127.0.0.1:9001/ws"},
		{name: "peer TLS without CA", set: func(c *Config) { c.PeerTLSCertFile, c.PeerTLSKeyFile = "c.pem", "k.pem" },
			errSaying: "--peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file go together"},
		{name: "peer CA alone", set: func(c *Config) { c.PeerTLSCAFile = "ca.pem" }, errSaying: "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.set(&cfg)
			err := cfg.Validate()
			if tc.errSaying != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSaying) {
					t.Fatalf("error %v, want one saying %q", err, tc.errSaying)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Advertise != tc.wantWS {
				t.Fatalf("publishes %q, want %q", cfg.Advertise, tc.wantWS)
			}
		})
	}
}

// New loads the certificates: files that do not load, or a certificate
// that expired, stop the node before it opens anything, naming the flag.
func TestNewLoadsCertificates(t *testing.T) {
	ca := testenv.NewCA(t, "node")
	cert, key := ca.Issue(t, "n1", "127.0.0.1")
	old, oldKey := ca.IssueSpec(t, testenv.CertSpec{Name: "old", Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for _, tc := range []struct {
		name      string
		set       func(*Config)
		errSaying string // "" loads
	}{
		{"client and peer TLS", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile = cert, key
			c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = cert, key, ca.File
		}, ""},
		{"missing client certificate", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = cert+".missing", key }, "client TLS (--tls-cert-file)"},
		{"expired client certificate", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = old, oldKey }, "expired"},
		{"peer CA file without a certificate", func(c *Config) {
			c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = cert, key, key
		}, "peer TLS (--peer-tls-cert-file)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.set(&cfg)
			s, err := New(cfg)
			switch {
			case tc.errSaying == "" && err != nil:
				t.Fatal(err)
			case tc.errSaying == "":
				if s.clientCert == nil || s.peerTLS == nil {
					t.Fatal("New did not load the certificates")
				}
				if err := s.ReloadTLS(); err != nil {
					t.Fatal(err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.errSaying):
				t.Fatalf("New: %v, want an error saying %q", err, tc.errSaying)
			}
		})
	}
}
