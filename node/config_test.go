package node

import (
	"strings"
	"testing"
	"time"

	"chatcluster/internal/redisconn"
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
		cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:2181"}, redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/"
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

// The bcrypt cost is bcrypt's default when 0, else within bcrypt's range.
func TestConfigBcryptCost(t *testing.T) {
	for _, tc := range []struct {
		cost int
		ok   bool
	}{{0, true}, {4, true}, {10, true}, {31, true}, {3, false}, {32, false}, {-1, false}} {
		cfg := DefaultConfig()
		cfg.ID, cfg.Listen, cfg.PeerListen = "n1", "127.0.0.1:9001", "127.0.0.1:9101"
		cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:2181"}, redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/"
		cfg.Secret = []byte("0123456789abcdef")
		cfg.BcryptCost = tc.cost
		err := cfg.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("cost %d: error %v, want ok=%v", tc.cost, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--bcrypt-cost") {
			t.Errorf("cost %d: error %q does not name --bcrypt-cost", tc.cost, err)
		}
	}
}

// The login policy is single (the default) or multi, with a bound of
// devices.
func TestConfigLoginPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy string
		max    int
		err    string // "" when valid
	}{
		{PolicySingle, 5, ""},
		{PolicySingle, 0, ""}, // the bound is the multi policy's
		{PolicyMulti, 5, ""},
		{PolicyMulti, 1, ""},
		{PolicyMulti, 100, ""},
		{PolicyMulti, 0, "--max-devices 0 must be between 1 and 100"},
		{PolicyMulti, 101, "--max-devices 101"},
		{"several", 5, `--login-policy "several" must be "single" or "multi"`},
		{"", 5, `--login-policy ""`},
	} {
		cfg := DefaultConfig()
		cfg.ID, cfg.Listen, cfg.PeerListen = "n1", "127.0.0.1:9001", "127.0.0.1:9101"
		cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:2181"}, redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/"
		cfg.Secret = []byte("0123456789abcdef")
		cfg.LoginPolicy, cfg.MaxDevices = tc.policy, tc.max
		err := cfg.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s/%d: %v", tc.policy, tc.max, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s/%d: error %v, want one containing %q", tc.policy, tc.max, err, tc.err)
		}
	}
	if cfg := DefaultConfig(); cfg.LoginPolicy != PolicySingle || cfg.MaxDevices != 5 {
		t.Errorf("default policy %q with %d devices, want single (and 5 devices for multi)", cfg.LoginPolicy, cfg.MaxDevices)
	}
}

// The edit and recall windows are positive, operators are user names, and
// the handler gets them as its policy.
func TestConfigEvents(t *testing.T) {
	base := func() Config {
		cfg := DefaultConfig()
		cfg.ID, cfg.Listen, cfg.PeerListen = "n1", "127.0.0.1:9001", "127.0.0.1:9101"
		cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:2181"}, redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/"
		cfg.Secret = []byte("0123456789abcdef")
		return cfg
	}
	cfg := base()
	cfg.Operators = []string{"alice", "bob"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := cfg.eventPolicy()
	if p.EditWindow != 24*time.Hour || p.RecallWindow != 2*time.Minute || !p.Operators["alice"] || !p.Operators["bob"] || p.Operators["carol"] {
		t.Fatalf("policy %+v", p)
	}
	for name, change := range map[string]func(*Config){
		"no edit window":  func(c *Config) { c.EditWindow = 0 },
		"negative recall": func(c *Config) { c.RecallWindow = -time.Second },
		"bad operator":    func(c *Config) { c.Operators = []string{"a:b"} },
	} {
		cfg := base()
		change(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}
