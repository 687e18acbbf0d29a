package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes content to a file of its own, readable by the owner only.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// secretFile writes a cluster secret for run.
func secretFile(t *testing.T) string {
	t.Helper()
	return writeFile(t, "cluster.secret", "0123456789abcdef0123456789abcdef\n")
}

// A malformed --zk or --zk-auth-file stops the node before it starts
// anything, with an error that names the flag and never shows the password.
func TestZKFlagsRejected(t *testing.T) {
	secret := secretFile(t)
	goodAuth := writeFile(t, "zk.auth", "chat:pw\n")
	tests := []struct {
		name string
		args []string
		want []string // parts of the error
	}{
		{"empty server", []string{"--zk", "h1:2181,,h2:2181"}, []string{"--zk:", "server 2"}},
		{"chroot before a server", []string{"--zk", "h1:2181/chat,h2:2181"}, []string{"--zk:", "after the last server"}},
		{"chroot with trailing slash", []string{"--zk", "h1:2181/chat/"}, []string{"--zk:", "must not end with /"}},
		{"bad port", []string{"--zk", "h1:21810000"}, []string{"--zk:", "port"}},
		{"missing auth file", []string{"--zk-auth-file", filepath.Join(t.TempDir(), "none")}, []string{"--zk-auth-file:", "no such file"}},
		{"auth file without colon", []string{"--zk-auth-file", writeFile(t, "bad.auth", "chatTOPSECRET\n")}, []string{"--zk-auth-file:", "user:password"}},
		{"auth file of two lines", []string{"--zk-auth-file", writeFile(t, "two.auth", "chat:TOPSECRET\nmore\n")}, []string{"--zk-auth-file:", "one line"}},
		{"bad chroot with good auth", []string{"--zk", "h1:2181/a//b", "--zk-auth-file", goodAuth}, []string{"--zk:", "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--id", "n1", "--cluster-secret-file", secret}, tt.args...)
			err := run(args)
			if err == nil {
				t.Fatalf("run(%q) succeeded", args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) = %v; want it to say %q", args, err, w)
				}
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestReadZKAuth(t *testing.T) {
	cred, err := readZKAuth(writeFile(t, "zk.auth", "chat:p4ss word\n"))
	if err != nil || cred.User != "chat" || cred.Password != "p4ss word" {
		t.Fatalf("readZKAuth = %v (%q), %v", cred, cred.Password, err)
	}
}

// A node that would publish an address nobody can dial refuses to start,
// before it connects to anything, with an error that names the flag to
// set; the environment variables count as the flags do.
func TestRefusesUndialableAddresses(t *testing.T) {
	secret := secretFile(t)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"wildcard client bind", []string{"--listen", "0.0.0.0:9001"}, nil, "set --advertise"},
		{"wildcard peer bind", []string{"--peer-listen", "0.0.0.0:9101"}, nil, "set --peer-advertise"},
		{"wildcard peer advertise", []string{"--peer-listen", "0.0.0.0:9101", "--peer-advertise", "0.0.0.0:9101"}, nil,
			"--peer-advertise \"0.0.0.0:9101\" names no host"},
		{"peer advertise from the environment", []string{"--peer-listen", "0.0.0.0:9101"}, map[string]string{"CHAT_PEER_ADVERTISE": ":9101"},
			"--peer-advertise \":9101\" names no host"},
		{"advertise from the environment", []string{"--listen", "[::]:9001"}, map[string]string{"CHAT_ADVERTISE": "ws://[::]:9001/ws"},
			"names no host clients can dial"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"--id", "n1", "--cluster-secret-file", secret,
				"--zk", "127.0.0.1:1", "--redis", "127.0.0.1:1", "--mongo", "mongodb://127.0.0.1:1/"}, tc.args...)
			err := run(args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run %v: %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

// A login policy other than single or multi, or a bound of devices out of
// range, stops the node before it starts anything; so does a bad
// $CHAT_MAX_DEVICES.
func TestLoginPolicyFlagsRejected(t *testing.T) {
	secret := secretFile(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--login-policy", "many"}, `--login-policy "many" must be "single" or "multi"`},
		{[]string{"--login-policy", "multi", "--max-devices", "0"}, "--max-devices 0 must be between 1 and 100"},
	} {
		err := run(append([]string{"--id", "n1", "--cluster-secret-file", secret}, tt.args...))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v; want it to say %q", tt.args, err, tt.want)
		}
	}
	t.Setenv("CHAT_MAX_DEVICES", "five")
	if err := run([]string{"--id", "n1", "--cluster-secret-file", secret}); err == nil || !strings.Contains(err.Error(), "CHAT_MAX_DEVICES") {
		t.Errorf("run with $CHAT_MAX_DEVICES=five = %v; want it to name the variable", err)
	}
}

// A bad webhook setting stops the node before it starts anything, with an
// error that names the flag and never shows a secret.
func TestWebhookFlagsRejected(t *testing.T) {
	secret := secretFile(t)
	hookSecret := writeFile(t, "hook.secret", "TOPSECRET-0123456789\n")
	short := writeFile(t, "short.secret", "TOPSECRET\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"relative URL", []string{"--webhook", "hooks.example.com/x", "--webhook-secret-file", hookSecret}, "must be absolute"},
		{"no secret", []string{"--webhook", "https://hooks.example.com/x"}, "--webhook-secret-file"},
		{"short secret", []string{"--webhook", "https://hooks.example.com/x", "--webhook-secret-file", short}, "at least 16 bytes"},
		{"unknown event", []string{"--webhook", "https://hooks.example.com/x", "--webhook-secret-file", hookSecret, "--webhook-events", "user.login,typing"}, `unknown event "typing"`},
		{"hook failure mode", []string{"--before-message-hook", "https://mod.example.com/x", "--before-message-hook-secret-file", hookSecret, "--before-message-hook-fail", "maybe"}, "--before-message-hook-fail"},
		{"missing file", []string{"--webhooks-file", filepath.Join(t.TempDir(), "none.yaml")}, "--webhooks-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--id", "n1", "--cluster-secret-file", secret}, tc.args...)
			err := run(args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v; want it to say %q", args, err, tc.want)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}
