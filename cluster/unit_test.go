package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Servers: []string{"127.0.0.1:2181"}, Self: Member{ID: "n1"}}
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"nested root", func(c *Config) { c.Root = "/a/b" }, true},
		{"no servers", func(c *Config) { c.Servers = nil }, false},
		{"blank server", func(c *Config) { c.Servers = []string{" "} }, false},
		{"relative root", func(c *Config) { c.Root = "chat" }, false},
		{"slash root", func(c *Config) { c.Root = "/" }, false},
		{"trailing slash", func(c *Config) { c.Root = "/chat/" }, false},
		{"empty component", func(c *Config) { c.Root = "/a//b" }, false},
		{"dot component", func(c *Config) { c.Root = "/a/.." }, false},
		{"no id", func(c *Config) { c.Self.ID = "" }, false},
		{"slash in id", func(c *Config) { c.Self.ID = "a/b" }, false},
		{"space in id", func(c *Config) { c.Self.ID = "a b" }, false},
		{"negative timeout", func(c *Config) { c.SessionTimeout = -time.Second }, false},
		{"negative stale wait", func(c *Config) { c.StaleWait = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			cfg.Servers = slices.Clone(ok.Servers)
			tt.mod(&cfg)
			err := cfg.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if _, nerr := New(cfg); (nerr == nil) != tt.ok {
				t.Fatalf("New() = %v, want ok=%v", nerr, tt.ok)
			}
		})
	}
	c, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.Root != DefaultRoot || c.cfg.SessionTimeout != DefaultSessionTimeout || c.cfg.StaleWait != 2*DefaultSessionTimeout {
		t.Fatalf("defaults not applied: %+v", c.cfg)
	}
	if c.selfPath != "/chat/nodes/n1" || c.electionPath != "/chat/election" {
		t.Fatalf("paths: %s %s", c.selfPath, c.electionPath)
	}
}

// TestOfferLatestInOrder: a slow reader skips snapshots but never sees
// them out of order, and always gets the last one.
func TestOfferLatestInOrder(t *testing.T) {
	ch := make(chan State, 1)
	const n = 20000
	done := make(chan []int64)
	go func() {
		var got []int64
		for s := range ch {
			got = append(got, s.Session)
			if len(got)%100 == 0 {
				time.Sleep(time.Millisecond) // a slow reader
			}
		}
		done <- got
	}()
	for i := int64(1); i <= n; i++ {
		offer(ch, State{Session: i})
	}
	close(ch)
	got := <-done
	if len(got) == 0 || got[len(got)-1] != n {
		t.Fatalf("last snapshot = %v, want %d", got[len(got)-1:], n)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("snapshot %d after %d: out of order", got[i], got[i-1])
		}
	}
	t.Logf("reader saw %d of %d snapshots", len(got), n)
}

func TestSortElection(t *testing.T) {
	got := sortElection([]string{"n_0000000010", "junk", "n_0000000002", "x-n_0000000005", "n_abc"})
	want := []string{"n_0000000002", "x-n_0000000005", "n_0000000010"}
	if !slices.Equal(got, want) {
		t.Fatalf("sortElection = %v, want %v", got, want)
	}
}
