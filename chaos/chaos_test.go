package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Settings of the run that the environment does not change.
const (
	chaosNodes      = 3
	sessionTimeout  = 2 * time.Second // the nodes' ZooKeeper session timeout
	sendInterval    = 50 * time.Millisecond
	roomShare       = 0.4
	deliveryTimeout = 25 * time.Second // for live delivery to every client after a fault (failover)
	recoveryTimeout = 45 * time.Second // for the reconnects (with sync) after a fault
	wholeTimeout    = 45 * time.Second // for the cluster to be whole again
	settleTimeout   = 2 * time.Minute  // for the final sync of every client
	pauseTimeout    = 75 * time.Second // for every client to finish its action in flight (a send gives up after 60 s)
	checkTimeout    = time.Minute      // for the settle, and for the server's answers, of a checkpoint
	checkWindow     = 1000             // seqs of each conversation a checkpoint after a fault compares
	downAcks        = 50               // a dependency stays down until this many sends were acknowledged...
	downAtMost      = 5 * time.Second  // ...or this long
	maxUnrecovered  = 3                // faults in a row without recovery that end the run
	steadyAcks      = 100              // between faults: this many acknowledged sends...
	steadyAtMost    = 3 * time.Second  // ...or this long
	chaosPassword   = "chaos-password"
)

var chaosRooms = []string{"lobby", "ops"}

type runConfig struct {
	faults   []string // CHAT_CHAOS_FAULTS: only these kinds (Fault.Key); all when empty
	rounds   int
	clients  int    // connections of the chat workload: users' devices
	login    string // CHAT_CHAOS_LOGIN: the cluster's login policy, single or multi
	devices  int    // CHAT_CHAOS_DEVICES: users with a second device (multi only)
	duration time.Duration
	messages int64
	seed     int64
	redis    string // CHAT_CHAOS_REDIS: single, sentinel or cluster
	support  bool   // CHAT_CHAOS_SUPPORT: run the customer-service workload too
	logs     string // CHAT_CHAOS_LOGS: a folder to copy the run's logs into at the end
}

func loadConfig(t *testing.T) runConfig {
	t.Helper()
	num := func(name string, def int64, lo int64) int64 {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < lo {
			t.Fatalf("%s=%q: want a whole number of at least %d", name, v, lo)
		}
		return n
	}
	cfg := runConfig{
		rounds:  int(num("CHAT_CHAOS_ROUNDS", 1, 1)),
		clients: int(num("CHAT_CHAOS_CLIENTS", 6, 2)),
		seed:    num("CHAT_CHAOS_SEED", time.Now().UnixNano()%1_000_000, 0),
		redis:   os.Getenv("CHAT_CHAOS_REDIS"),
		support: os.Getenv("CHAT_CHAOS_SUPPORT") != "0",
		logs:    os.Getenv("CHAT_CHAOS_LOGS"),
	}
	switch cfg.login = os.Getenv("CHAT_CHAOS_LOGIN"); cfg.login {
	case "":
		cfg.login = "multi"
	case "single", "multi":
	default:
		t.Fatalf("CHAT_CHAOS_LOGIN=%q: want single or multi", cfg.login)
	}
	// Of the clients, some are second devices of users: at most one per
	// user, and at least two users.
	def := int64(0)
	if cfg.login == "multi" {
		def = 2
	}
	cfg.devices = min(int(num("CHAT_CHAOS_DEVICES", def, 0)), cfg.clients/2, cfg.clients-2)
	if cfg.login == "single" && cfg.devices > 0 {
		t.Fatalf("CHAT_CHAOS_DEVICES=%d: a second device needs CHAT_CHAOS_LOGIN=multi (under single each login kicks the other)", cfg.devices)
	}
	switch cfg.redis {
	case "":
		cfg.redis = "single"
	case "single", "sentinel", "cluster":
	default:
		t.Fatalf("CHAT_CHAOS_REDIS=%q: want single, sentinel or cluster", cfg.redis)
	}
	cfg.messages = num("CHAT_CHAOS_MESSAGES", 20000*int64(cfg.rounds), 1)
	cfg.duration = 2*time.Minute + time.Duration(cfg.rounds)*90*time.Second
	if v := os.Getenv("CHAT_CHAOS_FAULTS"); v != "" {
		for _, k := range strings.Split(v, ",") {
			if !slices.ContainsFunc(Faults, func(f Fault) bool { return f.Key() == k }) {
				t.Fatalf("CHAT_CHAOS_FAULTS=%q: unknown fault %q; the kinds are kill-leader, kill-follower, pause-leader, redis, mongo, zk", v, k)
			}
			cfg.faults = append(cfg.faults, k)
		}
	}
	if v := os.Getenv("CHAT_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("CHAT_CHAOS_DURATION=%q: want a positive Go duration such as 20m", v)
		}
		cfg.duration = d
	}
	return cfg
}

