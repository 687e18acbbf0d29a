package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
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
		{"chroot", func(c *Config) { c.Chroot = "/prod" }, true},
		{"relative chroot", func(c *Config) { c.Chroot = "prod" }, false},
		{"chroot trailing slash", func(c *Config) { c.Chroot = "/prod/" }, false},
		{"credential", func(c *Config) { c.Auth = Credential{User: "chat", Password: "pw"} }, true},
		{"credential without user", func(c *Config) { c.Auth = Credential{Password: "pw"} }, false},
		{"credential without password", func(c *Config) { c.Auth = Credential{User: "chat"} }, false},
		{"credential user with colon", func(c *Config) { c.Auth = Credential{User: "a:b", Password: "pw"} }, false},
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
	if !sameACL(c.acl, zk.WorldACL(zk.PermAll)) {
		t.Fatalf("ACL without credential = %v, want world-writable", c.acl)
	}

	// The chroot prefixes every path, the root below it.
	withChroot := ok
	withChroot.Chroot, withChroot.Root = "/prod", "/eu/chat"
	withChroot.Auth = Credential{User: "chat", Password: "pw"}
	c, err = New(withChroot)
	if err != nil {
		t.Fatal(err)
	}
	if c.selfPath != "/prod/eu/chat/nodes/n1" || c.electionPath != "/prod/eu/chat/election" || c.termPath != "/prod/eu/chat/term" {
		t.Fatalf("paths with chroot: %s %s %s", c.selfPath, c.electionPath, c.termPath)
	}
	want := append(zk.DigestACL(zk.PermAll, "chat", "pw"), zk.ACL{Perms: zk.PermRead, Scheme: "world", ID: "anyone"})
	if !sameACL(c.acl, want) || worldWritable(c.acl) {
		t.Fatalf("ACL with credential = %s, want %s", aclString(c.acl), aclString(want))
	}
}

func TestParseConnectString(t *testing.T) {
	tests := []struct {
		in      string
		servers []string
		chroot  string
		err     string // part of the error; "" for none
	}{
		{in: "127.0.0.1:2181", servers: []string{"127.0.0.1:2181"}},
		{in: "host1:2181,host2:2182,host3:2183/chat", servers: []string{"host1:2181", "host2:2182", "host3:2183"}, chroot: "/chat"},
		{in: " host1:2181 , host2:2181/a/b ", servers: []string{"host1:2181", "host2:2181"}, chroot: "/a/b"},
		{in: "host1,host2:3000", servers: []string{"host1:2181", "host2:3000"}},
		{in: "host1:2181/", servers: []string{"host1:2181"}},
		{in: "[::1]:2181,[fe80::1]", servers: []string{"[::1]:2181", "[fe80::1]:2181"}},
		{in: "", err: "no servers"},
		{in: "/chat", err: "no servers"},
		{in: "host1:2181,,host2:2181", err: "server 2"},
		{in: "host1:2181,", err: "server 2"},
		{in: "host1:abc", err: `port "abc"`},
		{in: "host1:70000", err: `port "70000"`},
		{in: "host1:", err: `port ""`},
		{in: ":2181", err: "no host"},
		{in: "::1", err: "brackets"},
		{in: "host 1:2181", err: "space"},
		{in: "host1:2181/chat,host2:2181", err: "after the last server"},
		{in: "host1:2181/chat/", err: "must not end with /"},
		{in: "host1:2181//chat", err: "empty"},
		{in: "host1:2181/a b", err: "space"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			servers, chroot, err := ParseConnectString(tt.in)
			if tt.err != "" {
				if !errors.Is(err, ErrConnectString) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseConnectString(%q) = %v, %q, %v; want an ErrConnectString saying %q", tt.in, servers, chroot, err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(servers, tt.servers) || chroot != tt.chroot {
				t.Fatalf("ParseConnectString(%q) = %q, %q, %v; want %q, %q", tt.in, servers, chroot, err, tt.servers, tt.chroot)
			}
		})
	}
}

func TestParseCredential(t *testing.T) {
	c, err := ParseCredential("chat:s3cr:et with space\n\n")
	if err != nil || c.User != "chat" || c.Password != "s3cr:et with space" {
		t.Fatalf("ParseCredential = %#v, %v", c, err)
	}
	if s := fmt.Sprintf("%v %+v %#v %s", c, Config{Auth: c}, c, c); strings.Contains(s, "s3cr") {
		t.Fatalf("formatting shows the password: %s", s)
	}
	for _, in := range []string{"", "chat", ":pw", "chat:", "ch at:pw", "chat:line1\nline2", "chat:a\x00b"} {
		if _, err := ParseCredential(in); !errors.Is(err, ErrCredential) {
			t.Errorf("ParseCredential(%q) = %v, want ErrCredential", in, err)
		} else if strings.Contains(err.Error(), "line1") || strings.Contains(err.Error(), "line2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestPersistentPaths(t *testing.T) {
	tests := []struct {
		chroot, root   string
		parents, owned []string
	}{
		{"", "/chat", []string{"/chat", "/chat/nodes", "/chat/election"},
			[]string{"/chat", "/chat/nodes", "/chat/election", "/chat/term"}},
		{"", "/org/chat", []string{"/org", "/org/chat", "/org/chat/nodes", "/org/chat/election"},
			[]string{"/org/chat", "/org/chat/nodes", "/org/chat/election", "/org/chat/term"}},
		{"/svc/prod", "/chat", []string{"/svc", "/svc/prod", "/svc/prod/chat", "/svc/prod/chat/nodes", "/svc/prod/chat/election"},
			[]string{"/svc/prod", "/svc/prod/chat", "/svc/prod/chat/nodes", "/svc/prod/chat/election", "/svc/prod/chat/term"}},
	}
	for _, tt := range tests {
		parents, owned := persistentPaths(tt.chroot, tt.root)
		if !slices.Equal(parents, tt.parents) || !slices.Equal(owned, tt.owned) {
			t.Errorf("persistentPaths(%q, %q) = %v, %v; want %v, %v", tt.chroot, tt.root, parents, owned, tt.parents, tt.owned)
		}
	}
}

func TestWorldWritable(t *testing.T) {
	digest := zk.DigestACL(zk.PermAll, "chat", "pw")
	for _, tt := range []struct {
		acl  []zk.ACL
		want bool
	}{
		{zk.WorldACL(zk.PermAll), true},
		{zk.WorldACL(zk.PermCreate | zk.PermRead), true},
		{zk.WorldACL(zk.PermRead), false},
		{digest, false},
		{append(slices.Clone(digest), zk.WorldACL(zk.PermRead)...), false},
		{append(slices.Clone(digest), zk.WorldACL(zk.PermDelete)...), true},
	} {
		if got := worldWritable(tt.acl); got != tt.want {
			t.Errorf("worldWritable(%s) = %v, want %v", aclString(tt.acl), got, tt.want)
		}
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
