package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/event"

	"chatcluster/history"
)

// fullSources returns sources for every node metric, with fixed values.
func fullSources(backlogReads *int) NodeSources {
	return NodeSources{
		Connections: func() int { return 5 },
		LoggedIn:    func() int { return 4 },
		UplinkQueue: func() int { return 3 },
		PeerQueues:  func() map[string]int { return map[string]int{"n2": 7, "n3": 0} },
		IsLeader:    func() bool { return true },
		Epoch:       func() int64 { return 4294967301 },
		Rooms:       func() int { return 2 },
		Backlog: func(context.Context) (int64, error) {
			*backlogReads++
			return 42, nil
		},
		History: func() history.WriterStats {
			return history.WriterStats{Written: 10, Batches: 2, Failures: 1, Conflicts: 0, Malformed: 0}
		},
	}
}

// families gathers reg and returns the families by name.
func families(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value returns the value of the series of name whose labels include
// labels (name=value pairs); it fails the test when there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestNodeMetrics(t *testing.T) {
	reg := NewRegistry()
	reads := 0
	n := NewNode(reg, fullSources(&reads))

	n.MessagesInDM.Add(3)
	n.MessagesInRoom.Inc()
	n.PushMessage.Add(2)
	n.PushPresence.Inc()
	n.PushKicked.Inc()
	n.PushNode.Inc()
	n.ConnectionsOpened.Inc()
	n.LeaderFrameIn("route").Inc()
	n.LeaderFrameIn("room").Add(2)
	n.LeaderFrameIn("nonsense").Inc()
	n.ElectionsWon.Inc()
	n.ZKConnected.Set(1)

	fams := families(t, reg)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"chat_messages_in_total", []string{"kind", "dm"}, 3},
		{"chat_messages_in_total", []string{"kind", "room"}, 1},
		{"chat_pushes_out_total", []string{"kind", "message"}, 2},
		{"chat_pushes_out_total", []string{"kind", "presence"}, 1},
		{"chat_pushes_out_total", []string{"kind", "kicked"}, 1},
		{"chat_pushes_out_total", []string{"kind", "node"}, 1},
		{"chat_connections_opened_total", nil, 1},
		{"chat_connections", nil, 5},
		{"chat_connections_logged_in", nil, 4},
		{"chat_uplink_queue_length", nil, 3},
		{"chat_peer_queue_length", []string{"peer", "n2"}, 7},
		{"chat_peer_queue_length", []string{"peer", "n3"}, 0},
		{"chat_is_leader", nil, 1},
		{"chat_leader_epoch", nil, 4294967301},
		{"chat_rooms", nil, 2},
		{"chat_history_backlog", nil, 42},
		{"chat_history_written_total", nil, 10},
		{"chat_history_batches_total", nil, 2},
		{"chat_history_failures_total", nil, 1},
		{"chat_leader_frames_in_total", []string{"type", "route"}, 1},
		{"chat_leader_frames_in_total", []string{"type", "room"}, 2},
		{"chat_leader_frames_in_total", []string{"type", "other"}, 1},
		{"chat_leader_frames_in_total", []string{"type", "kick"}, 0},
		{"chat_elections_won_total", nil, 1},
		{"chat_zookeeper_connected", nil, 1},
		{"chat_slow_disconnects_total", nil, -1}, // absent: the name is client_slow_disconnects_total
	} {
		if tc.want < 0 {
			if _, ok := fams[tc.name]; ok {
				t.Errorf("%s should not exist", tc.name)
			}
			continue
		}
		if got := value(t, fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_open_fds", "chat_client_slow_disconnects_total",
		"chat_route_dropped_total", "chat_uplink_frames_total", "chat_uplink_dropped_total",
		"chat_leader_frames_out_total", "chat_leader_frames_dropped_total", "chat_leader_changes_total",
		"chat_client_frames_out_total", "chat_history_backlog_read_errors_total",
		"chat_push_repeated_total", "chat_uplink_resent_total", "chat_peer_resent_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no metric %s", name)
		}
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, Namespace+"_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// Every source is optional: a node without them registers the counters
// only, and gathering works.
func TestNodeWithoutSources(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewNode(reg, NodeSources{})
	fams := families(t, reg)
	for _, name := range []string{"chat_connections", "chat_history_backlog", "chat_peer_queue_length"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s registered without its source", name)
		}
	}
	if _, ok := fams["chat_messages_in_total"]; !ok {
		t.Error("chat_messages_in_total missing")
	}
}

