// Command chatbench loads a chat cluster and reports what it delivers.
//
// It opens WebSocket clients through the gateway (register, log in, spread
// over the nodes) and runs scenarios:
//
//	dm       pairs of users writing to each other, open loop at a target
//	         rate, a share of the pairs across nodes
//	room     one room of M members spread over the nodes, posted to at a rate
//	connect  a connect-and-login storm, then idle connections held while
//	         each node's resident memory per connection is read
//	support  customer service: visitors arrive at a rate, each opens its
//	         conversation and waits in the queue for one of the bench's
//	         agents (spread over the nodes, each of a capacity), then
//	         writes its messages one at a time, each answered by the
//	         agent, and closes it; the wait for an agent, the latency of
//	         both directions, assignments per second and the visitors
//	         never assigned within the bound; cluster only
//	failover dm traffic between users on different nodes while the leader
//	         is killed with SIGKILL (its pid from --pid-dir): the
//	         disruption window, and that every acknowledged message still
//	         reaches its recipient, live or by sync; always run last
//
// and reports delivered throughput (deliveries over the time they took to
// arrive, from the first scheduled send to the last delivery, with the
// count of every second), end-to-end latency (from the time a send was due
// to the recipient's message push) at p50/p99/p99.9, errors and losses
// (acknowledged but not pushed within a drain time and, for direct
// messages on the cluster, not returned by the recipient's sync either,
// which is retried as a client would on 503, 429 or a broken connection),
// with a progress line on stderr every second and the figures as JSON
// (--out). Each scenario run has its own ids (in texts and clientMsgIds),
// so runs with the same users never mix.
//
// With --pid-dir (the run folder of deploy/run.sh, NAME.pid per process)
// it reads every cluster process's CPU time from /proc over the send
// phase of each dm and room run and reports it per delivered message,
// beside its own (getrusage) and the load averages. chatbench reads the
// frames it receives in place, without decoding them in full (frame.go),
// so that it costs little beside what it measures.
//
// The support scenario makes its agent users agents in the cluster's
// MongoDB itself (--mongo, --mongo-db: what `chat admin agent add` does),
// closes any conversation the leader gives them that is not the run's
// (one an earlier run left open), and creates its visitors at the gateway
// from this one address before it measures anything: the gateway must
// allow that many visitors a minute (start it with
// CHAT_VISITORS_PER_MINUTE=0, no bound, or at least --support-visitors;
// the default is 20). A visitor writes at most 5 messages a second, the
// leader's bound, so chatbench spaces a visitor's messages 200 ms apart.
//
// With --with-baseline every scenario is also run against a minimal
// single-process relay (bench/baseline, started as a subprocess of this
// binary) and the ratio cluster/baseline is reported for each figure;
// support has no baseline (the relay has no customer service) and runs
// on the cluster only.
// --baseline ws://host:port/ws runs against a relay that is already
// running instead of the cluster.
//
// Subcommands: "chatbench relay --listen ADDR" runs the baseline relay;
// "chatbench report --in results.json --out benchmarks.md" renders results
// as Markdown.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chatcluster/protocol"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "relay":
			exit(relayMain(os.Args[2:]))
			return
		case "report":
			exit(reportMain(os.Args[2:]))
			return
		}
	}
	exit(benchMain(os.Args[1:]))
}

func exit(err error) {
	if err == nil {
		return
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "chatbench:", err)
	os.Exit(1)
}

