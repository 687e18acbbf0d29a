package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chatcluster/internal/flagenv"
)

var testSecret = []byte("0123456789abcdef-secret")

func TestConfigDefaults(t *testing.T) {
	c := Config{Endpoints: []Endpoint{{URL: "https://hooks.example.com/chat", Secret: testSecret}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Attempts != DefaultAttempts || c.RetryMin != DefaultRetryMin || c.RetryMax != DefaultRetryMax ||
		c.Timeout != DefaultTimeout || c.Concurrency != DefaultConcurrency || c.Held != DefaultHeld ||
		c.QueueCap != DefaultQueueCap || c.DeadCap != DefaultDeadCap {
		t.Fatalf("defaults not applied: %+v", c)
	}
	ep := c.Endpoints[0]
	if ep.Name != NameOf(ep.URL) || ep.Timeout != DefaultTimeout || !ep.Wants(UserLogin) {
		t.Fatalf("endpoint defaults not applied: %+v", ep)
	}
	var off Config
	if err := off.Validate(); err != nil || off.Enabled() {
		t.Fatalf("the zero Config: Validate %v, Enabled %v", err, off.Enabled())
	}
}

func TestConfigErrors(t *testing.T) {
	ep := func(url string) Endpoint { return Endpoint{URL: url, Secret: testSecret} }
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"relative URL", Config{Endpoints: []Endpoint{ep("/hooks")}}, "must be absolute"},
		{"ftp URL", Config{Endpoints: []Endpoint{ep("ftp://example.com/x")}}, "http:// or https://"},
		{"no host", Config{Endpoints: []Endpoint{ep("http:///x")}}, "with a host"},
		{"not a URL", Config{Endpoints: []Endpoint{ep("http://[::1")}}, "must be absolute"},
		{"short secret", Config{Endpoints: []Endpoint{{URL: "https://a.example/x", Secret: []byte("short")}}}, "at least 16 bytes"},
		{"unknown event", Config{Endpoints: []Endpoint{{URL: "https://a.example/x", Secret: testSecret, Events: []string{"message.deleted"}}}}, `unknown event "message.deleted"`},
		{"bad name", Config{Endpoints: []Endpoint{{Name: "a b", URL: "https://a.example/x", Secret: testSecret}}}, "letters, digits"},
		{"twice", Config{Endpoints: []Endpoint{ep("https://a.example/x"), ep("https://a.example/x")}}, "configured twice"},
		{"retry min above max", Config{RetryMin: time.Minute, RetryMax: time.Second}, "is above"},
		{"negative attempts", Config{Attempts: -1}, "--webhook-attempts must be positive"},
		{"tiny queue", Config{QueueCap: 5}, "--webhook-queue-cap 5"},
		{"hook URL", Config{BeforeMessage: HookConfig{URL: "mailto:x@example.com", Secret: testSecret}}, "--before-message-hook: URL"},
		{"hook secret", Config{BeforeMessage: HookConfig{URL: "http://127.0.0.1:1/check"}}, "--before-message-hook-secret-file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// An error never shows a URL's password or query, which may hold
// credentials.
func TestConfigErrorsHideCredentials(t *testing.T) {
	c := Config{Endpoints: []Endpoint{{URL: "https://user:hunter2@a.example/x?token=t0p", Secret: []byte("short")}}}
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted a short secret")
	}
	c = Config{Endpoints: []Endpoint{{URL: "gopher://user:hunter2@a.example/x?token=t0p", Secret: testSecret}}}
	err = c.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "t0p") {
		t.Fatalf("Validate = %v", err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "crm.secret", "crm-secret-0123456789\n")
	writeFile(t, dir, "mod.secret", "mod-secret-0123456789\n")
	shared := writeFile(t, dir, "shared.secret", "  shared-secret-0123456789  \n")
	file := writeFile(t, dir, "webhooks.yaml", `
endpoints:
  - name: crm
    url: https://crm.example.com/hooks/chat
    events: [message.stored, user.login]
    secret_file: crm.secret
    timeout: 2s
before_message:
  url: https://mod.example.com/check
  secret_file: mod.secret
  timeout: 150ms
  on_failure: closed
`)
	fs := flagenv.New("node")
	build := Flags(fs)
	err := fs.Parse([]string{
		"--webhook", "https://a.example.com/in", "--webhook", "http://b.example.com:8080/in",
		"--webhook-events", "user.login,user.logout", "--webhook-secret-file", shared,
		"--webhooks-file", file, "--webhook-retry-min", "50ms", "--webhook-attempts", "3",
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := build()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Endpoints) != 3 {
		t.Fatalf("endpoints %+v", c.Endpoints)
	}
	a, crm := c.Endpoints[0], c.Endpoints[2]
	if a.URL != "https://a.example.com/in" || string(a.Secret) != "shared-secret-0123456789" ||
		len(a.Events) != 2 || a.Wants(MessageStored) || !a.Wants(UserLogout) {
		t.Fatalf("--webhook endpoint %+v", a)
	}
	if crm.Name != "crm" || string(crm.Secret) != "crm-secret-0123456789" || crm.Timeout != 2*time.Second || !crm.Wants(MessageStored) || crm.Wants(RoomJoin) {
		t.Fatalf("file endpoint %+v", crm)
	}
	h := c.BeforeMessage
	if h.URL != "https://mod.example.com/check" || string(h.Secret) != "mod-secret-0123456789" || h.Timeout != 150*time.Millisecond || !h.FailClosed {
		t.Fatalf("hook %+v", h)
	}
	if c.RetryMin != 50*time.Millisecond || c.Attempts != 3 || c.RetryMax != DefaultRetryMax {
		t.Fatalf("policy %+v", c)
	}
}

func TestFlagsErrors(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "s", "a-secret-of-enough-bytes")
	for _, tc := range []struct {
		name string
		file string
		args []string
		want string
	}{
		{name: "no secret", args: []string{"--webhook", "https://a.example/x"}, want: "--webhook needs --webhook-secret-file"},
		{name: "missing secret file", args: []string{"--webhook", "https://a.example/x", "--webhook-secret-file", filepath.Join(dir, "none")}, want: "no such file"},
		{name: "bad URL", args: []string{"--webhook", "a.example/x", "--webhook-secret-file", secret}, want: "must be absolute"},
		{name: "hook fail mode", args: []string{"--before-message-hook", "https://m.example/x", "--before-message-hook-secret-file", secret, "--before-message-hook-fail", "ajar"}, want: "want open or closed"},
		{name: "hook without secret", args: []string{"--before-message-hook", "https://m.example/x"}, want: "--before-message-hook-secret-file"},
		{name: "unknown key", file: "endpoints:\n  - url: https://a.example/x\n    secret_fle: s\n", want: "secret_fle"},
		{name: "file endpoint without secret", file: "endpoints:\n  - url: https://a.example/x\n", want: "has no secret_file"},
		{name: "bad timeout", file: "endpoints:\n  - url: https://a.example/x\n    secret_file: s\n    timeout: soon\n", want: `timeout "soon"`},
		{name: "hook twice", file: "before_message:\n  url: https://m.example/x\n  secret_file: s\n",
			args: []string{"--before-message-hook", "https://m.example/y", "--before-message-hook-secret-file", secret}, want: "given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append(args, "--webhooks-file", writeFile(t, dir, "w.yaml", tc.file))
			}
			fs := flagenv.New("node")
			build := Flags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			_, err := build()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "a-secret-of-enough-bytes") {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

// Without flags and variables, nothing is configured.
func TestFlagsOff(t *testing.T) {
	fs := flagenv.New("node")
	build := Flags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	c, err := build()
	if err != nil || c.Enabled() || c.BeforeMessage.URL != "" {
		t.Fatalf("%+v, %v", c, err)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	secret := writeFile(t, t.TempDir(), "s", "a-secret-of-enough-bytes")
	t.Setenv("CHAT_WEBHOOKS", "https://a.example/x, https://b.example/y")
	t.Setenv("CHAT_WEBHOOK_SECRET_FILE", secret)
	fs := flagenv.New("node")
	build := Flags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	c, err := build()
	if err != nil || len(c.Endpoints) != 2 {
		t.Fatalf("%+v, %v", c, err)
	}
	// A flag replaces the variable's list.
	fs = flagenv.New("node")
	build = Flags(fs)
	if err := fs.Parse([]string{"--webhook", "https://c.example/z"}); err != nil {
		t.Fatal(err)
	}
	if c, err = build(); err != nil || len(c.Endpoints) != 1 || c.Endpoints[0].URL != "https://c.example/z" {
		t.Fatalf("%+v, %v", c, err)
	}
}
