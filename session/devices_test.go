package session_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/session"
)

// live is the cluster the device tests run in: nodes n1 to n3, run 1.
var live = []session.Live{{Node: "n1", Run: 1}, {Node: "n2", Run: 1}, {Node: "n3", Run: 1}}

func putDevice(t *testing.T, d *session.Devices, r session.Record) session.PutResult {
	t.Helper()
	res, err := d.Put(context.Background(), r, live)
	if err != nil {
		t.Fatalf("Put(%+v): %v", r, err)
	}
	return res
}

func listDevices(t *testing.T, d *session.Devices, user string) []session.Record {
	t.Helper()
	got, err := d.List(context.Background(), user)
	if err != nil {
		t.Fatalf("List(%s): %v", user, err)
	}
	return got
}

func conns(rs []session.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Conn
	}
	return out
}

func TestDevicesPutReplacesOnlyTheSameDevice(t *testing.T) {
	s, _, _ := newStore(t)
	testDevicesPut(t, s.Devices(3))
}

// The same on a Redis Cluster: a user's sessions are one key, so no script
// spans two slots.
func TestDevicesOnRedisCluster(t *testing.T) {
	rc := testenv.StartRedisCluster(t, false)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Seeds()})
	t.Cleanup(func() { rdb.Close() })
	s := session.NewStore(rdb, testenv.Namespace(t)+":")
	d := s.Devices(3)
	testDevicesPut(t, d)
	testDevicesBound(t, d)
	if ok, err := d.Delete(context.Background(), "alice", "phone-2"); err != nil || !ok {
		t.Fatalf("Delete on the cluster = %v, %v", ok, err)
	}
}

func testDevicesPut(t *testing.T, d *session.Devices) {
	phone1 := session.Record{User: "alice", Node: "n1", Conn: "phone-1", LoginTime: 1000, Version: 10, Run: 1, Device: "phone"}
	laptop := session.Record{User: "alice", Node: "n2", Conn: "laptop-1", LoginTime: 1100, Version: 11, Run: 1, Device: "laptop"}
	anon := session.Record{User: "alice", Node: "n2", Conn: "anon-1", LoginTime: 1200, Version: 12, Run: 1}
	phone2 := session.Record{User: "alice", Node: "n3", Conn: "phone-2", LoginTime: 1300, Version: 13, Run: 1, Device: "phone"}

	for _, r := range []session.Record{phone1, laptop, anon} {
		if res := putDevice(t, d, r); !res.Stored || res.Replaced != (session.Record{}) || res.Evicted != nil {
			t.Fatalf("Put(%s) = %+v, want stored, nothing replaced", r.Conn, res)
		}
	}
	if got := listDevices(t, d, "alice"); len(got) != 3 || got[0] != anon || got[1] != laptop || got[2] != phone1 {
		t.Fatalf("List = %+v, want anon, laptop, phone1 (newest first)", got)
	}
	// A retried Put is not a conflict.
	if res := putDevice(t, d, laptop); !res.Stored || res.Replaced != (session.Record{}) {
		t.Fatalf("repeated Put = %+v, want stored, nothing replaced", res)
	}
	// The phone reconnects (on another node): its old connection is
	// replaced and returned to be kicked; the other devices stay.
	if res := putDevice(t, d, phone2); !res.Stored || res.Replaced != phone1 || res.Evicted != nil {
		t.Fatalf("Put(phone2) = %+v, want stored, phone1 replaced", res)
	}
	if got := conns(listDevices(t, d, "alice")); fmt.Sprint(got) != "[phone-2 anon-1 laptop-1]" {
		t.Fatalf("List after the phone reconnected = %v", got)
	}
	// The phone's old login arriving late is refused and learns of the
	// newer one; so is another connection of the phone with the same
	// version.
	if res := putDevice(t, d, phone1); res.Stored || res.Newer != phone2 {
		t.Fatalf("late Put(phone1) = %+v, want refused by phone2", res)
	}
	dup := phone2
	dup.Conn = "phone-3"
	if res := putDevice(t, d, dup); res.Stored {
		t.Fatalf("Put of an equal version from another connection of the device = %+v, want refused", res)
	}
	// A late disconnect of the replaced connection removes nothing.
	if ok, err := d.Delete(context.Background(), "alice", "phone-1"); err != nil || ok {
		t.Fatalf("Delete(phone-1) = %v, %v; want false", ok, err)
	}
	if got := conns(listDevices(t, d, "alice")); fmt.Sprint(got) != "[phone-2 anon-1 laptop-1]" {
		t.Fatalf("List after a late delete = %v", got)
	}
	// Logging out one device removes only it.
	if ok, err := d.Delete(context.Background(), "alice", "anon-1"); err != nil || !ok {
		t.Fatalf("Delete(anon-1) = %v, %v; want true", ok, err)
	}
	if got := conns(listDevices(t, d, "alice")); fmt.Sprint(got) != "[phone-2 laptop-1]" {
		t.Fatalf("List after anon-1 logged out = %v", got)
	}
	for _, bad := range []session.Record{
		{Node: "n", Conn: "c", Version: 1},
		{User: "u", Node: "n", Version: 1},
		{User: "u", Node: "n", Conn: "c"},
	} {
		if _, err := d.Put(context.Background(), bad, live); err == nil {
			t.Errorf("Put(%+v) accepted an incomplete record", bad)
		}
	}
}

