package node

import (
	"strings"
	"testing"
)

// The admin listener is optional and never shares the client or peer port.
func TestConfigAdminListen(t *testing.T) {
	for _, tc := range []struct {
		admin string
		err   string // "" when valid
	}{
		{"", ""},
		{"127.0.0.1:9201", ""},
		{"127.0.0.1:9001", "--admin-listen must differ"},
		{"127.0.0.1:9101", "--admin-listen must differ"},
		{"no-port", "--admin-listen \"no-port\""},
	} {
		cfg := DefaultConfig()
		cfg.ID, cfg.Listen, cfg.PeerListen, cfg.AdminListen = "n1", "127.0.0.1:9001", "127.0.0.1:9101", tc.admin
		cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:2181"}, "127.0.0.1:6379", "mongodb://127.0.0.1:27017/"
		cfg.Secret = []byte("0123456789abcdef")
		err := cfg.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("admin %q: %v", tc.admin, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("admin %q: error %v, want one containing %q", tc.admin, err, tc.err)
		}
	}
}