// Two registries never share state: two nodes in one process count apart.
func TestRegistriesAreIndependent(t *testing.T) {
	r1, r2 := NewRegistry(), NewRegistry()
	n1, n2 := NewNode(r1, NodeSources{}), NewNode(r2, NodeSources{})
	n1.MessagesInDM.Inc()
	if testutil.ToFloat64(n2.MessagesInDM) != 0 || testutil.ToFloat64(n1.MessagesInDM) != 1 {
		t.Fatal("the two nodes' counters are shared")
	}
	NewGateway(prometheus.NewRegistry()) // and a gateway next to them
}

// The history backlog is read at most once per BacklogTTL however many
// scrapes come, and a failed read keeps the last value.
func TestBacklogIsCached(t *testing.T) {
	var mu sync.Mutex
	reads, fail := 0, false
	c := &cached{
		read: func(context.Context) (int64, error) {
			mu.Lock()
			defer mu.Unlock()
			reads++
			if fail {
				return 0, errors.New("redis down")
			}
			return int64(reads * 10), nil
		},
		ttl: 50 * time.Millisecond, timeout: time.Second,
		errs: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"}),
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if v := c.value(); v != 10 {
				t.Errorf("value %v, want 10", v)
			}
		})
	}
	wg.Wait()
	if reads != 1 {
		t.Fatalf("%d reads for 20 concurrent scrapes, want 1", reads)
	}
	time.Sleep(60 * time.Millisecond) // past the ttl, to force the next read
	mu.Lock()
	fail = true
	mu.Unlock()
	if v := c.value(); v != 10 {
		t.Fatalf("after a failed read: %v, want the last value 10", v)
	}
	if got := testutil.ToFloat64(c.errs); got != 1 {
		t.Fatalf("read errors %v, want 1", got)
	}
	if v := c.value(); v != 10 || reads != 2 {
		t.Fatalf("a failed read is not retried within the ttl: value %v, reads %d", v, reads)
	}
}

// The scrape of a registry reads the backlog once.
func TestScrapeReadsBacklogOnce(t *testing.T) {
	reg := NewRegistry()
	reads := 0
	NewNode(reg, fullSources(&reads))
	for range 3 {
		families(t, reg)
	}
	if reads != 1 {
		t.Fatalf("%d backlog reads for 3 scrapes within the ttl, want 1", reads)
	}
}

func TestTimerBoundsNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	tm := newTimer(reg, "test", "cmd", "test calls")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2 * maxNames {
				tm.observe(fmt.Sprintf("c%d", (i+g)%(2*maxNames)), time.Millisecond, i%2 == 0)
			}
		})
	}
	wg.Wait()
	tm.observe("", time.Millisecond, false)
	if n := testutil.CollectAndCount(tm.hist); n != maxNames+1 {
		t.Fatalf("%d series, want %d names and other", n, maxNames)
	}
	fams := families(t, reg)
	total := 0.0
	for _, m := range fams["chat_test_duration_seconds"].GetMetric() {
		total += float64(m.GetHistogram().GetSampleCount())
	}
	if total != 4*2*maxNames+1 {
		t.Fatalf("%v observations, want %d", total, 4*2*maxNames+1)
	}
	if value(t, fams, "chat_test_duration_seconds", "cmd", "other") == 0 {
		t.Fatal("names past the bound are not counted as other")
	}
}