// TestChaos runs the workload over a three-node cluster while it injects
// every kind of fault CHAT_CHAOS_ROUNDS times, then checks the record.
// See the package comment.
func TestChaos(t *testing.T) {
	cfg := loadConfig(t)
	started := time.Now()
	injectUntil := started.Add(cfg.duration)

	mongo := testenv.StartMongo(t)
	opts := testenv.Options{
		Nodes:          chaosNodes,
		SessionTimeout: sessionTimeout,
		Env: []string{"CHAT_RATE_LIMIT=100000", "CHAT_VISITORS_PER_MINUTE=0", "CHAT_SUPPORT_GRACE=" + supportGrace.String(),
			"CHAT_LOGIN_POLICY=" + cfg.login},
		ZK:    testenv.ZKEnsemble(t),
		Mongo: mongo.URI(),
	}
	var redis *testenv.RedisServer
	var sentinel *testenv.SentinelRedis
	var rcluster *testenv.RedisCluster
	switch cfg.redis {
	case "sentinel":
		sentinel = testenv.StartSentinelRedis(t)
		opts.RedisSentinels, opts.RedisMaster = sentinel.Sentinels(), testenv.SentinelMaster
	case "cluster":
		rcluster = testenv.StartRedisCluster(t, true)
		opts.RedisCluster, opts.RedisClusterReplicas = rcluster.Seeds(), true
	default:
		redis = testenv.StartRedis(t)
		opts.Redis = redis.Addr()
	}
	t.Logf("chaos: Redis %s", cfg.redis)
	c := testenv.StartCluster(t, opts)
	if cfg.logs != "" {
		// Registered after the cluster's own clean-up, so it runs
		// before the folders go.
		t.Cleanup(func() { keepLogs(t, cfg.logs, filepath.Dir(filepath.Dir(c.Node(0).Log))) })
	}
	h := &harness{t: t, c: c, redis: redis, sentinel: sentinel, rcluster: rcluster, mongo: mongo, gw: &chatclient.Gateway{URL: c.GatewayURL()},
		rec: NewRecord(), budget: NewBudget(cfg.messages), rng: rand.New(rand.NewPCG(uint64(cfg.seed), 2))}
	c.WaitLeader(t)
	if err := h.awaitWhole(wholeTimeout); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Users c1..cN; the first cfg.devices of them have two devices (two
	// clients, each its own connection, device name, offsets and view).
	names := make([]string, cfg.clients-cfg.devices)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i+1)
		if err := h.gw.Register(ctx, names[i], chaosPassword); err != nil {
			t.Fatalf("register %s: %v", names[i], err)
		}
	}
	type device struct{ user, id, name string }
	var devices []device
	for i, name := range names {
		switch {
		case cfg.login == "single":
			devices = append(devices, device{name, name, ""})
		case i < cfg.devices:
			devices = append(devices, device{name, name + ".d1", "d1"}, device{name, name + ".d2", "d2"})
		default:
			devices = append(devices, device{name, name, "d1"})
		}
	}
	kick := protocol.KickSameDevice
	if cfg.login == "single" {
		kick = protocol.KickElsewhere
	}
	for i, d := range devices {
		cl := NewClient(ClientConfig{
			Name: d.user, ID: d.id, Device: d.name, Kick: kick, Password: chaosPassword,
			Peers:     slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == d.user }),
			Rooms:     chaosRooms,
			Members:   names,
			Gateway:   h.gw,
			Record:    h.rec,
			Budget:    h.budget,
			Interval:  sendInterval,
			RoomShare: roomShare,
			Seed:      uint64(cfg.seed)*1000 + uint64(i),
			Logf:      t.Logf,
		})
		h.clients = append(h.clients, cl)
		cl.Start(ctx)
	}
	defer func() {
		for _, cl := range h.clients {
			cl.Close()
		}
	}()
	if slow := h.awaitReconnected(make([]int, len(h.clients)), recoveryTimeout); len(slow) > 0 {
		t.Fatalf("clients %v did not connect", slow)
	}
	for _, cl := range h.clients {
		if err := cl.JoinRooms(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t0 := h.watchAll()
	for _, cl := range h.clients {
		cl.StartSending()
	}
	if _, ok, note := h.awaitDelivery(t0, recoveryTimeout); !ok {
		t.Fatalf("no traffic before the first fault: %s", note)
	}
	var sup *SupportLoad
	if cfg.support {
		sup = h.startSupport(ctx, uint64(cfg.seed))
		h.sup = sup
		defer sup.Close()
	}

	schedule := Schedule(cfg.rounds, cfg.seed)
	if len(cfg.faults) > 0 {
		schedule = Only(schedule, cfg.faults)
	}
	report := Report{Clients: cfg.clients, Users: len(names), Login: cfg.login, Nodes: chaosNodes, Rounds: cfg.rounds, Seed: cfg.seed, Redis: cfg.redis, Scheduled: len(schedule)}
	t.Logf("chaos: %d clients (%d users, %d with two devices, login policy %s), %d faults (seed %d), at most %s and %d messages",
		cfg.clients, len(names), cfg.devices, cfg.login, len(schedule), cfg.seed, cfg.duration, cfg.messages)
	unrecovered := 0 // faults in a row the cluster did not recover from
	for i, f := range schedule {
		if time.Now().After(injectUntil) {
			report.Stopped = fmt.Sprintf("time bound of %s reached after %d of %d faults", cfg.duration, i, len(schedule))
			break
		}
		if h.budget.Exhausted() {
			report.Stopped = fmt.Sprintf("message bound of %d reached after %d of %d faults", cfg.messages, i, len(schedule))
			break
		}
		fr := h.inject(i, f)
		report.Faults = append(report.Faults, fr)
		status := fmt.Sprintf("failover %s", fr.Failover.Round(time.Millisecond))
		if !fr.Recovered {
			status = "NOT RECOVERED: " + fr.Note
		} else if fr.Note != "" {
			status += "; " + fr.Note
		}
		t.Logf("fault %d/%d %s (%s): %s; %d acknowledged so far", i+1, len(schedule), f, fr.Target, status, h.rec.AckCount())
		if fr.Recovered {
			unrecovered = 0
		} else if unrecovered++; unrecovered == maxUnrecovered {
			// More faults on a cluster that did not recover from the
			// last ones would tell nothing more: check what there is.
			report.Stopped = fmt.Sprintf("the cluster did not recover from %d faults in a row (the last: fault %d of %d, %s); no further faults injected",
				unrecovered, i+1, len(schedule), f)
			break
		}
		// The clients' final views must agree with each other and with
		// the server's after every fault. The time the checkpoint takes
		// does not count against the time bound.
		cpStart := time.Now()
		h.checkpoint(fmt.Sprintf("after fault %d (%s)", i+1, f), true)
		injectUntil = injectUntil.Add(time.Since(cpStart))
		h.steady()
	}

	// Complete the record: stop sending, bring every client to the latest
	// of every conversation, then stop the clients.
	if sup != nil {
		supCtx, supCancel := context.WithTimeout(ctx, settleTimeout)
		if err := sup.Stop(supCtx); err != nil {
			t.Error(err)
		}
		supCancel()
	}
	var wg sync.WaitGroup
	for _, cl := range h.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.StopSending()
		}()
	}
	wg.Wait()
	settleCtx, settleCancel := context.WithTimeout(ctx, settleTimeout)
	errs := make([]error, len(h.clients))
	for i, cl := range h.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cl.Settle(settleCtx)
		}()
	}
	wg.Wait()
	settleCancel()
	h.checkpoint("at the end", false)
	for _, cl := range h.clients {
		cl.Close()
	}
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var reconnects, catchUpFailures, kicked, rebuilds, gapSyncs, refused, readsBack int64
	for _, cl := range h.clients {
		reconnects += cl.Reconnects.Load()
		catchUpFailures += cl.CatchUpFailures.Load()
		kicked += cl.Kicked.Load()
		rebuilds += cl.Rebuilds.Load()
		gapSyncs += cl.GapSyncs.Load()
		refused += cl.Refused.Load()
		readsBack += cl.ReadsGivenBack.Load()
	}
	t.Logf("clients: %d connections, %d failed catch-up syncs, %d kicked, %d rebuild uploads, %d gap syncs, %d refusals, %d read positions given back",
		reconnects, catchUpFailures, kicked, rebuilds, gapSyncs, refused, readsBack)

	report.Result = Check(h.rec)
	if sup != nil {
		checkCtx, checkCancel := context.WithTimeout(ctx, settleTimeout)
		sr := sup.Check(checkCtx, h.gw)
		checkCancel()
		report.Support = &sr
	}
	report.Elapsed = time.Since(started)
	fmt.Print(report.Table())
	if !report.OK() {
		t.Errorf("chaos run failed: %d lost, %d duplicates shown, %d out of order, %d final views differing, %d read positions went back, %d of %d faults injected, %d not recovered%s",
			report.Result.Lost, report.Result.Duplicates, report.Result.OutOfOrder, report.Result.FinalDiffers, report.Result.ReadBack,
			len(report.Faults), report.Scheduled, len(report.Unrecovered()), stoppedNote(report.Stopped))
	}
}

