package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"chatcluster/internal/testenv"
)

// After some chats, the metrics of every node (on its admin listener) and
// of the gateway (on its public port) say what happened: messages in and
// out, connections, frames through the leader, the leader's epoch, history
// written, and Redis, MongoDB and ZooKeeper calls timed. pprof answers on
// the admin listeners only.
func TestMetrics(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	leaderID := c.WaitLeader(t)
	testenv.WaitFor(t, 15*time.Second, "the leader links to both nodes", func() bool { return linked(t, c) })
	li := c.Index(leaderID)
	fi := 1 - li
	register(t, c, "mia", "max", "mo")
	if _, _, err := gw(c).Login(ctxT(t, 10*time.Second), "mia", password); err != nil {
		t.Fatalf("gateway login: %v", err)
	}
	if _, _, err := gw(c).Login(ctxT(t, 10*time.Second), "mia", "wrong password"); err == nil {
		t.Fatal("gateway login with a wrong password succeeded")
	}

	// mia on n1; max and mo on n2.
	mia := connect(t, c.Node(0).WSURL, "mia")
	maxU := connect(t, c.Node(1).WSURL, "max")
	mo := connect(t, c.Node(1).WSURL, "mo")
	for _, u := range []*user{mia, mo} {
		join(t, u, "metrics")
	}
	const miaDMs, maxDMs, miaRoom, moRoom = 7, 4, 3, 2
	for i := range miaDMs {
		if _, err := mia.conn.Chat(ctxT(t, 10*time.Second), "max", text("mia", i), fmt.Sprintf("mia-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A resent clientMsgId is not a new message.
	if _, err := mia.conn.Chat(ctxT(t, 10*time.Second), "max", text("mia", 0), "mia-0"); err != nil {
		t.Fatal(err)
	}
	for i := range maxDMs {
		if _, err := maxU.conn.Chat(ctxT(t, 10*time.Second), "mia", text("max", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range miaRoom {
		if _, err := mia.conn.ChatRoom(ctxT(t, 10*time.Second), "metrics", text("mia", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range moRoom {
		if _, err := mo.conn.ChatRoom(ctxT(t, 10*time.Second), "metrics", text("mo", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	const rooms = miaRoom + moRoom
	want := map[*user]int{mia: maxDMs + rooms, maxU: miaDMs, mo: rooms}
	for u, n := range want {
		testenv.WaitFor(t, 15*time.Second, fmt.Sprintf("%s receives %d messages", u.name, n), func() bool { return len(u.received()) >= n })
	}
	// Any node's history writer may take a message: together they write
	// every one (a redelivered one counts again).
	const total = miaDMs + maxDMs + rooms
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("the history writers write %d messages", total), func() bool {
		var written, batches float64
		for i := range 2 {
			m := scrape(t, "http://"+c.Node(i).AdminAddr+"/metrics")
			n, _ := m.value("chat_history_written_total")
			written += n
			n, _ = m.value("chat_history_batches_total")
			batches += n
		}
		return written >= total && batches >= 1
	})
	view := clusterInfo(t, c)

	// Per node: messages in, connections, pushes out, leadership.
	type nodeWant struct {
		dm, room, conns, pushes float64
	}
	wants := []nodeWant{
		{dm: miaDMs, room: miaRoom, conns: 1, pushes: maxDMs + rooms},
		{dm: maxDMs, room: moRoom, conns: 2, pushes: miaDMs + rooms},
	}
	for i, w := range wants {
		p := c.Node(i)
		m := scrape(t, "http://"+p.AdminAddr+"/metrics")
		m.expect(t, p.ID, "chat_messages_in_total", w.dm, "kind", "dm")
		m.expect(t, p.ID, "chat_messages_in_total", w.room, "kind", "room")
		m.expect(t, p.ID, "chat_connections_logged_in", w.conns)
		m.expect(t, p.ID, "chat_connections", w.conns)
		m.expect(t, p.ID, "chat_connections_opened_total", w.conns)
		m.expect(t, p.ID, "chat_pushes_out_total", w.pushes, "kind", "message")
		m.expect(t, p.ID, "chat_leader_epoch", float64(view.Epoch))
		m.expect(t, p.ID, "chat_zookeeper_connected", 1)
		m.expect(t, p.ID, "chat_uplink_queue_length", 0)
		m.expect(t, p.ID, "chat_client_slow_disconnects_total", 0)
		other := c.Node(1 - i).ID
		if _, ok := m.value("chat_peer_queue_length", "peer", other); !ok {
			t.Errorf("%s: no chat_peer_queue_length for its link with %s", p.ID, other)
		}
		for _, h := range []string{"chat_redis_command_duration_seconds", "chat_mongo_command_duration_seconds", "chat_zookeeper_request_duration_seconds"} {
			if n := m.samples(h); n == 0 {
				t.Errorf("%s: %s has no observations", p.ID, h)
			}
		}
		if n, _ := m.value("chat_redis_command_duration_seconds", "cmd", "evalsha"); n == 0 {
			t.Errorf("%s: no Redis evalsha (the message store script) timed", p.ID)
		}
		if n, _ := m.value("process_open_fds"); n == 0 {
			t.Errorf("%s: no process collector", p.ID)
		}
		if i == li {
			m.expect(t, p.ID, "chat_is_leader", 1)
			m.expect(t, p.ID, "chat_rooms", 1)
			// Every direct message crossed nodes, so each went through
			// the leader once as a route frame; each join and post is a
			// room request to the leader.
			m.expect(t, p.ID, "chat_leader_frames_in_total", miaDMs+maxDMs, "type", "route")
			m.expect(t, p.ID, "chat_leader_frames_in_total", 2+rooms, "type", "room")
			if n, _ := m.value("chat_elections_won_total"); n < 1 {
				t.Errorf("%s leads but chat_elections_won_total is %v", p.ID, n)
			}
			if n, _ := m.value("chat_leader_frames_out_total"); n == 0 {
				t.Errorf("%s leads but queued no frame to the other node", p.ID)
			}
		} else {
			m.expect(t, p.ID, "chat_is_leader", 0)
			m.expect(t, p.ID, "chat_rooms", 0)
			m.expect(t, p.ID, "chat_elections_won_total", 0)
			m.expect(t, p.ID, "chat_leader_frames_in_total", 0, "type", "route")
			// Its direct messages went up the link as route frames, its
			// room requests as room frames, and more (logins, load).
			sent := wants[fi].dm + wants[fi].room + 1
			if n, _ := m.value("chat_uplink_frames_total"); n < sent {
				t.Errorf("%s sent %v frames up to the leader, want at least %v", p.ID, n, sent)
			}
		}
		if _, ok := m.value("chat_history_failures_total"); !ok {
			t.Errorf("%s: no chat_history_failures_total", p.ID)
		}
	}
	// The backlog gauge (read at most once a second) comes down to 0 too.
	testenv.WaitFor(t, 10*time.Second, "chat_history_backlog is 0", func() bool {
		n, ok := scrape(t, "http://"+c.Node(li).AdminAddr+"/metrics").value("chat_history_backlog")
		return ok && n == 0
	})

	// The gateway, on its public port.
	g := scrape(t, c.GatewayURL()+"/metrics")
	g.expect(t, "gateway", "chat_gateway_registrations_total", 3, "result", "ok")
	g.expect(t, "gateway", "chat_gateway_logins_total", 1, "result", "ok")
	g.expect(t, "gateway", "chat_gateway_logins_total", 1, "result", "denied")
	g.expect(t, "gateway", "chat_gateway_http_requests_total", 3, "route", "POST /api/register", "code", "201")
	g.expect(t, "gateway", "chat_gateway_http_requests_total", 1, "route", "POST /api/login", "code", "401")
	if n, _ := g.value("chat_gateway_node_list_reads_total", "result", "ok"); n == 0 {
		t.Error("gateway: chat_gateway_node_list_reads_total{result=ok} is 0 after /api/nodes and /api/cluster reads")
	}
	if n, _ := g.value("chat_gateway_http_request_duration_seconds", "route", "GET /api/cluster"); n == 0 {
		t.Error("gateway: no latency observed for GET /api/cluster")
	}
	for _, h := range []string{"chat_redis_command_duration_seconds", "chat_mongo_command_duration_seconds"} {
		if n := g.samples(h); n == 0 {
			t.Errorf("gateway: %s has no observations", h)
		}
	}
	if _, ok := g.fams["chat_zookeeper_request_duration_seconds"]; ok {
		t.Error("gateway: exports ZooKeeper timings, but it does not use ZooKeeper")
	}

	// pprof and node metrics live on the admin listeners only.
	for _, tc := range []struct {
		url  string
		code int
	}{
		{"http://" + c.Node(0).AdminAddr + "/debug/pprof/", http.StatusOK},
		{"http://" + c.Node(0).AdminAddr + "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{"http://" + c.Gateway().AdminAddr + "/debug/pprof/", http.StatusOK},
		{"http://" + c.Node(0).Listen + "/debug/pprof/", http.StatusNotFound},
		{"http://" + c.Node(0).Listen + "/metrics", http.StatusNotFound},
		{"http://" + c.Node(0).PeerAddr + "/debug/pprof/", http.StatusNotFound},
		{"http://" + c.Node(0).PeerAddr + "/metrics", http.StatusNotFound},
		{c.GatewayURL() + "/debug/pprof/", http.StatusNotFound},
		{c.GatewayURL() + "/debug/pprof/goroutine", http.StatusNotFound},
	} {
		if code, body := httpGet(t, tc.url); code != tc.code {
			t.Errorf("GET %s: %d, want %d\n%.300s", tc.url, code, tc.code, body)
		}
	}
}

// metricSet is one scrape, parsed.
type metricSet struct {
	fams map[string]*dto.MetricFamily
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// scrape reads a Prometheus endpoint in the text format.
func scrape(t *testing.T, url string) metricSet {
	t.Helper()
	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%.500s", url, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return metricSet{fams: fams}
}

// value returns the value of the series of name that has the labels
// (name, value pairs): a counter's or gauge's value, a histogram's sample
// count.
func (s metricSet) value(name string, labels ...string) (float64, bool) {
	mf, ok := s.fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// samples is the number of observations of a histogram, all series.
func (s metricSet) samples(name string) uint64 {
	var n uint64
	for _, m := range s.fams[name].GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func (s metricSet) expect(t *testing.T, who, name string, want float64, labels ...string) {
	t.Helper()
	got, ok := s.value(name, labels...)
	switch {
	case !ok:
		t.Errorf("%s: no series %s%v", who, name, labels)
	case got != want:
		t.Errorf("%s: %s%v = %v, want %v", who, name, labels, got, want)
	}
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
