package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestRedisServer: a private Redis serves, dies on Kill, and comes back
// empty on the same address.
func TestRedisServer(t *testing.T) {
	r := StartRedis(t)
	addr := r.Addr()
	if !r.Running() || !processAlive(r.Pid()) {
		t.Fatal("redis not running after StartRedis")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Set(ctxFor(t, 5*time.Second), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	pid := r.Pid()
	r.Kill(t)
	if r.Running() || processAlive(pid) || r.Pid() != 0 {
		t.Fatal("redis still running after Kill")
	}
	if err := rdb.Ping(ctxFor(t, 5*time.Second)).Err(); err == nil {
		t.Fatal("a killed redis answers PING")
	}
	r.Start(t)
	if r.Addr() != addr || !r.Running() {
		t.Fatalf("after Start: %s running %v, want %s running", r.Addr(), r.Running(), addr)
	}
	if n, err := rdb.Exists(ctxFor(t, 5*time.Second), "k").Result(); err != nil || n != 0 {
		t.Fatalf("after Kill and Start: exists k = %d, %v; want an empty Redis", n, err)
	}

	if err := rdb.Set(ctxFor(t, 5*time.Second), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	if n, err := rdb.DBSize(ctxFor(t, 5*time.Second)).Result(); err != nil || n != 0 {
		t.Fatalf("after Restart: dbsize %d, %v; want an empty Redis", n, err)
	}
	r.Start(t) // running already: nothing happens
	if !r.Running() {
		t.Fatal("not running")
	}
}

// TestMongoServer: a private mongostore keeps its data across Stop and
// Start, and across Kill and Start, on the same URI.
func TestMongoServer(t *testing.T) {
	m := StartMongo(t)
	uri := m.URI()
	if !m.Running() {
		t.Fatal("mongostore not running after StartMongo")
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Disconnect(context.Background()) })
	coll := mc.Database(Namespace(t)).Collection("c")
	if _, err := coll.InsertOne(ctxFor(t, 10*time.Second), bson.M{"_id": "a", "n": 1}); err != nil {
		t.Fatal(err)
	}

	m.Stop(t)
	if m.Running() {
		t.Fatal("mongostore running after Stop")
	}
	if err := mc.Ping(ctxFor(t, 3*time.Second), nil); err == nil {
		t.Fatal("a stopped mongostore answers ping")
	}
	m.Start(t)
	if m.URI() != uri {
		t.Fatalf("URI %s after Start, want %s", m.URI(), uri)
	}
	count := func() int64 {
		t.Helper()
		n, err := coll.CountDocuments(ctxFor(t, 10*time.Second), bson.M{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("after Stop and Start: %d documents, want 1", n)
	}

	if _, err := coll.InsertOne(ctxFor(t, 10*time.Second), bson.M{"_id": "b", "n": 2}); err != nil {
		t.Fatal(err)
	}
	m.Kill(t)
	if m.Running() {
		t.Fatal("mongostore running after Kill")
	}
	m.Start(t)
	if n := count(); n != 2 {
		t.Fatalf("after Kill and Start: %d documents, want 2", n)
	}
}

// TestClusterOnPrivateServers: a cluster runs against private Redis and
// MongoDB given in Options.
func TestClusterOnPrivateServers(t *testing.T) {
	r := StartRedis(t)
	m := StartMongo(t)
	c := StartCluster(t, Options{Nodes: 1, Redis: r.Addr(), Mongo: m.URI()})
	c.WaitNodes(t, "n1")
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { rdb.Close() })
	keys, err := rdb.Keys(ctxFor(t, 5*time.Second), c.Namespace()+":*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("no keys of the cluster in the private Redis: %v, %v", keys, err)
	}
}

func TestStablePort(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := stablePort(t)
		if seen[p] || p < 20000 {
			t.Fatalf("port %d: repeated or too low", p)
		}
		seen[p] = true
	}
}

// TestLockEnsemble: while a test holds the ensemble lock, another process
// cannot take it; once the test ends, it can.
func TestLockEnsemble(t *testing.T) {
	ZKEnsemble(t)
	path := filepath.Join(os.Getenv(EnvZKEnsembleDir), "lock")
	t.Run("held", func(t *testing.T) {
		LockEnsemble(t)
		LockEnsemble(t)                                      // again: nothing happens
		t.Run("sub", func(t *testing.T) { LockEnsemble(t) }) // held by the parent: nothing happens
		if err := exec.Command("flock", "-n", path, "true").Run(); err == nil {
			t.Fatal("another process took the ensemble lock while this test holds it")
		}
	})
	if out, err := exec.Command("flock", "-w", "10", path, "true").CombinedOutput(); err != nil {
		t.Fatalf("ensemble lock not released when the test ended: %v %s", err, out)
	}
}