// The customer-service workload: three agents of capacity 2, a visitor
// every 1.5 s, each writing 4 messages; an agent offline longer than the
// grace period loses its conversations to the queue.
const (
	supportGrace    = 4 * time.Second
	supportAgents   = 3
	supportCapacity = 2
	supportArrival  = 1500 * time.Millisecond
	supportMessages = 4
)

// startSupport makes the agents and starts the customer-service workload.
func (h *harness) startSupport(ctx context.Context, seed uint64) *SupportLoad {
	var agents []string
	for i := range supportAgents {
		name := fmt.Sprintf("agent%d", i+1)
		if err := h.gw.Register(ctx, name, chaosPassword); err != nil {
			h.t.Fatalf("register %s: %v", name, err)
		}
		h.c.Admin(h.t, "agent", "add", name, "--capacity", strconv.Itoa(supportCapacity))
		agents = append(agents, name)
	}
	sup := NewSupportLoad(SupportConfig{
		Gateway: h.gw, Agents: agents, Password: chaosPassword, Capacity: supportCapacity,
		Arrival: supportArrival, Messages: supportMessages, Seed: seed, Logf: h.t.Logf,
		LeaderAdmin: func() string {
			v, err := h.clusterView()
			if err != nil || v.Leader == "" {
				return ""
			}
			i := h.c.Index(v.Leader)
			if i < 0 || !h.c.Running(i) {
				return ""
			}
			return h.c.Node(i).AdminAddr
		},
	}, NewRecord())
	sup.Start()
	h.t.Logf("chaos: customer service: %d agents of capacity %d, a visitor every %s writing %d messages, grace %s",
		supportAgents, supportCapacity, supportArrival, supportMessages, supportGrace)
	return sup
}

