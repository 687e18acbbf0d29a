package accounts

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/crypto/bcrypt"

	"chatcluster/history"
	"chatcluster/internal/testenv"
)

const pw = "correct horse"

// env is the real Redis and MongoDB of one test, in a namespace of its own.
type env struct {
	t      *testing.T
	rdb    *redis.Client
	mongo  *mongo.Client // to write and drop the test's database directly
	store  *history.Store
	prefix string
	ns     string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, ns: testenv.Namespace(t)}
	e.prefix = e.ns + ":"
	e.rdb = redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { e.rdb.Close() })
	client, err := mongo.Connect(options.Client().ApplyURI(testenv.Mongo(t)))
	if err != nil {
		t.Fatal(err)
	}
	e.mongo = client
	store, err := history.Open(ctxT(t, 10*time.Second), testenv.Mongo(t), e.ns)
	if err != nil {
		t.Fatalf("history.Open: %v", err)
	}
	e.store = store
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if keys, _ := e.rdb.Keys(ctx, e.prefix+"*").Result(); len(keys) > 0 {
			e.rdb.Del(ctx, keys...)
		}
		_ = store.Close(ctx)
		_ = client.Database(e.ns).Drop(ctx)
		_ = client.Disconnect(ctx)
	})
	return e
}

// accounts returns Accounts on the test's stores, as one more gateway or
// node would have them.
func (e *env) accounts(th ThrottleConfig) *Accounts {
	return New(Config{Redis: e.rdb, Prefix: e.prefix, Store: e.store, Cost: bcrypt.MinCost, Throttle: th})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// until is the unix ms before which the counter key lets no login
// through, 0 if none.
func (e *env) until(key string) int64 {
	v, err := e.rdb.HGet(ctxT(e.t, 5*time.Second), key, "until").Result()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		e.t.Fatal(err)
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// waitOpen waits until the counter key lets logins through again, without
// spending an attempt.
func (e *env) waitOpen(key string) {
	e.t.Helper()
	testenv.WaitFor(e.t, 30*time.Second, "the wait of "+key+" ends", func() bool {
		return e.until(key) <= time.Now().UnixMilli()
	})
}

func throttled(err error) (*ThrottledError, bool) {
	var te *ThrottledError
	return te, errors.As(err, &te)
}

func login(t *testing.T, a *Accounts, name, pass, src string) (string, error) {
	t.Helper()
	return a.Login(ctxT(t, 10*time.Second), name, pass, src)
}

// Wrong passwords make the account wait on every Accounts sharing the
// Redis (every gateway and node); the right password is refused unchecked
// while it waits and works afterwards, and resets the account's counter.
func TestLoginThrottlePerAccount(t *testing.T) {
	e := newEnv(t)
	th := ThrottleConfig{FreeFailures: 2, FreeFailuresAddr: 1000, Backoff: 3 * time.Second, MaxBackoff: time.Minute, Forget: time.Minute}
	gw1, gw2 := e.accounts(th), e.accounts(th)
	if _, err := gw1.Register(ctxT(t, 10*time.Second), "Tess", pw); err != nil {
		t.Fatal(err)
	}
	key := e.prefix + "login-failures:user:tess"

	// The free failures, then the one that starts the waits; every
	// spelling of the name counts for the one account.
	for i, name := range []string{"tess", "TESS", "ｔｅｓｓ"} {
		if _, err := login(t, gw1, name, "wrong password", "192.0.2.1:1000"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d: %v, want ErrBadCredentials", i+1, err)
		}
	}
	// Throttled on the other gateway, from another address, with the right
	// password: refused with the wait.
	_, err := login(t, gw2, "tess", pw, "192.0.2.2:2000")
	te, ok := throttled(err)
	if !ok || te.Wait <= 0 || te.Wait > th.Backoff || te.RetryAfter() < 1 || te.RetryAfter() > 3 || !errors.Is(err, ErrThrottled) {
		t.Fatalf("right password while throttled: %v, want a wait of at most %s", err, th.Backoff)
	}
	// A throttled login checks nothing: not even a store that is gone.
	gone, err := history.Open(ctxT(t, 10*time.Second), testenv.Mongo(t), e.ns)
	if err != nil {
		t.Fatal(err)
	}
	_ = gone.Close(ctxT(t, 5*time.Second))
	blind := New(Config{Redis: e.rdb, Prefix: e.prefix, Store: gone, Cost: bcrypt.MinCost, Throttle: th})
	if _, err := login(t, blind, "tess", pw, "192.0.2.3:1"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("throttled login with the user store gone: %v, want ErrThrottled (no password check)", err)
	}

	// Once the wait is over, the right password works, as the user's own
	// name; and it resets the counter.
	var user string
	testenv.WaitFor(t, 30*time.Second, "the right password works after the wait", func() bool {
		user, err = login(t, gw2, "TESS", pw, "192.0.2.2:2000")
		if _, ok := throttled(err); !ok && err != nil {
			t.Fatalf("login after the wait: %v", err)
		}
		return err == nil
	})
	if user != "tess" {
		t.Fatalf("logged in as %q, want tess", user)
	}
	if n, err := e.rdb.Exists(ctxT(t, 5*time.Second), key).Result(); err != nil || n != 0 {
		t.Fatalf("account counter after a successful login: exists=%d %v, want deleted", n, err)
	}
	for i := 0; i < 2; i++ {
		if _, err := login(t, gw1, "tess", "wrong password", "192.0.2.1:1000"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("free failure %d after the reset: %v", i+1, err)
		}
	}
	if e.until(key) != 0 {
		t.Fatal("the free failures after a reset made the account wait")
	}
}

// Each failure past the free ones doubles the wait, up to the longest;
// every counter has a TTL of at most its wait plus the forget time.
func TestLoginBackoffDoubles(t *testing.T) {
	e := newEnv(t)
	th := ThrottleConfig{FreeFailures: 1, FreeFailuresAddr: 1000, Backoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, Forget: time.Minute}
	a := e.accounts(th)
	if _, err := a.Register(ctxT(t, 10*time.Second), "tom", pw); err != nil {
		t.Fatal(err)
	}
	key := e.prefix + "login-failures:user:tom"
	if _, err := login(t, a, "tom", "wrong password", "192.0.2.1:1000"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	for _, want := range []time.Duration{100, 200, 400, 400, 400} {
		want *= time.Millisecond
		e.waitOpen(key)
		t0 := time.Now().UnixMilli()
		if _, err := login(t, a, "tom", "wrong password", "192.0.2.1:1000"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure: %v", err)
		}
		t1 := time.Now().UnixMilli()
		// The wait began with the attempt, between t0 and t1.
		if u := e.until(key); u-t1 > want.Milliseconds() || u-t0 < want.Milliseconds() {
			t.Fatalf("the wait after a failure ends %d to %d ms after it, want %s", u-t1, u-t0, want)
		}
	}
	keys, err := e.rdb.Keys(ctxT(t, 5*time.Second), e.prefix+"login-failures:*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("counters %v %v, want the account's and the address's", keys, err)
	}
	for _, k := range keys {
		ttl, err := e.rdb.PTTL(ctxT(t, 5*time.Second), k).Result()
		if err != nil || ttl <= 0 || ttl > th.MaxBackoff+th.Forget {
			t.Errorf("TTL of %s is %v (%v), want 0 < TTL <= %s", k, ttl, err, th.MaxBackoff+th.Forget)
		}
	}
}

// Logins tried in parallel are throttled as if made one after the other:
// no more than the free ones and the one that starts the waits get their
// password checked.
func TestLoginThrottleParallel(t *testing.T) {
	e := newEnv(t)
	th := ThrottleConfig{FreeFailures: 2, FreeFailuresAddr: 1000, Backoff: time.Minute, MaxBackoff: time.Minute, Forget: time.Minute}
	a := e.accounts(th)
	if _, err := a.Register(ctxT(t, 10*time.Second), "pia", pw); err != nil {
		t.Fatal(err)
	}
	var (
		wg            sync.WaitGroup
		mu            sync.Mutex
		denied, waits int
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Login(context.Background(), "pia", "wrong password", fmt.Sprintf("192.0.2.%d:1", i))
			mu.Lock()
			defer mu.Unlock()
			switch _, ok := throttled(err); {
			case errors.Is(err, ErrBadCredentials):
				denied++
			case ok:
				waits++
			default:
				t.Errorf("parallel login: %v", err)
			}
		}()
	}
	wg.Wait()
	if denied != 3 || waits != 9 {
		t.Fatalf("%d passwords checked and %d throttled, want 3 and 9", denied, waits)
	}
}

// The source address has a counter of its own, over every name tried from
// it: failures against many names make its logins wait, a real user's
// too, while other addresses are not affected; its successes do not reset
// it.
func TestLoginThrottlePerAddress(t *testing.T) {
	e := newEnv(t)
	th := ThrottleConfig{FreeFailures: 100, FreeFailuresAddr: 3, Backoff: time.Minute, MaxBackoff: time.Minute, Forget: time.Minute}
	a := e.accounts(th)
	for _, u := range []string{"ursula", "victor"} {
		if _, err := a.Register(ctxT(t, 10*time.Second), u, pw); err != nil {
			t.Fatal(err)
		}
	}
	// Successes from the address count nothing against it, not even many
	// at once (users behind one NAT).
	var crowd []string
	for i := range 10 {
		name := fmt.Sprintf("crowd%d", i)
		if _, err := a.Register(ctxT(t, 10*time.Second), name, pw); err != nil {
			t.Fatal(err)
		}
		crowd = append(crowd, name)
	}
	var wg sync.WaitGroup
	for i, name := range append(crowd, "victor") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.Login(context.Background(), name, pw, fmt.Sprintf("198.51.100.7:%d", 4000+i)); err != nil {
				t.Errorf("login of %s among many from one address: %v", name, err)
			}
		}()
	}
	wg.Wait()
	for i := range 4 { // names that exist and names that do not
		name := []string{"nobody1", "victor", "nobody2", "nobody3"}[i]
		if _, err := login(t, a, name, "wrong password", fmt.Sprintf("198.51.100.7:%d", 5000+i)); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d from the address: %v", i+1, err)
		}
	}
	if _, err := login(t, a, "ursula", pw, "198.51.100.7:6000"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("a right password from the throttled address: %v, want ErrThrottled", err)
	}
	if u, err := login(t, a, "ursula", pw, "198.51.100.8:6000"); err != nil || u != "ursula" {
		t.Fatalf("the right password from another address: %q %v", u, err)
	}
	// An IPv6 client counts by its /64.
	for i := range 4 {
		_, _ = login(t, a, "nobody", "wrong password", fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1))
	}
	if _, err := login(t, a, "ursula", pw, "[2001:db8:1:2:ffff::9]:7"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("another address of the same /64: %v, want ErrThrottled", err)
	}
	if _, err := login(t, a, "ursula", pw, "[2001:db8:1:3::1]:7"); err != nil {
		t.Fatalf("an address of another /64: %v", err)
	}
}

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.1:5000", "192.0.2.1"},
		{"192.0.2.1", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:22", "fe80::/64"},
		{"@", "@"},
		{"", ""},
	} {
		if got := SourceKey(tc.in); got != tc.want {
			t.Errorf("SourceKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestThrottleConfigValidate(t *testing.T) {
	ok := DefaultThrottle()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (ThrottleConfig{}).Validate(); err != nil {
		t.Fatalf("throttling off: %v", err)
	}
	for _, bad := range []ThrottleConfig{
		{FreeFailures: -1, Backoff: time.Second, MaxBackoff: time.Second, Forget: time.Second},
		{FreeFailuresAddr: -1, Backoff: time.Second, MaxBackoff: time.Second, Forget: time.Second},
		{Backoff: -time.Second},
		{Backoff: time.Microsecond, MaxBackoff: time.Second, Forget: time.Second},
		{Backoff: time.Second, MaxBackoff: time.Millisecond, Forget: time.Second},
		{Backoff: time.Second, MaxBackoff: time.Second},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// Registration refuses every lookalike of a taken name, and names that
// mix scripts; any spelling of a name logs in to its user.
func TestRegisterLookalikes(t *testing.T) {
	e := newEnv(t)
	a := e.accounts(DefaultThrottle())
	ctx := ctxT(t, 30*time.Second)
	if name, err := a.Register(ctx, "alice", pw); err != nil || name != "alice" {
		t.Fatalf("register alice: %q %v", name, err)
	}
	for _, name := range []string{"Alice", "ALICE", "ａｌｉｃｅ"} {
		if _, err := a.Register(ctx, name, pw); !errors.Is(err, ErrTaken) {
			t.Errorf("register %q beside alice: %v, want ErrTaken", name, err)
		}
	}
	for _, name := range []string{"аlice", "аlicе", "alicе"} { // Cyrillic а and е among Latin letters
		if _, err := a.Register(ctx, name, pw); !errors.Is(err, ErrInvalid) {
			t.Errorf("register %q: %v, want ErrInvalid (mixed scripts)", name, err)
		}
	}
	if name, err := a.Register(ctx, "Bob", pw); err != nil || name != "bob" {
		t.Fatalf("register Bob: %q %v, want the canonical name bob", name, err)
	}
	for _, spelling := range []string{"bob", "Bob", "BOB", "ｂｏｂ"} {
		if u, err := login(t, a, spelling, pw, "192.0.2.1:1"); err != nil || u != "bob" {
			t.Errorf("login as %q: %q %v, want bob", spelling, u, err)
		}
		if u, err := a.Resolve(ctx, spelling); err != nil || u != "bob" {
			t.Errorf("Resolve(%q) = %q %v, want bob", spelling, u, err)
		}
	}
	if _, err := a.Resolve(ctx, "bоb"); !errors.Is(err, ErrUnknownUser) { // Cyrillic о
		t.Errorf("Resolve of a lookalike in another script: %v, want ErrUnknownUser", err)
	}
}

// Users of an earlier build keep their names; their keys are reserved for
// them, the oldest first, so that no lookalike can be registered; the one
// that holds its key logs in by any spelling, the others by their exact
// names.
func TestMigrateNames(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 60*time.Second)
	users := e.mongo.Database(e.ns).Collection("users")
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	old := []struct{ name, pass string }{
		{"Carol", "carol's pass"}, // the oldest spelling of carol
		{"CAROL", "CAROL's pass"}, // a later one: exact name only
		{"Eve", "Eve's pass"},     // older than "eve", which holds the key anyway
		{"eve", "eve's pass"},
		{"аlex", "alex's pass"}, // a mixed-script name of old: kept as it is
	}
	for i, u := range old {
		hash, _ := bcrypt.GenerateFromPassword([]byte(u.pass), bcrypt.MinCost)
		if _, err := users.InsertOne(ctx, bson.D{{Key: "_id", Value: u.name}, {Key: "hash", Value: hash}, {Key: "created", Value: t0.Add(time.Duration(i) * time.Second)}}); err != nil {
			t.Fatal(err)
		}
	}
	a := e.accounts(DefaultThrottle())
	if err := a.MigrateNames(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ spelling, pass, user string }{
		{"Carol", "carol's pass", "Carol"},
		{"carol", "carol's pass", "Carol"},
		{"ｃａｒｏｌ", "carol's pass", "Carol"},
		{"CAROL", "CAROL's pass", "CAROL"},
		{"Eve", "Eve's pass", "Eve"},
		{"eve", "eve's pass", "eve"},
		{"EVE", "eve's pass", "eve"},
		{"аlex", "alex's pass", "аlex"},
	} {
		if u, err := login(t, a, tc.spelling, tc.pass, ""); err != nil || u != tc.user {
			t.Errorf("login as %q: %q %v, want %q", tc.spelling, u, err, tc.user)
		}
	}
	if _, err := login(t, a, "carol", "CAROL's pass", ""); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("CAROL's password for carol: %v, want ErrBadCredentials (carol is Carol)", err)
	}
	for _, name := range []string{"carol", "Carol", "ＣＡＲＯＬ", "eve"} {
		if _, err := a.Register(ctx, name, pw); !errors.Is(err, ErrTaken) {
			t.Errorf("register %q beside the old users: %v, want ErrTaken", name, err)
		}
	}
	for spelling, user := range map[string]string{"carol": "Carol", "CAROL": "CAROL", "Eve": "Eve", "EVE": "eve"} {
		if u, err := a.Resolve(ctx, spelling); err != nil || u != user {
			t.Errorf("Resolve(%q) = %q %v, want %q", spelling, u, err, user)
		}
	}
	// Idempotent: nothing is left to key.
	if keyed, aliased, err := e.store.KeyUsers(ctx, Key); err != nil || keyed != 0 || aliased != 0 {
		t.Fatalf("second KeyUsers: %d keyed, %d aliased, %v; want nothing", keyed, aliased, err)
	}
}

// A name once resolved resolves from memory: the recipient of every
// message costs no round trip to Redis. Unknown names are asked every
// time, so a user registered later is found.
func TestResolveRemembers(t *testing.T) {
	e := newEnv(t)
	own := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	a := New(Config{Redis: own, Prefix: e.prefix, Store: e.store, Cost: bcrypt.MinCost, Throttle: DefaultThrottle()})
	ctx := ctxT(t, 30*time.Second)
	if _, err := a.Register(ctx, "carol", pw); err != nil {
		t.Fatal(err)
	}
	if u, err := a.Resolve(ctx, "Carol"); err != nil || u != "carol" {
		t.Fatalf("Resolve(Carol) = %q %v", u, err)
	}
	if _, err := a.Resolve(ctx, "dave"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("Resolve(dave) before registering: %v, want ErrUnknownUser", err)
	}
	if _, err := a.Register(ctx, "dave", pw); err != nil {
		t.Fatal(err)
	}
	if u, err := a.Resolve(ctx, "dave"); err != nil || u != "dave" {
		t.Fatalf("Resolve(dave) after registering: %q %v", u, err)
	}
	own.Close() // every further round trip fails
	for _, name := range []string{"Carol", "dave"} {
		if u, err := a.Resolve(ctx, name); err != nil || u != strings.ToLower(name) {
			t.Errorf("Resolve(%q) with Redis gone = %q %v, want it remembered", name, u, err)
		}
	}
	if _, err := a.Resolve(ctx, "erin"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Resolve of a name never seen with Redis gone: %v, want ErrUnavailable", err)
	}
}

func TestKnownNamesBounded(t *testing.T) {
	var k knownNames
	for i := range knownNamesMax + 10 {
		k.put(strconv.Itoa(i), "u")
	}
	if n := len(k.names); n > knownNamesMax {
		t.Fatalf("%d names remembered, more than the bound %d", n, knownNamesMax)
	}
	if _, ok := k.get(strconv.Itoa(knownNamesMax + 9)); !ok {
		t.Fatal("the latest name is not remembered")
	}
}