func TestDevicesBound(t *testing.T) {
	s, _, _ := newStore(t)
	testDevicesBound(t, s.Devices(3))
}

// Over the bound the oldest device goes; a login older than every device
// stored is refused; sessions of nodes that are gone go first.
func testDevicesBound(t *testing.T, d *session.Devices) {
	rec := func(i int, node string, run int64) session.Record {
		return session.Record{User: "bob", Node: node, Conn: fmt.Sprintf("b%d", i), LoginTime: int64(i), Version: int64(100 + i), Run: run}
	}
	for i := 1; i <= 3; i++ {
		if res := putDevice(t, d, rec(i, "n1", 1)); !res.Stored || res.Evicted != nil {
			t.Fatalf("Put(b%d) = %+v", i, res)
		}
	}
	// A fourth device: the oldest is evicted, to be kicked.
	res := putDevice(t, d, rec(4, "n2", 1))
	if !res.Stored || len(res.Evicted) != 1 || res.Evicted[0] != rec(1, "n1", 1) {
		t.Fatalf("Put of a fourth device = %+v, want b1 evicted", res)
	}
	if got := conns(listDevices(t, d, "bob")); fmt.Sprint(got) != "[b4 b3 b2]" {
		t.Fatalf("List = %v, want the three newest", got)
	}
	// A login older than all three arrives late: it is refused, nothing
	// changes.
	if res := putDevice(t, d, rec(0, "n3", 1)); res.Stored || res.Newer != (session.Record{}) {
		t.Fatalf("Put of a login older than every device = %+v, want refused over the bound", res)
	}
	if got := conns(listDevices(t, d, "bob")); fmt.Sprint(got) != "[b4 b3 b2]" {
		t.Fatalf("List after a refused login = %v", got)
	}
	// b4's node is restarted (another run): its session counts as gone
	// and goes before b2, though newer.
	res, err := d.Put(context.Background(), rec(5, "n3", 1), []session.Live{{Node: "n1", Run: 1}, {Node: "n2", Run: 2}, {Node: "n3", Run: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stored || len(res.Evicted) != 1 || res.Evicted[0].Conn != "b4" {
		t.Fatalf("Put with b4's node restarted = %+v, want b4 evicted", res)
	}
	// n3, which holds b5, the newest, leaves the cluster: b5 goes.
	res, err = d.Put(context.Background(), rec(6, "n2", 2), []session.Live{{Node: "n1", Run: 1}, {Node: "n2", Run: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stored || len(res.Evicted) != 1 || res.Evicted[0].Conn != "b5" {
		t.Fatalf("Put with b5's node gone = %+v, want b5 evicted", res)
	}
	if got := conns(listDevices(t, d, "bob")); fmt.Sprint(got) != "[b6 b3 b2]" {
		t.Fatalf("List = %v, want b6 b3 b2", got)
	}
}

// Many logins of one user at once, on a few named devices and on unnamed
// ones, in random order against their versions: whatever the order, each
// named device ends with its newest login, the bound holds the newest
// sessions, and every connection that did not end in Redis is told to go
// exactly once (refused, replaced or evicted).
func TestDevicesConcurrentPuts(t *testing.T) {
	s, _, _ := newStore(t)
	const (
		max = 5
		n   = 120
	)
	d := s.Devices(max)
	ctx := context.Background()
	recs := make([]session.Record, n)
	for i := range recs {
		v, err := s.NextVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = session.Record{User: "carol", Node: fmt.Sprintf("n%d", i%3+1), Conn: fmt.Sprintf("c%03d", i), LoginTime: int64(i), Version: v, Run: 1}
		if i%4 != 3 { // three in four name one of three devices
			recs[i].Device = fmt.Sprintf("dev%d", i%3)
		}
	}
	var (
		mu   sync.Mutex
		told = map[string]int{}
		wg   sync.WaitGroup
		errs = make(chan error, n)
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			r := recs[i]
			res, err := d.Put(ctx, r, live)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !res.Stored {
				told[r.Conn]++
				if res.Newer.Conn != "" && (res.Newer.Version <= r.Version || res.Newer.Device != r.Device) {
					errs <- fmt.Errorf("Put v%d of %q refused by %+v", r.Version, r.Device, res.Newer)
				}
				return
			}
			if res.Replaced.Conn != "" {
				told[res.Replaced.Conn]++
				if res.Replaced.Version >= r.Version || res.Replaced.Device != r.Device {
					errs <- fmt.Errorf("Put v%d of %q replaced %+v", r.Version, r.Device, res.Replaced)
				}
			}
			for _, ev := range res.Evicted {
				told[ev.Conn]++
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := listDevices(t, d, "carol")
	if len(got) != max {
		t.Fatalf("%d sessions stored, want the bound %d: %v", len(got), max, conns(got))
	}
	stored := map[string]bool{}
	for _, r := range got {
		stored[r.Conn] = true
	}
	// The newest logins are kept: the newest of each named device that
	// made the cut, and the newest unnamed ones.
	want := map[string]bool{}
	seen := map[string]bool{}
	for i := n - 1; i >= 0 && len(want) < max; i-- {
		r := recs[i]
		if r.Device != "" {
			if seen[r.Device] {
				continue
			}
			seen[r.Device] = true
		}
		want[r.Conn] = true
	}
	if fmt.Sprint(stored) != fmt.Sprint(want) {
		t.Fatalf("stored %v, want the newest logins %v", conns(got), want)
	}
	for _, r := range recs {
		k := told[r.Conn]
		if stored[r.Conn] && k != 0 {
			t.Errorf("%s is stored but was told to go %d times", r.Conn, k)
		}
		if !stored[r.Conn] && k != 1 {
			t.Errorf("%s is not stored and was told to go %d times, want once", r.Conn, k)
		}
	}
}

// Reconnects of one device race with the disconnects of its earlier
// connections, which arrive late: a delete never removes a newer session,
// so the newest connection, which never disconnects, keeps the device.
func TestDevicesStaleDeletes(t *testing.T) {
	s, _, _ := newStore(t)
	d := s.Devices(5)
	ctx := context.Background()
	const n = 100
	recs := make([]session.Record, n)
	for i := range recs {
		v, err := s.NextVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = session.Record{User: "dave", Node: "n1", Conn: fmt.Sprintf("d%03d", i), LoginTime: int64(i), Version: v, Run: 1, Device: "browser"}
	}
	// An unnamed device that stays logged in all along.
	other := putDevice(t, d, session.Record{User: "dave", Node: "n2", Conn: "stay", LoginTime: 1, Version: 1, Run: 1})
	if !other.Stored {
		t.Fatal("the other device was not stored")
	}
	// Every other connection goes: half of them at once, racing the
	// logins, the other half after every login is through.
	run := func(f func(i int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				if err := f(i); err != nil {
					errs <- err
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	run(func(i int) error {
		if _, err := d.Put(ctx, recs[i], live); err != nil || i%2 == 1 || i == n-1 {
			return err
		}
		_, err := d.Delete(ctx, "dave", recs[i].Conn)
		return err
	})
	run(func(i int) error {
		if i%2 == 0 || i == n-1 {
			return nil
		}
		_, err := d.Delete(ctx, "dave", recs[i].Conn)
		return err
	})
	if got := conns(listDevices(t, d, "dave")); fmt.Sprint(got) != fmt.Sprintf("[%s stay]", recs[n-1].Conn) {
		t.Fatalf("sessions after the race = %v, want the newest connection of the browser and the other device", got)
	}
	// A delete of the newest comes last: the device is gone, the other
	// stays.
	if ok, err := d.Delete(ctx, "dave", recs[n-1].Conn); err != nil || !ok {
		t.Fatalf("Delete of the newest = %v, %v", ok, err)
	}
	if got := conns(listDevices(t, d, "dave")); fmt.Sprint(got) != "[stay]" {
		t.Fatalf("sessions = %v, want [stay]", got)
	}
}