func stoppedNote(s string) string {
	if s == "" {
		return ""
	}
	return "; " + s
}

// harness injects faults into the cluster and watches the clients.
type harness struct {
	t     *testing.T
	c     *testenv.Cluster
	redis *testenv.RedisServer // with CHAT_CHAOS_REDIS=single
	// sentinel is the Redis of CHAT_CHAOS_REDIS=sentinel.
	sentinel *testenv.SentinelRedis
	// rcluster is the Redis of CHAT_CHAOS_REDIS=cluster; redisNext picks
	// the master its next fault kills.
	rcluster  *testenv.RedisCluster
	redisNext int
	mongo     *testenv.MongoServer
	gw        *chatclient.Gateway
	clients   []*Client
	sup       *SupportLoad // the customer-service workload, when it runs
	rec       *Record
	budget    *Budget
	rng       *rand.Rand
	zkNext    int
}

// poll checks cond every 10 ms until it holds or timeout passes, and
// reports whether it held.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inject injects fault f (the i-th of the run), has every client
// reconnect and sync, waits for the cluster to deliver again and to be
// whole (three nodes, a leader linked to all), and reports how it went.
func (h *harness) inject(i int, f Fault) FaultRun {
	fr := FaultRun{Fault: f}
	var t0 time.Time
	var tickets []int
	restart := -1
	switch f {
	case KillLeader, KillFollower, PauseLeader:
		leader := h.c.WaitLeader(h.t)
		idx := h.c.Index(leader)
		if f == KillFollower {
			var followers []int
			for j := range h.c.Len() {
				if j != idx && h.c.Running(j) {
					followers = append(followers, j)
				}
			}
			idx = followers[h.rng.IntN(len(followers))]
		}
		fr.Target = h.c.Node(idx).ID
		t0 = h.watchAll()
		if f != PauseLeader {
			h.c.Kill(idx)
			restart = idx
			tickets = h.reconnectAll([]string{fr.Target})
			break
		}
		h.c.Pause(idx)
		tickets = h.reconnectAll([]string{fr.Target})
		// Past the session timeout: the stopped leader's session
		// expired, so the gateway no longer lists it, and another
		// leads.
		past := poll(recoveryTimeout, func() bool {
			n, err := h.nodes()
			return err == nil && n.Leader != "" && n.Leader != fr.Target && !slices.ContainsFunc(n.Nodes, func(x chatclient.NodeInfo) bool { return x.ID == fr.Target })
		})
		if !past {
			fr.Note = "the stopped leader's session did not expire"
		}
		fr.Note = joinNote(fr.Note, fmt.Sprintf("stopped for %s", time.Since(t0).Round(time.Millisecond)))
		h.c.Resume(idx)
	case RestartRedis:
		fr.Target = "redis"
		h.rec.AddRedisLoss() // read positions of the last seconds may go back (ReadDurableAfter)
		t0 = h.watchAll()
		switch {
		case h.sentinel != nil:
			fr.Target = "redis master"
			promoted := h.sentinel.FailOver(h.t)
			fr.Note = fmt.Sprintf("Sentinel promoted the replica after %s", promoted.Round(time.Millisecond))
		case h.rcluster != nil:
			masters := h.rcluster.Masters()
			slices.Sort(masters)
			addr := masters[h.redisNext%len(masters)]
			h.redisNext++
			fr.Target = "redis master " + addr
			promoted := h.rcluster.FailOver(h.t, addr)
			fr.Note = fmt.Sprintf("the Redis Cluster promoted its replica after %s", promoted.Round(time.Millisecond))
		default:
			h.redis.Restart(h.t)
		}
		tickets = h.reconnectAll(nil)
	case StopMongo:
		fr.Target = "mongo"
		t0 = h.watchAll()
		h.mongo.Stop(h.t)
		fr.Note = h.holdDown("MongoDB")
		h.mongo.Start(h.t)
		tickets = h.reconnectAll(nil)
	case KillZKServer:
		n := h.zkNext%3 + 1
		h.zkNext++
		fr.Target = fmt.Sprintf("zk%d", n)
		// In a subtest: the ensemble lock and the server's return are
		// bound to it.
		h.t.Run(fmt.Sprintf("fault%d-zk%d", i+1, n), func(t *testing.T) {
			testenv.LockEnsemble(t)
			s := testenv.ZKEnsembleServer(t, n)
			t0 = h.watchAll()
			s.Kill(t)
			fr.Note = h.holdDown("ZooKeeper server " + strconv.Itoa(n))
			s.Start(t)
			s.WaitServing(t)
		})
		if t0.IsZero() {
			fr.Note = "the ZooKeeper server could not be taken away"
			return fr
		}
		tickets = h.reconnectAll(nil)
	}

	d, ok, note := h.awaitDelivery(t0, deliveryTimeout)
	fr.Failover, fr.Recovered = d, ok
	if !ok {
		fr.Note = joinNote(fr.Note, note)
	}
	if slow := h.awaitReconnected(tickets, recoveryTimeout); len(slow) > 0 {
		fr.Recovered = false
		fr.Note = joinNote(fr.Note, fmt.Sprintf("clients %v did not reconnect and sync within %s", slow, recoveryTimeout))
	}
	if restart >= 0 {
		h.c.Restart(restart)
	}
	if err := h.awaitWhole(wholeTimeout); err != nil {
		fr.Recovered = false
		fr.Note = joinNote(fr.Note, err.Error())
	}
	return fr
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// holdDown keeps a dependency down until downAcks sends were
// acknowledged without it, or downAtMost passed, and says which.
func (h *harness) holdDown(what string) string {
	start, n := time.Now(), h.rec.AckCount()
	poll(downAtMost, func() bool { return h.rec.AckCount() >= n+downAcks })
	return fmt.Sprintf("%d sends acknowledged in the %s %s was down", h.rec.AckCount()-n, time.Since(start).Round(time.Millisecond), what)
}

// steady lets traffic flow between two faults.
func (h *harness) steady() {
	n := h.rec.AckCount()
	poll(steadyAtMost, func() bool { return h.rec.AckCount() >= n+steadyAcks })
}

// checkpoint compares every client's final view of each of its
// conversations with every other member's and with the server's, and the
// read positions the server gives with those acknowledged, and records
// the result. With pause, it first waits until every client finished its
// action in flight, and lets them go on afterwards; then every client
// settles at the latest of its conversations. If the views differ, every
// client settles once more and they are compared again: something stored
// after the clients settled (a request answered late) is no divergence.
func (h *harness) checkpoint(name string, pause bool) {
	start := time.Now()
	if pause {
		var paused []*Client
		var slow []string
		ctx, cancel := context.WithTimeout(context.Background(), pauseTimeout)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, cl := range h.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := cl.PauseSending(ctx)
				mu.Lock()
				defer mu.Unlock()
				if ok {
					paused = append(paused, cl)
				} else {
					slow = append(slow, cl.Name())
				}
			}()
		}
		wg.Wait()
		cancel()
		defer func() {
			for _, cl := range paused {
				cl.ResumeSending()
			}
		}()
		if len(slow) > 0 {
			slices.Sort(slow)
			h.skipCheckpoint(name, fmt.Sprintf("clients %v did not finish their action in flight within %s", slow, pauseTimeout))
			return
		}
	}
	var res CheckpointResult
	for attempt := 1; attempt <= 2; attempt++ {
		snap, err := h.snapshot(name, pause)
		if err != nil {
			h.skipCheckpoint(name, err.Error())
			return
		}
		res = CompareSnapshot(snap)
		if res.Differs == 0 || attempt == 2 {
			res.Retaken = attempt == 2
			break
		}
		h.t.Logf("checkpoint %s: %d (client, message) pairs differ; settling again and comparing once more. The first differences: %s",
			name, res.Differs, strings.Join(res.Problems[:min(len(res.Problems), 5)], "; "))
	}
	h.rec.AddCheckpoint(res)
	h.t.Logf("checkpoint %s: %d (client, message) pairs compared, %d differ; %d read positions compared, %d went back (%s)",
		name, res.Compared, res.Differs, res.ReadsChecked, res.ReadBack, time.Since(start).Round(time.Millisecond))
}