// config is everything a bench run is told.
type config struct {
	gateway      string
	admin        []string
	baselineURL  string
	baselineAdm  []string
	withBaseline bool
	scenarios    []string
	duration     time.Duration
	drain        time.Duration
	timeout      time.Duration
	pairs        int
	rates        []float64
	cross        float64
	chatter      float64   // dm: typing and read frames per user per second in a second run of each chatter rate
	chatterRates []float64 // dm: the rates that get that second run
	chatterPhase time.Duration
	chatterDur   time.Duration // send phase of the chatter runs; 0: duration
	roomMembers  int
	roomPubs     int
	roomRates    []float64
	conns        int
	connectNodes int
	connectRate  float64
	hold         time.Duration
	foRate       float64
	foDuration   time.Duration
	foKillAfter  time.Duration
	support      supportParams
	pidDir       string
	sources      int
	maxConns     int
	prefix       string
	password     string
	out          string
	cpuProfile   string
	quiet        bool
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.StringVar(&c.gateway, "gateway", "http://127.0.0.1:8080", "gateway base URL")
	admin := fs.String("admin", "", "comma-separated host:port of each node's admin listener (/metrics), for the connect scenario's memory figures")
	fs.StringVar(&c.baselineURL, "baseline", "", "ws://host:port/ws of a running baseline relay: run against it instead of the cluster")
	fs.BoolVar(&c.withBaseline, "with-baseline", false, "also run every scenario against a baseline relay started on loopback, and report cluster/baseline ratios")
	scen := fs.String("scenarios", "dm", "comma-separated scenarios: dm, room, connect, support, failover (failover always runs last: it leaves the cluster a node short; support runs on the cluster only)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "send phase of the dm and room scenarios")
	fs.DurationVar(&c.drain, "drain", 5*time.Second, "wait after the send phase for outstanding deliveries (ends early after a second with none); direct messages still missing on the cluster are then looked for with the recipients' sync, and what is still missing is lost")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "bound on the whole run")
	fs.IntVar(&c.pairs, "pairs", 50, "dm: pairs of users (each pair writes both ways)")
	rates := fs.String("rates", "1000", "dm: comma-separated target rates, messages per second in all; one run each")
	fs.Float64Var(&c.chatter, "chatter", 0, "dm: also run each of --chatter-rates again with this many typing and read frames per user per second beside the messages (alternately), and compare the message latency; 0: no such runs")
	chatterRates := fs.String("chatter-rates", "", "dm: comma-separated rates of --rates that get a chatter run (default: all of them)")
	fs.DurationVar(&c.chatterPhase, "chatter-phase", 250*time.Millisecond, "dm: a chatter run alternates quiet phases and chatter phases this long, quiet first, and compares the message latency of the two kinds")
	fs.DurationVar(&c.chatterDur, "chatter-duration", 0, "dm: send phase of the chatter runs (default: --duration)")
	fs.Float64Var(&c.cross, "cross", 0.67, "dm: share of pairs whose users are on different nodes (0..1)")
	fs.IntVar(&c.roomMembers, "room-members", 100, "room: members")
	fs.IntVar(&c.roomPubs, "room-publishers", 10, "room: members that post")
	roomRates := fs.String("room-rate", "10", "room: comma-separated rates, messages per second in all; one run each")
	fs.IntVar(&c.conns, "conns", 1000, "connect: connections")
	fs.IntVar(&c.connectNodes, "connect-nodes", 0, "connect: put the connections on this many nodes (the first ones by id), 0: all; one load process holds at most the open-file limit, so 1 gets the most connections onto one node")
	fs.Float64Var(&c.connectRate, "connect-rate", 500, "connect: connection attempts per second")
	fs.DurationVar(&c.hold, "hold", 3*time.Second, "connect: time the connections are held idle before memory is read")
	fs.Float64Var(&c.foRate, "failover-rate", 1000, "failover: messages per second in all, over --pairs pairs on different nodes")
	fs.DurationVar(&c.foDuration, "failover-duration", 20*time.Second, "failover: send phase")
	fs.DurationVar(&c.foKillAfter, "failover-kill-after", 5*time.Second, "failover: when in the send phase the leader is killed")
	fs.IntVar(&c.support.visitors, "support-visitors", 200, "support: visitors in all, each opening one conversation")
	fs.Float64Var(&c.support.rate, "support-rate", 20, "support: visitors arriving per second")
	fs.IntVar(&c.support.agents, "support-agents", 10, "support: agents (users <user-prefix>agent<n>, made agents in --mongo), spread over the nodes")
	fs.IntVar(&c.support.capacity, "support-capacity", 3, fmt.Sprintf("support: conversations each agent holds at once, 1 to %d", protocol.MaxAgentCapacity))
	fs.IntVar(&c.support.messages, "support-messages", 5, "support: messages each visitor writes once assigned, one at a time, each answered by its agent")
	fs.DurationVar(&c.support.timeout, "support-timeout", time.Minute, "support: the bound: how long after the last visitor arrived the run waits for the conversations to end; a visitor not assigned by then counts as never assigned")
	fs.StringVar(&c.support.mongo, "mongo", "", "support: the cluster's MongoDB URI (e.g. mongodb://127.0.0.1:27017/), where the agent users are made agents")
	fs.StringVar(&c.support.mongoDB, "mongo-db", "chat", "support: the cluster's MongoDB database (the nodes' --mongo-db)")
	fs.StringVar(&c.pidDir, "pid-dir", "", "folder of the cluster's pid files, NAME.pid (deploy/run.sh keeps them in $CHAT_DATA_DIR/run): each process's CPU per message in the dm and room runs, and the leader to kill in failover (node-<id>.pid)")
	fs.IntVar(&c.sources, "sources", 8, "loopback source addresses to spread connections over (127.0.0.1..N)")
	fs.IntVar(&c.maxConns, "max-conns", 15000, "refuse to open more connections than this")
	fs.StringVar(&c.prefix, "user-prefix", "bench", "user names are this plus a number")
	fs.StringVar(&c.password, "password", "bench-password", "password of the bench users")
	fs.StringVar(&c.out, "out", "", "write the results as JSON to this file")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write chatbench's own CPU profile of the whole run to this file (go tool pprof)")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (scenarios go in --scenarios)", fs.Arg(0))
	}
	c.admin = splitList(*admin)
	failover, support := false, false
	for _, s := range splitList(*scen) {
		switch s {
		case "dm", "room", "connect", "support":
			c.scenarios = append(c.scenarios, s)
			support = support || s == "support"
		case "failover":
			failover = true
		default:
			return c, fmt.Errorf("--scenarios: unknown scenario %q (dm, room, connect, support, failover)", s)
		}
	}
	if failover {
		c.scenarios = append(c.scenarios, "failover")
	}
	if len(c.scenarios) == 0 {
		return c, errors.New("--scenarios: none given")
	}
	var err error
	if c.rates, err = parseRates("--rates", *rates); err != nil {
		return c, err
	}
	if c.roomRates, err = parseRates("--room-rate", *roomRates); err != nil {
		return c, err
	}
	c.chatterRates = c.rates
	if *chatterRates != "" {
		if c.chatterRates, err = parseRates("--chatter-rates", *chatterRates); err != nil {
			return c, err
		}
		for _, r := range c.chatterRates {
			if !slices.Contains(c.rates, r) {
				return c, fmt.Errorf("--chatter-rates: %g is not one of --rates", r)
			}
		}
	}
	if c.chatterPhase <= 0 {
		return c, errors.New("--chatter-phase must be positive")
	}
	if c.chatterDur < 0 {
		return c, errors.New("--chatter-duration must not be negative")
	}
	if c.chatter < 0 {
		return c, errors.New("--chatter must not be negative")
	}
	switch {
	case c.duration <= 0 || c.drain < 0 || c.timeout <= 0 || c.hold < 0:
		return c, errors.New("--duration and --timeout must be positive, --drain and --hold not negative")
	case c.pairs < 1 || c.roomMembers < 1 || c.conns < 1:
		return c, errors.New("--pairs, --room-members and --conns must be at least 1")
	case c.connectNodes < 0:
		return c, errors.New("--connect-nodes must not be negative")
	case c.cross < 0 || c.cross > 1:
		return c, errors.New("--cross must be between 0 and 1")
	case c.connectRate <= 0 || c.roomPubs < 1:
		return c, errors.New("--connect-rate must be positive, --room-publishers at least 1")
	case c.baselineURL != "" && c.withBaseline:
		return c, errors.New("give --baseline (run against a relay) or --with-baseline (compare with one), not both")
	case c.baselineURL != "" && !strings.HasPrefix(c.baselineURL, "ws://"):
		return c, fmt.Errorf("--baseline %q must be a ws:// URL", c.baselineURL)
	case failover && (c.foRate <= 0 || c.foDuration <= 0 || c.foKillAfter <= 0 || c.foKillAfter >= c.foDuration):
		return c, errors.New("--failover-rate and --failover-duration must be positive, --failover-kill-after between 0 and --failover-duration")
	case failover && c.baselineURL == "" && c.pidDir == "":
		return c, errors.New("failover kills the leader's process: give --pid-dir, the folder of the nodes' pid files (node-<id>.pid)")
	}
	if support {
		if err := c.support.validate(c.baselineURL != ""); err != nil {
			return c, err
		}
	}
	if need := c.connsNeeded(); need > c.maxConns {
		return c, fmt.Errorf("the scenarios need %d connections at once, over --max-conns %d", need, c.maxConns)
	}
	return c, nil
}

