package gateway

import (
	"strings"
	"testing"

	"chatcluster/internal/redisconn"
)

// The bcrypt cost is bcrypt's default when 0, else within bcrypt's range.
func TestConfigBcryptCost(t *testing.T) {
	for _, tc := range []struct {
		cost int
		ok   bool
	}{{0, true}, {4, true}, {10, true}, {31, true}, {3, false}, {32, false}} {
		cfg := DefaultConfig()
		cfg.Redis, cfg.Mongo, cfg.BcryptCost = redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/", tc.cost
		err := cfg.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("cost %d: error %v, want ok=%v", tc.cost, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--bcrypt-cost") {
			t.Errorf("cost %d: error %q does not name --bcrypt-cost", tc.cost, err)
		}
	}
}