func (h *harness) skipCheckpoint(name, why string) {
	h.t.Logf("checkpoint %s skipped: %s", name, why)
	h.rec.AddCheckpoint(CheckpointResult{Name: name, Skipped: why})
}

// snapshot settles every client and takes their final views, the
// server's answers to each and the read positions acknowledged; with
// window, of the newest checkWindow seqs of each conversation only.
func (h *harness) snapshot(name string, window bool) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	errs := make([]error, len(h.clients))
	var wg sync.WaitGroup
	for i, cl := range h.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cl.Settle(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Name: name, Views: map[string]map[string]map[int64]State{}, Server: map[string]map[string]map[int64]State{},
		Reads: map[string]map[string]ReadPos{}, AckedReads: h.rec.ReadsAcked(), Users: map[string]string{}}
	for _, cl := range h.clients {
		snap.Views[cl.Name()] = cl.FinalViews()
		snap.Users[cl.Name()] = cl.User()
	}
	if window {
		snap.Floors = Floors(snap.Views, checkWindow)
	}
	var mu sync.Mutex
	for i, cl := range h.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			states, reads, err := cl.ServerViews(ctx, snap.Floors)
			if err != nil {
				errs[i] = fmt.Errorf("the server's answer to %s: %w", cl.Name(), err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			snap.Server[cl.Name()], snap.Reads[cl.Name()] = states, reads
		}()
	}
	wg.Wait()
	return snap, errors.Join(errs...)
}

