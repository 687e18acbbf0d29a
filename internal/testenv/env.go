package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"
)

// Environment variables set by deploy/with-deps.sh (which `make test` uses).
const (
	EnvZK    = "CHAT_TEST_ZK"    // host:port of one ZooKeeper server
	EnvRedis = "CHAT_TEST_REDIS" // host:port of Redis
	EnvMongo = "CHAT_TEST_MONGO" // mongodb:// URI of the MongoDB-wire store
	// EnvRedisCluster=1 has StartCluster run each cluster that is given
	// no Redis of its own on a private Redis Cluster (StartRedisCluster).
	EnvRedisCluster = "CHAT_TEST_REDIS_CLUSTER"
)

func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: this test needs the real dependencies. Run it through `make test`, "+
			"or `deploy/with-deps.sh go test ./...` which starts ZooKeeper, Redis and the MongoDB-wire store and sets it", name)
	}
	return v
}

// ZK returns the ZooKeeper servers to use, failing the test if none run.
func ZK(t testing.TB) []string { return strings.Split(need(t, EnvZK), ",") }

// Redis returns the Redis address to use, failing the test if none runs.
func Redis(t testing.TB) string { return need(t, EnvRedis) }

// Mongo returns the MongoDB URI to use, failing the test if none runs.
func Mongo(t testing.TB) string { return need(t, EnvMongo) }

// Namespace is a per-test name to isolate a test's data: use it as the
// ZooKeeper root ("/"+ns), the Redis key prefix (ns+":") and the MongoDB
// database name.
func Namespace(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b[:])
}

// WaitFor polls cond until it returns true or timeout passes, then fails the
// test with msg. Every wait in the suite goes through it: a test waits on a
// condition, never for a fixed time.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, msg)
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}
