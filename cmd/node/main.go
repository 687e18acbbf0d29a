// Command node runs one chat node: it serves clients on a WebSocket
// listener, registers in ZooKeeper, takes part in leader election, links to
// its peers on a separate authenticated listener and stores messages in
// Redis and MongoDB. Every flag has an environment variable; see -h.
//
// SIGTERM or SIGINT drains it: it leaves ZooKeeper, tells clients to
// reconnect elsewhere, and exits.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"chatcluster/accounts"
	"chatcluster/cluster"
	"chatcluster/internal/flagenv"
	"chatcluster/internal/redisconn"
	"chatcluster/node"
	"chatcluster/webhook"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := node.DefaultConfig()
	fs := flagenv.New("node")
	id := fs.String("id", "CHAT_NODE_ID", "", "unique node id, e.g. n1")
	listen := fs.String("listen", "CHAT_LISTEN", "127.0.0.1:9001", "client WebSocket listen address (0.0.0.0:9001 binds every address; then set --advertise)")
	advertise := fs.String("advertise", "CHAT_ADVERTISE", "", "WebSocket URL published for clients, e.g. ws://host-a:9001/ws (default ws://<listen>/ws, wss:// with --tls-cert-file; required when --listen binds every address)")
	peer := fs.String("peer-listen", "CHAT_PEER_LISTEN", "127.0.0.1:9101", "peer-link listen address (never the client port; 0.0.0.0:9101 binds every address, then set --peer-advertise)")
	tlsCert := fs.String("tls-cert-file", "CHAT_TLS_CERT_FILE", "", "PEM certificate chain of the client listener: with --tls-key-file it serves wss:// (SIGHUP reloads it)")
	tlsKey := fs.String("tls-key-file", "CHAT_TLS_KEY_FILE", "", "PEM private key of --tls-cert-file")
	peerTLSCert := fs.String("peer-tls-cert-file", "CHAT_PEER_TLS_CERT_FILE", "", "PEM certificate of this node for mutual TLS on the peer link, naming its --peer-advertise host (server and client use); with --peer-tls-key-file and --peer-tls-ca-file")
	peerTLSKey := fs.String("peer-tls-key-file", "CHAT_PEER_TLS_KEY_FILE", "", "PEM private key of --peer-tls-cert-file")
	peerTLSCA := fs.String("peer-tls-ca-file", "CHAT_PEER_TLS_CA_FILE", "", "PEM certificates of the cluster's CA: the peer link accepts and dials only nodes whose certificate it signed (SIGHUP reloads it)")
	peerAdvertise := fs.String("peer-advertise", "CHAT_PEER_ADVERTISE", "", "host:port published for the other nodes to dial the peer link at, e.g. host-a:9101 (default <peer-listen>; required when --peer-listen binds every address)")
	admin := fs.String("admin-listen", "CHAT_ADMIN_LISTEN", "127.0.0.1:9201", "admin listen address: GET /metrics (Prometheus) and /debug/pprof/ (empty: none)")
	zk := fs.String("zk", "CHAT_ZK", "127.0.0.1:2181", "ZooKeeper connection string: servers, comma-separated, and an optional chroot after the last one (host1:2181,host2:2181,host3:2181/chroot)")
	zkRoot := fs.String("zk-root", "CHAT_ZK_ROOT", cfg.ZKRoot, "ZooKeeper root path of this cluster (below the chroot, if any)")
	zkTimeout := fs.Duration("zk-session-timeout", "CHAT_ZK_SESSION_TIMEOUT", cfg.ZKSessionTimeout, "ZooKeeper session timeout: how soon a dead node is noticed (the server clamps it to 2..20 x its tickTime)")
	zkAuthFile := fs.String("zk-auth-file", "CHAT_ZK_AUTH_FILE", "", "file holding the cluster's ZooKeeper digest credential, user:password on one line; every znode then admits only it to change it (empty: world-writable znodes)")
	redisFlags := redisconn.Flags(fs)
	waitReplicas := fs.Int("redis-wait-replicas", "CHAT_REDIS_WAIT_REPLICAS", -1, "replicas that must hold a message before it is acknowledged (Redis WAIT, on every master written to; -1: 1 with --redis-sentinels or --redis-cluster, else 0)")
	waitTimeout := fs.Duration("redis-wait-timeout", "CHAT_REDIS_WAIT_TIMEOUT", cfg.RedisWaitTimeout, "how long a message waits for --redis-wait-replicas before it is acknowledged anyway (counted in chat_redis_wait_short_total)")
	prefix := fs.String("redis-prefix", "CHAT_REDIS_PREFIX", cfg.RedisPrefix, "prefix of every Redis key")
	mongo := fs.String("mongo", "CHAT_MONGO", "mongodb://127.0.0.1:27017/", "MongoDB URI")
	mongoDB := fs.String("mongo-db", "CHAT_MONGO_DB", cfg.MongoDB, "MongoDB database")
	secretFile := fs.String("cluster-secret-file", "CHAT_CLUSTER_SECRET_FILE", "", "file holding the shared cluster secret for the peer link")
	level := fs.String("log-level", "CHAT_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	drain := fs.Duration("drain-timeout", "CHAT_DRAIN_TIMEOUT", cfg.DrainTimeout, "how long shutdown lets clients move away")
	rate := fs.String("rate-limit", "CHAT_RATE_LIMIT", "200", "requests per second one client connection may send (bursts of twice that)")
	filter := fs.String("word-filter-file", "CHAT_WORD_FILTER_FILE", "", "word list of the dirty-word filter, one word per line (empty: no filter)")
	cost := fs.Int("bcrypt-cost", "CHAT_BCRYPT_COST", bcrypt.DefaultCost, fmt.Sprintf("bcrypt cost, %d to %d, of the hash a login of an unknown name is checked against (set it as on the gateway)", bcrypt.MinCost, bcrypt.MaxCost))
	sendQueue := fs.Int("send-queue", "CHAT_SEND_QUEUE", cfg.SendQueue, "frames that may wait for one client at any time; a client whose queue stays over this for --slow-client-timeout is disconnected as too slow")
	sendQueueBytes := fs.Int("send-queue-bytes", "CHAT_SEND_QUEUE_BYTES", cfg.SendQueueBytes, "bytes that may wait for one client, whatever the time; past them it is disconnected as too slow")
	slowAfter := fs.Duration("slow-client-timeout", "CHAT_SLOW_CLIENT_TIMEOUT", cfg.SlowClientTimeout, "how long a client's send queue may stay over --send-queue before it is disconnected as too slow")
	hotDirect := fs.String("hot-words-direct", "CHAT_HOT_WORDS_DIRECT", "false", "count the words of direct messages in the public hot-word ranking too (default: rooms only, since direct messages are private)")
	hotReset := fs.Duration("hot-words-reset", "CHAT_HOT_WORDS_RESET", cfg.HotWordsReset, "how often the leader resets the hot-word ranking (0: never)")
	grace := fs.Duration("support-grace", "CHAT_SUPPORT_GRACE", cfg.SupportGrace, "how long an agent holding support conversations may be offline before they go back to the queue")
	policy := fs.String("login-policy", "CHAT_LOGIN_POLICY", cfg.LoginPolicy, "how many connections a user may hold at once: single (a new login kicks the older connection) or multi (one per device, up to --max-devices, the oldest kicked beyond); every node of a cluster must run the same")
	maxDevices := fs.Int("max-devices", "CHAT_MAX_DEVICES", cfg.MaxDevices, fmt.Sprintf("devices one user may be logged in on at once with --login-policy multi, 1 to %d", node.MaxDevicesLimit))
	editWindow := fs.Duration("edit-window", "CHAT_EDIT_WINDOW", cfg.EditWindow, "how long after sending it its author may edit a message (set it alike on every node: the leader's counts for rooms)")
	recallWindow := fs.Duration("recall-window", "CHAT_RECALL_WINDOW", cfg.RecallWindow, "how long after sending it its author may recall a message; operators and room owners may recall at any time")
	operators := fs.String("operators", "CHAT_OPERATORS", "", "users, comma-separated, who may recall any message of a conversation they can read, at any time (empty: none)")
	throttle := accounts.ThrottleFlags(fs, cfg.LoginThrottle)
	webhooks := webhook.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := flagenv.Logger(os.Stderr, *level)
	if err != nil {
		return err
	}
	redis.SetLogger(redisconn.NewLogger(log.With().Str("node", *id).Logger()))
	if *secretFile == "" {
		return fmt.Errorf("--cluster-secret-file is required: every node of a cluster shares one secret (e.g. head -c 32 /dev/urandom | base64 > cluster.secret)")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return fmt.Errorf("cluster secret: %w", err)
	}
	cfg.ID, cfg.Listen, cfg.Advertise, cfg.PeerListen, cfg.AdminListen = *id, *listen, *advertise, *peer, *admin
	cfg.PeerAdvertise = *peerAdvertise
	cfg.TLSCertFile, cfg.TLSKeyFile = *tlsCert, *tlsKey
	cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile, cfg.PeerTLSCAFile = *peerTLSCert, *peerTLSKey, *peerTLSCA
	if cfg.ZK, cfg.ZKChroot, err = cluster.ParseConnectString(*zk); err != nil {
		return fmt.Errorf("--zk: %w", err)
	}
	cfg.ZKRoot, cfg.ZKSessionTimeout = *zkRoot, *zkTimeout
	if *zkAuthFile != "" {
		if cfg.ZKAuth, err = readZKAuth(*zkAuthFile); err != nil {
			return fmt.Errorf("--zk-auth-file: %w", err)
		}
	}
	if cfg.Redis, err = redisFlags(); err != nil {
		return err
	}
	cfg.RedisWaitReplicas, cfg.RedisWaitTimeout = *waitReplicas, *waitTimeout
	if cfg.RedisWaitReplicas < 0 {
		cfg.RedisWaitReplicas = 0
		if len(cfg.Redis.Sentinels) > 0 || len(cfg.Redis.Cluster) > 0 {
			cfg.RedisWaitReplicas = 1
		}
	}
	cfg.RedisPrefix, cfg.Mongo, cfg.MongoDB = *prefix, *mongo, *mongoDB
	cfg.Secret = []byte(strings.TrimSpace(string(secret)))
	cfg.DrainTimeout = *drain
	cfg.WordFilterFile, cfg.HotWordsReset, cfg.SupportGrace = *filter, *hotReset, *grace
	cfg.BcryptCost, cfg.LoginThrottle = *cost, throttle()
	cfg.LoginPolicy, cfg.MaxDevices = *policy, *maxDevices
	cfg.EditWindow, cfg.RecallWindow = *editWindow, *recallWindow
	for _, op := range strings.Split(*operators, ",") {
		if op = strings.TrimSpace(op); op != "" {
			cfg.Operators = append(cfg.Operators, op)
		}
	}
	if cfg.Webhooks, err = webhooks(); err != nil {
		return err
	}
	if cfg.HotWordsDirect, err = strconv.ParseBool(*hotDirect); err != nil {
		return fmt.Errorf("--hot-words-direct %q must be true or false", *hotDirect)
	}
	cfg.SendQueue, cfg.SendQueueBytes, cfg.SlowClientTimeout = *sendQueue, *sendQueueBytes, *slowAfter
	if cfg.RateLimit, err = strconv.ParseFloat(*rate, 64); err != nil || cfg.RateLimit <= 0 {
		return fmt.Errorf("--rate-limit %q must be a positive number", *rate)
	}
	cfg.Logger = log

	srv, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = srv.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	// SIGHUP reloads the certificates of a node that has any; a node
	// without keeps SIGHUP's default.
	var hup chan os.Signal
	if cfg.TLSCertFile != "" || cfg.PeerTLSCertFile != "" {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case <-hup:
			if err := srv.ReloadTLS(); err != nil {
				log.Error().Err(err).Str("node", cfg.ID).Msg("certificates not reloaded; the ones in use stay")
			}
		}
	}
	stop()
	log.Info().Str("node", cfg.ID).Msg("signal received, draining")
	closeCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout+10*time.Second)
	defer cancel()
	return srv.Close(closeCtx)
}

// readZKAuth reads the ZooKeeper credential from path. Its errors never
// contain the password.
func readZKAuth(path string) (cluster.Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return cluster.Credential{}, err
	}
	cred, err := cluster.ParseCredential(string(b))
	if err != nil {
		return cluster.Credential{}, fmt.Errorf("%s: %w", path, err)
	}
	return cred, nil
}