// connsNeeded is the most connections one scenario opens (scenarios run one
// after the other).
func (c config) connsNeeded() int {
	n := c.usersNeeded()
	for _, s := range c.scenarios {
		if s == "support" {
			n = max(n, c.support.agents+c.support.visitors)
		}
	}
	return n
}

// usersNeeded is the number of bench users the scenarios log in as (the
// support scenario's agents and visitors are its own).
func (c config) usersNeeded() int {
	n := 0
	for _, s := range c.scenarios {
		switch s {
		case "dm":
			n = max(n, 2*c.pairs)
		case "room":
			n = max(n, c.roomMembers)
		case "connect":
			n = max(n, c.conns)
		case "failover":
			n = max(n, 2*c.pairs)
		}
	}
	return n
}

// parseRates parses a comma-separated list of positive numbers.
func parseRates(flagName, v string) ([]float64, error) {
	var out []float64
	for _, r := range splitList(v) {
		f, err := strconv.ParseFloat(r, 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%s: %q is not a positive number", flagName, r)
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: none given", flagName)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// raiseFileLimit lifts the soft open-files limit to the hard one and
// checks that need connections (plus a margin) fit.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // not knowable; let the dials tell
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if uint64(need)+256 > lim.Cur {
		return fmt.Errorf("%d connections need more open files than the limit of %d (raise ulimit -n or open fewer)", need, lim.Cur)
	}
	return nil
}

// Run is the JSON document of one invocation.
type Run struct {
	Started time.Time `json:"started"`
	Command string    `json:"command"`
	// Source says where figures came from when they are not chatbench's
	// own output (a run transcribed from an older page).
	Source      string       `json:"source,omitempty"`
	Machine     Machine      `json:"machine"`
	Results     []Result     `json:"results"`
	Comparisons []Comparison `json:"comparisons,omitempty"`
}

func benchMain(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	if err := raiseFileLimit(cfg.connsNeeded()); err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	began := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "chatbench: %6.1fs "+format+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}
	var progress func(string)
	if !cfg.quiet {
		progress = func(s string) { fmt.Fprintln(os.Stderr, s) }
	}
	run := Run{Started: time.Now().UTC(), Command: "chatbench " + strings.Join(args, " "), Machine: readMachine()}

	var targets []*target
	d := newDialer(cfg.sources)
	if cfg.baselineURL != "" {
		targets = append(targets, &target{name: "baseline", wsURL: cfg.baselineURL, admin: cfg.admin, prefix: cfg.prefix, password: cfg.password, dialer: d})
	} else {
		cl := &target{name: "cluster", gateway: strings.TrimRight(cfg.gateway, "/"), admin: cfg.admin, prefix: cfg.prefix, password: cfg.password, dialer: d}
		if cfg.pidDir != "" {
			dir := cfg.pidDir
			cl.procs = func() ([]serverProc, error) { return pidDirProcs(dir) }
		}
		targets = append(targets, cl)
		if cfg.withBaseline {
			rl, err := startRelay(ctx)
			if err != nil {
				return err
			}
			defer rl.stop()
			logf("baseline relay at %s (pid %d)", rl.addr, rl.pid())
			relay := []serverProc{{Name: "relay", Group: groupRelay, PID: rl.pid()}}
			targets = append(targets, &target{name: "baseline", wsURL: "ws://" + rl.addr + "/ws", admin: []string{rl.addr}, prefix: cfg.prefix, password: cfg.password, dialer: d,
				procs: func() ([]serverProc, error) { return relay, nil }})
		}
	}
	for _, t := range targets {
		logf("%s: preparing %d users", t.name, cfg.usersNeeded())
		if err := t.prepare(ctx, cfg.usersNeeded(), logf, progress); err != nil {
			return err
		}
	}
	cm := common{duration: cfg.duration, drain: cfg.drain, runID: strconv.FormatInt(time.Now().UnixMilli(), 36), progress: progress, logf: logf}
	results, err := runAll(ctx, cfg, targets, cm)
	run.Results = results
	run.Comparisons = compareAll(results)
	printSummary(os.Stdout, run)
	if cfg.out != "" {
		b, jerr := json.MarshalIndent(run, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(cfg.out, append(b, '\n'), 0o644)
		}
		if jerr != nil {
			return fmt.Errorf("writing %s: %w", cfg.out, jerr)
		}
		logf("results in %s", cfg.out)
	}
	return err
}

// runAll runs every scenario on every target, one at a time.
func runAll(ctx context.Context, cfg config, targets []*target, cm common) ([]Result, error) {
	var out []Result
	add := func(r Result, err error) error {
		if err != nil {
			return err
		}
		out = append(out, r)
		return nil
	}
	for _, s := range cfg.scenarios {
		for _, t := range targets {
			if s == "support" && t.wsURL != "" {
				cm.logf("support on %s: skipped, the baseline relay has no customer service", t.name)
				continue
			}
			cm.logf("%s on %s", s, t.name)
			var err error
			switch s {
			case "dm":
				for _, rate := range cfg.rates {
					var plain Result
					if plain, err = runDM(ctx, t, cm, dmParams{pairs: cfg.pairs, rate: rate, cross: cfg.cross}); err != nil {
						break
					}
					out = append(out, plain)
					if cfg.chatter <= 0 || !slices.Contains(cfg.chatterRates, rate) {
						continue
					}
					var r Result
					ccm := cm
					if cfg.chatterDur > 0 {
						ccm.duration = cfg.chatterDur
					}
					if r, err = runDM(ctx, t, ccm, dmParams{pairs: cfg.pairs, rate: rate, cross: cfg.cross, chatter: cfg.chatter, phase: cfg.chatterPhase}); err != nil {
						break
					}
					r.Notes = append(r.Notes, chatterNote(r, plain))
					out = append(out, r)
				}
			case "room":
				var rs []Result
				rs, err = runRoom(ctx, t, cm, roomParams{members: cfg.roomMembers, publishers: cfg.roomPubs, rates: cfg.roomRates})
				out = append(out, rs...)
			case "connect":
				err = add(runConnect(ctx, t, cm, connectParams{conns: cfg.conns, rate: cfg.connectRate, hold: cfg.hold, nodes: cfg.connectNodes}))
			case "support":
				var r Result
				r, err = runSupport(ctx, t, cm, cfg.support)
				if len(targets) > 1 {
					r.Notes = append(r.Notes, noBaselineNote)
				}
				if r.Support != nil {
					out = append(out, r)
				}
			case "failover":
				fp := failoverParams{pairs: cfg.pairs, rate: cfg.foRate, duration: cfg.foDuration, killAfter: cfg.foKillAfter}
				if t.wsURL == "" {
					fp.kill = pidDirKiller(cfg.pidDir)
				}
				err = add(runFailover(ctx, t, cm, fp))
			}
			if err != nil {
				return out, fmt.Errorf("%s on %s: %w", s, t.name, err)
			}
		}
	}
	return out, nil
}
