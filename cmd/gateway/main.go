// Command gateway runs the HTTP gateway: it hands clients the least loaded
// live node, registers and logs in users, and shows the cluster's state.
// Every flag has an environment variable; see -h.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
	// SIGHUP reloads the certificate of a gateway that serves HTTPS; one
	// without keeps SIGHUP's default.
	var hup chan os.Signal
	if cfg.TLSCertFile != "" {
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
		}
	}
	stop()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return g.Close(closeCtx)
}
