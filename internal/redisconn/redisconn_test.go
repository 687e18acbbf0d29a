package redisconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chatcluster/internal/flagenv"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string // part of the error; "" for none
	}{
		{Config{Addr: "127.0.0.1:6379"}, ""},
		{Config{Sentinels: []string{"a:26379", "b:26379"}, MasterName: "chat"}, ""},
		{Config{}, "a Redis address is required"},
		{Config{Sentinels: []string{"a:26379"}}, "needs --redis-master"},
		{Config{Addr: "x:1", MasterName: "chat"}, "needs --redis-sentinels"},
		{Config{Addr: "localhost"}, "not host:port"},
		{Config{Sentinels: []string{"a:26379", "b"}, MasterName: "chat"}, `"b" is not host:port`},
		{Config{Addr: "x:1", CAFile: "ca.pem"}, "needs --redis-tls"},
		{Config{Cluster: []string{"a:7000", "b:7001"}}, ""},
		{Config{Cluster: []string{"a:7000", "b"}}, `"b" is not host:port`},
		{Config{Cluster: []string{"a:7000"}, Sentinels: []string{"a:26379"}, MasterName: "chat"}, "exclude each other"},
	} {
		err := tc.c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.c, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error with %q", tc.c, err, tc.want)
		}
	}
}

func TestFlagsReadSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "redis.password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flagenv.New("test")
	build := Flags(fs)
	if err := fs.Parse([]string{"--redis-sentinels", "a:26379,b:26379,c:26379", "--redis-master", "chat", "--redis-password-file", pw}); err != nil {
		t.Fatal(err)
	}
	c, err := build()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sentinels) != 3 || c.MasterName != "chat" || c.Password != "s3cret" || c.TLS {
		t.Fatalf("config %+v", c)
	}
	if s := c.String(); strings.Contains(s, "s3cret") || !strings.Contains(s, "chat") {
		t.Fatalf("String() = %q: must name the master and never the password", s)
	}
	fs = flagenv.New("test")
	build = Flags(fs)
	if err := fs.Parse([]string{"--redis-password-file", filepath.Join(dir, "missing")}); err != nil {
		t.Fatal(err)
	}
	if _, err := build(); err == nil || !strings.Contains(err.Error(), "--redis-password-file") {
		t.Fatalf("missing password file: %v, want an error naming the flag", err)
	}
}