// watchAll starts the failover watch on every client and returns its
// start.
func (h *harness) watchAll() time.Time {
	t0 := time.Now()
	for _, cl := range h.clients {
		cl.Watch(t0)
	}
	return t0
}

// awaitDelivery waits until every client received, as a live push, a room
// message stored after t0, and returns the time from t0 to the last of
// those arrivals.
func (h *harness) awaitDelivery(t0 time.Time, timeout time.Duration) (time.Duration, bool, string) {
	var waiting []string
	ok := poll(timeout, func() bool {
		waiting = waiting[:0]
		for _, cl := range h.clients {
			if _, hit := cl.WatchHit(); !hit {
				waiting = append(waiting, cl.Name())
			}
		}
		return len(waiting) == 0
	})
	if !ok {
		return 0, false, fmt.Sprintf("clients %v received no live room message within %s", waiting, timeout)
	}
	var last time.Time
	for _, cl := range h.clients {
		if at, _ := cl.WatchHit(); at.After(last) {
			last = at
		}
	}
	return last.Sub(t0), true, ""
}

// reconnectAll has every client reconnect through the gateway (avoiding
// the given nodes) and sync; it returns their tickets.
func (h *harness) reconnectAll(avoid []string) []int {
	if h.sup != nil {
		h.sup.ReconnectAll()
	}
	tickets := make([]int, len(h.clients))
	for i, cl := range h.clients {
		tickets[i] = cl.Reconnect(avoid)
	}
	return tickets
}

