// Command gateway runs the HTTP gateway: it hands clients the least loaded
// live node, registers and logs in users, shows the cluster's state, and
// serves the server API to operators' systems. Every flag has an
// environment variable; see -h.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"chatcluster/accounts"
	"chatcluster/gateway"
	"chatcluster/internal/flagenv"
	"chatcluster/internal/redisconn"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := gateway.DefaultConfig()
	fs := flagenv.New("gateway")
	listen := fs.String("listen", "CHAT_GATEWAY_LISTEN", cfg.Listen, "HTTP listen address")
	admin := fs.String("admin-listen", "CHAT_GATEWAY_ADMIN_LISTEN", "127.0.0.1:9200", "admin listen address: /debug/pprof/ and GET /metrics (empty: none)")
	redisFlags := redisconn.Flags(fs)
	prefix := fs.String("redis-prefix", "CHAT_REDIS_PREFIX", cfg.RedisPrefix, "prefix of every Redis key")
	mongo := fs.String("mongo", "CHAT_MONGO", "mongodb://127.0.0.1:27017/", "MongoDB URI")
	mongoDB := fs.String("mongo-db", "CHAT_MONGO_DB", cfg.MongoDB, "MongoDB database")
	cost := fs.Int("bcrypt-cost", "CHAT_BCRYPT_COST", bcrypt.DefaultCost, fmt.Sprintf("bcrypt cost of new password hashes, %d to %d (each step doubles the work; existing hashes keep their own)", bcrypt.MinCost, bcrypt.MaxCost))
	level := fs.String("log-level", "CHAT_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	tlsCert := fs.String("tls-cert-file", "CHAT_GATEWAY_TLS_CERT_FILE", "", "PEM certificate chain: with --tls-key-file the gateway serves HTTPS (SIGHUP reloads it); the nodes should then publish wss:// URLs")
	tlsKey := fs.String("tls-key-file", "CHAT_GATEWAY_TLS_KEY_FILE", "", "PEM private key of --tls-cert-file")
	throttle := accounts.ThrottleFlags(fs, cfg.Throttle)
	visitorRate := fs.Int("visitors-per-minute", "CHAT_VISITORS_PER_MINUTE", cfg.VisitorsPerMinute, "visitors one address may create a minute with POST /api/visitor (0: no bound)")
	apiKeys := fs.String("api-keys-file", "CHAT_GATEWAY_API_KEYS_FILE", "", "file of the server API's keys, one 'name key' a line (SIGHUP reloads it); empty: the server API (/api/server/) is off")
	secretFile := fs.String("cluster-secret-file", "CHAT_CLUSTER_SECRET_FILE", "", "the nodes' cluster secret, with which the server API's calls are forwarded to them (needed with --api-keys-file)")
	apiRate := fs.Int("api-rate", "CHAT_GATEWAY_API_RATE", gateway.DefaultAPIRate, "server API requests a second per key, on this gateway (0: no bound)")
	apiBurst := fs.Int("api-burst", "CHAT_GATEWAY_API_BURST", gateway.DefaultAPIBurst, "server API requests per key at once, above --api-rate")
	apiTimeout := fs.Duration("api-timeout", "CHAT_GATEWAY_API_TIMEOUT", gateway.DefaultAPITimeout, "bound of one server API call forwarded to a node")
	peerTLSCert := fs.String("peer-tls-cert-file", "CHAT_PEER_TLS_CERT_FILE", "", "PEM certificate the server API's calls present to nodes whose peer listeners require mutual TLS; with --peer-tls-key-file and --peer-tls-ca-file")
	peerTLSKey := fs.String("peer-tls-key-file", "CHAT_PEER_TLS_KEY_FILE", "", "PEM private key of --peer-tls-cert-file")
	peerTLSCA := fs.String("peer-tls-ca-file", "CHAT_PEER_TLS_CA_FILE", "", "PEM certificates of the cluster's CA, which signed the nodes' peer certificates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := flagenv.Logger(os.Stderr, *level)
	if err != nil {
		return err
	}
	redis.SetLogger(redisconn.NewLogger(log))
	if cfg.Redis, err = redisFlags(); err != nil {
		return err
	}
	cfg.Listen, cfg.RedisPrefix, cfg.Mongo, cfg.MongoDB, cfg.Logger = *listen, *prefix, *mongo, *mongoDB, log
	cfg.AdminListen, cfg.BcryptCost, cfg.Throttle = *admin, *cost, throttle()
	cfg.TLSCertFile, cfg.TLSKeyFile = *tlsCert, *tlsKey
	cfg.VisitorsPerMinute = *visitorRate
	cfg.APIKeysFile, cfg.APIRate, cfg.APIBurst, cfg.APITimeout = *apiKeys, float64(*apiRate), *apiBurst, *apiTimeout
	cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile, cfg.PeerTLSCAFile = *peerTLSCert, *peerTLSKey, *peerTLSCA
	if *secretFile != "" {
		secret, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("cluster secret: %w", err)
		}
		cfg.Secret = []byte(strings.TrimSpace(string(secret)))
	}
	g, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := g.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "gateway listening on %s/\n", g.URL())
	if a := g.AdminAddr(); a != "" {
		fmt.Fprintf(os.Stderr, "gateway admin (pprof) on http://%s/debug/pprof/\n", a)
	}
	// SIGHUP reloads the certificate of a gateway that serves HTTPS and
	// the server API's keys; one with neither keeps SIGHUP's default.
	var hup chan os.Signal
	if cfg.TLSCertFile != "" || cfg.APIKeysFile != "" {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case <-hup:
			if err := g.ReloadTLS(); err != nil {
				log.Error().Err(err).Msg("certificate not reloaded; the one in use stays")
			}
			if err := g.ReloadAPIKeys(); err != nil {
				log.Error().Err(err).Msg("server API keys not reloaded; the ones in use stay")
			}
		}
	}
	stop()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return g.Close(closeCtx)
}