// Counting on the hot path allocates nothing.
func TestHotPathDoesNotAllocate(t *testing.T) {
	n := NewNode(prometheus.NewRegistry(), NodeSources{})
	n.Deps.redis.observe("get", time.Millisecond, false) // create the child
	allocs := testing.AllocsPerRun(1000, func() {
		n.MessagesInDM.Inc()
		n.PushMessage.Inc()
		n.LeaderFrameIn("route").Inc()
		n.Deps.redis.observe("get", time.Millisecond, false)
		n.ObserveZK("get", time.Millisecond, nil)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message, want 0", allocs)
	}
}

func TestRedisHook(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := newDeps(reg, false)
	h := d.RedisHook()
	ctx := context.Background()

	proc := h.ProcessHook(func(context.Context, redis.Cmder) error { return redis.Nil })
	if err := proc(ctx, redis.NewStringCmd(ctx, "get", "k")); !errors.Is(err, redis.Nil) {
		t.Fatalf("hook changed the error: %v", err)
	}
	boom := errors.New("boom")
	proc = h.ProcessHook(func(context.Context, redis.Cmder) error { return boom })
	if err := proc(ctx, redis.NewStringCmd(ctx, "evalsha", "x")); err != boom {
		t.Fatalf("hook changed the error: %v", err)
	}
	pipe := h.ProcessPipelineHook(func(context.Context, []redis.Cmder) error { return nil })
	if err := pipe(ctx, []redis.Cmder{redis.NewStatusCmd(ctx, "xack")}); err != nil {
		t.Fatal(err)
	}

	fams := families(t, reg)
	for _, tc := range []struct {
		cmd         string
		calls, errs float64
	}{{"get", 1, 0}, {"evalsha", 1, 1}, {"pipeline", 1, 0}} {
		if got := value(t, fams, "chat_redis_command_duration_seconds", "cmd", tc.cmd); got != tc.calls {
			t.Errorf("%s: %v calls, want %v", tc.cmd, got, tc.calls)
		}
		if got := value(t, fams, "chat_redis_command_errors_total", "cmd", tc.cmd); got != tc.errs {
			t.Errorf("%s: %v errors, want %v", tc.cmd, got, tc.errs)
		}
	}
	if _, ok := fams["chat_zookeeper_request_duration_seconds"]; ok {
		t.Error("a Deps without ZooKeeper registered the ZooKeeper timer")
	}
	d.ObserveZK("get", time.Millisecond, nil) // a no-op there
}

func TestMongoMonitorAndZK(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := newDeps(reg, true)
	m := d.MongoMonitor()
	if m.Started != nil {
		t.Error("Started is set: the driver would copy every command for it")
	}
	ctx := context.Background()
	m.Succeeded(ctx, &event.CommandSucceededEvent{CommandFinishedEvent: event.CommandFinishedEvent{CommandName: "insert", Duration: 3 * time.Millisecond}})
	m.Failed(ctx, &event.CommandFailedEvent{CommandFinishedEvent: event.CommandFinishedEvent{CommandName: "insert", Duration: time.Millisecond}})
	d.ObserveZK("create", 2*time.Millisecond, nil)
	d.ObserveZK("create", 2*time.Millisecond, errors.New("connection closed"))

	fams := families(t, reg)
	if got := value(t, fams, "chat_mongo_command_duration_seconds", "cmd", "insert"); got != 2 {
		t.Errorf("mongo insert observations %v, want 2", got)
	}
	if got := value(t, fams, "chat_mongo_command_errors_total", "cmd", "insert"); got != 1 {
		t.Errorf("mongo insert errors %v, want 1", got)
	}
	if got := value(t, fams, "chat_zookeeper_request_duration_seconds", "op", "create"); got != 2 {
		t.Errorf("zookeeper create observations %v, want 2", got)
	}
	if got := value(t, fams, "chat_zookeeper_request_errors_total", "op", "create"); got != 1 {
		t.Errorf("zookeeper create errors %v, want 1", got)
	}
}

func TestGatewayMetrics(t *testing.T) {
	reg := NewRegistry()
	g := NewGateway(reg)
	g.ObserveRequest("GET /api/nodes", 200, 2*time.Millisecond)
	g.ObserveRequest("GET /api/nodes", 503, time.Millisecond)
	g.ObserveRequest("", 404, time.Millisecond)
	g.LoginOK.Inc()
	g.LoginDenied.Inc()
	g.RegisterTaken.Inc()
	g.NodeListOK.Add(2)

	fams := families(t, reg)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"chat_gateway_http_requests_total", []string{"route", "GET /api/nodes", "code", "200"}, 1},
		{"chat_gateway_http_requests_total", []string{"route", "GET /api/nodes", "code", "503"}, 1},
		{"chat_gateway_http_requests_total", []string{"route", "unmatched", "code", "404"}, 1},
		{"chat_gateway_http_request_duration_seconds", []string{"route", "GET /api/nodes"}, 2},
		{"chat_gateway_logins_total", []string{"result", "ok"}, 1},
		{"chat_gateway_logins_total", []string{"result", "denied"}, 1},
		{"chat_gateway_logins_total", []string{"result", "error"}, 0},
		{"chat_gateway_registrations_total", []string{"result", "taken"}, 1},
		{"chat_gateway_node_list_reads_total", []string{"result", "ok"}, 2},
	} {
		if got := value(t, fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, Namespace+"_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestAdminMux(t *testing.T) {
	reg := NewRegistry()
	n := NewNode(reg, NodeSources{})
	n.MessagesInRoom.Inc()
	srv := httptest.NewServer(AdminMux(reg))
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `chat_messages_in_total{kind="room"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/: %d\n%s", code, body)
	}
	if code, _ := get("/debug/pprof/goroutine?debug=1"); code != 200 {
		t.Fatalf("/debug/pprof/goroutine: %d", code)
	}
	if code, _ := get("/debug/pprof/cmdline"); code != 200 {
		t.Fatalf("/debug/pprof/cmdline: %d", code)
	}
	if code, _ := get("/elsewhere"); code != 404 {
		t.Fatalf("/elsewhere: %d, want 404", code)
	}
}