// awaitReconnected waits until every client completed the reconnect of
// its ticket, and returns those that did not in time.
func (h *harness) awaitReconnected(tickets []int, timeout time.Duration) []string {
	var slow []string
	poll(timeout, func() bool {
		slow = slow[:0]
		for i, cl := range h.clients {
			if !cl.Reconnected(tickets[i]) {
				slow = append(slow, cl.Name())
			}
		}
		return len(slow) == 0
	})
	return slow
}

func (h *harness) nodes() (chatclient.Nodes, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.gw.Nodes(ctx)
}

// awaitWhole waits until the gateway lists exactly the running nodes, one
// of them as leader, and the leader holds a peer link to each.
func (h *harness) awaitWhole(timeout time.Duration) error {
	var last string
	ok := poll(timeout, func() bool {
		var want []string
		for i := range h.c.Len() {
			if h.c.Running(i) {
				want = append(want, h.c.Node(i).ID)
			}
		}
		slices.Sort(want)
		v, err := h.clusterView()
		if err != nil {
			last = err.Error()
			return false
		}
		var got []string
		linked := true
		for _, n := range v.Nodes {
			got = append(got, n.ID)
			linked = linked && n.Linked
		}
		slices.Sort(got)
		last = fmt.Sprintf("leader %q, nodes %v (want %v), all linked %v", v.Leader, got, want, linked)
		return v.Leader != "" && slices.Contains(got, v.Leader) && slices.Equal(got, want) && linked
	})
	if !ok {
		return fmt.Errorf("the cluster was not whole again within %s: %s", timeout, last)
	}
	return nil
}

type clusterView struct {
	Leader string `json:"leader"`
	Nodes  []struct {
		ID     string `json:"id"`
		Linked bool   `json:"linked"`
	} `json:"nodes"`
}

func (h *harness) clusterView() (clusterView, error) {
	var v clusterView
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(h.c.GatewayURL() + "/api/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("/api/cluster: status %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v, err
}

// keepLogs copies the logs of the run's folder (the nodes', the
// gateway's and the stores') into dst, for a look after a failure. It
// runs before the cluster is stopped: what the processes log after it is
// in the test's output.
func keepLogs(t *testing.T, dst, src string) {
	out := filepath.Join(dst, filepath.Base(src))
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil // a folder that went meanwhile is left out
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if err := os.MkdirAll(filepath.Join(out, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(out, rel), b, 0o644)
	})
	if err != nil {
		t.Logf("CHAT_CHAOS_LOGS: %v", err)
		return
	}
	t.Logf("chaos: the run's logs are kept in %s", out)
}
