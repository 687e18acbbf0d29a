package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secretFile writes a cluster secret for run.
func secretFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(f, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
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
