package session_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/session"
)

func newStore(t *testing.T) (*session.Store, *redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", testenv.Redis(t), err)
	}
	prefix := testenv.Namespace(t) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return session.NewStore(rdb, prefix), rdb, prefix
}

func put(t *testing.T, s *session.Store, r session.Record) (session.Record, bool) {
	t.Helper()
	prev, stored, err := s.Put(context.Background(), r)
	if err != nil {
		t.Fatalf("Put(%+v): %v", r, err)
	}
	return prev, stored
}

func TestStoreVersionedPut(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()

	if _, err := s.Get(ctx, "alice"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get before Put: err = %v, want ErrNotFound", err)
	}

	v1, err := s.NextVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.NextVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v2 <= v1 {
		t.Fatalf("NextVersion not increasing: %d then %d", v1, v2)
	}
	first := session.Record{User: "alice", Node: "n1", Conn: "c1", LoginTime: 1000, Version: v1}
	second := session.Record{User: "alice", Node: "n2", Conn: "c2", LoginTime: 2000, Version: v2}

	prev, stored := put(t, s, first)
	if !stored || prev != (session.Record{}) {
		t.Fatalf("first Put: prev=%+v stored=%v, want zero, true", prev, stored)
	}
	got, err := s.Get(ctx, "alice")
	if err != nil || got != first {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, first)
	}

	// The same record again (a retried Put) is not a conflict.
	prev, stored = put(t, s, first)
	if !stored || prev != (session.Record{}) {
		t.Fatalf("repeated Put: prev=%+v stored=%v, want zero, true", prev, stored)
	}

	// A newer login replaces it and returns it to be kicked.
	prev, stored = put(t, s, second)
	if !stored || prev != first {
		t.Fatalf("newer Put: prev=%+v stored=%v, want %+v, true", prev, stored, first)
	}

	// The older login arriving late is refused and learns of the newer one.
	prev, stored = put(t, s, first)
	if stored || prev != second {
		t.Fatalf("older Put: prev=%+v stored=%v, want %+v, false", prev, stored, second)
	}
	// So is another connection with the same version.
	dup := second
	dup.Conn = "c3"
	if _, stored = put(t, s, dup); stored {
		t.Fatal("Put with an equal version from another connection was stored")
	}
	if got, _ := s.Get(ctx, "alice"); got != second {
		t.Fatalf("Get = %+v, want %+v", got, second)
	}

	// The device a login names is kept with it.
	third := session.Record{User: "alice", Node: "n1", Conn: "c4", LoginTime: 3000, Version: v2 + 1, Run: 7, Device: "phone"}
	if prev, stored = put(t, s, third); !stored || prev.Conn != second.Conn {
		t.Fatalf("Put of a named device: prev=%+v stored=%v", prev, stored)
	}
	if got, err := s.Get(ctx, "alice"); err != nil || got != third {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, third)
	}

	// A user named like the counter does not clash with it.
	vr := session.Record{User: "version", Node: "n1", Conn: "cv", LoginTime: 1, Version: v2}
	put(t, s, vr)
	if _, err := s.NextVersion(ctx); err != nil {
		t.Fatalf("NextVersion after user %q logged in: %v", "version", err)
	}
	if got, err := s.Get(ctx, "version"); err != nil || got != vr {
		t.Fatalf("Get(version) = %+v, %v", got, err)
	}

	for _, bad := range []session.Record{
		{Node: "n", Conn: "c", Version: 1},
		{User: "u", Node: "n", Version: 1},
		{User: "u", Node: "n", Conn: "c"},
	} {
		if _, _, err := s.Put(ctx, bad); err == nil {
			t.Errorf("Put(%+v) accepted an incomplete record", bad)
		}
	}
}

func TestStoreDeleteOnlyOwnConn(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()

	if ok, err := s.Delete(ctx, "bob", "c1"); err != nil || ok {
		t.Fatalf("Delete with no session = %v, %v; want false, nil", ok, err)
	}
	put(t, s, session.Record{User: "bob", Node: "n1", Conn: "c1", LoginTime: 1, Version: 1})
	put(t, s, session.Record{User: "bob", Node: "n2", Conn: "c2", LoginTime: 2, Version: 2})

	// The late disconnect of the older connection leaves the newer session.
	if ok, err := s.Delete(ctx, "bob", "c1"); err != nil || ok {
		t.Fatalf("Delete(c1) = %v, %v; want false, nil", ok, err)
	}
	if got, err := s.Get(ctx, "bob"); err != nil || got.Conn != "c2" {
		t.Fatalf("after Delete(c1): Get = %+v, %v; want conn c2", got, err)
	}
	if ok, err := s.Delete(ctx, "bob", "c2"); err != nil || !ok {
		t.Fatalf("Delete(c2) = %v, %v; want true, nil", ok, err)
	}
	if _, err := s.Get(ctx, "bob"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("after Delete(c2): err = %v, want ErrNotFound", err)
	}
	// After a delete any version may log in again.
	if _, stored := put(t, s, session.Record{User: "bob", Node: "n1", Conn: "c3", Version: 1}); !stored {
		t.Fatal("Put after Delete was refused")
	}
}

// TestStoreConcurrentPuts races many logins of one user; the highest version
// must win, every Put but one must either be refused or replace exactly one
// earlier record, and no record may be replaced twice.
func TestStoreConcurrentPuts(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	const n = 200

	versions := make([]int64, n)
	for i := range versions {
		v, err := s.NextVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		versions[i] = v
	}
	maxV := versions[n-1]

	var (
		mu       sync.Mutex
		replaced = map[string]int{}
		refused  int
		wg       sync.WaitGroup
		errs     = make(chan error, n)
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := session.Record{User: "carol", Node: fmt.Sprintf("n%d", i%3), Conn: fmt.Sprintf("c%d", i),
				LoginTime: int64(i), Version: versions[i]}
			prev, stored, err := s.Put(ctx, r)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case !stored:
				refused++
				if prev.Version <= r.Version {
					errs <- fmt.Errorf("Put v%d refused by v%d", r.Version, prev.Version)
				}
			case prev.Conn != "":
				replaced[prev.Conn]++
				if prev.Version >= r.Version {
					errs <- fmt.Errorf("Put v%d replaced v%d", r.Version, prev.Version)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Get(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != maxV || got.Conn != fmt.Sprintf("c%d", n-1) {
		t.Fatalf("stored %+v, want version %d (conn c%d)", got, maxV, n-1)
	}
	for conn, k := range replaced {
		if k != 1 {
			t.Errorf("conn %s was replaced %d times", conn, k)
		}
	}
	// Every connection but the winner is kicked exactly once: either it was
	// refused (kicks itself) or a newer Put replaced it.
	if kicked := refused + len(replaced); kicked != n-1 {
		t.Errorf("refused %d + replaced %d = %d, want %d", refused, len(replaced), kicked, n-1)
	}
}

// A counter lost with Redis does not make versions go back.
func TestNextVersionSurvivesALostCounter(t *testing.T) {
	ctx := context.Background()
	s, rdb, prefix := newStore(t)
	before, err := s.NextVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Del(ctx, prefix+"session-version").Result(); err != nil || n != 1 {
		t.Fatalf("deleting the counter: %d, %v", n, err)
	}
	after, err := s.NextVersion(ctx)
	if err != nil || after <= before {
		t.Fatalf("version after the counter was lost: %d (%v), before %d", after, err, before)
	}
}
