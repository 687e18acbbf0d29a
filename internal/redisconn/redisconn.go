// Package redisconn says how the gateway and the nodes reach Redis: one
// server, or a master found through Redis Sentinel, with an optional
// password and TLS. With Sentinel the client asks the Sentinels for the
// current master and follows a promotion without a restart.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/internal/flagenv"
)

// Config is where Redis is and how to log in to it.
type Config struct {
	// Addr is one Redis server, host:port. Unused with Sentinels or a
	// Cluster.
	Addr string
	// Cluster are seed nodes of a Redis Cluster, host:port: any of its
	// nodes, from which the client learns the others and the slots; set,
	// they replace Addr.
	Cluster []string
	// Sentinels are the Sentinel servers, host:port, that watch the master
	// named MasterName; set, they replace Addr.
	Sentinels  []string
	MasterName string

	// Password (and Username, for an ACL user) of the Redis servers, and
	// SentinelPassword of the Sentinels (empty: none).
	Username         string
	Password         string
	SentinelPassword string

	// TLS turns TLS on toward every server (Sentinels included), verified
	// against the system's roots or CAFile.
	TLS    bool
	CAFile string
}

// Validate reports what is missing or malformed, naming the flags.
func (c Config) Validate() error {
	switch {
	case len(c.Cluster) > 0 && len(c.Sentinels) > 0:
		return errors.New("--redis-cluster and --redis-sentinels exclude each other: a Redis Cluster fails over by itself")
	case len(c.Sentinels) > 0 && c.MasterName == "":
		return errors.New("--redis-sentinels needs --redis-master, the name the Sentinels know the master by")
	case len(c.Sentinels) == 0 && c.MasterName != "":
		return errors.New("--redis-master needs --redis-sentinels")
	case len(c.Sentinels) == 0 && len(c.Cluster) == 0 && c.Addr == "":
		return errors.New("a Redis address is required (--redis, --redis-cluster, or --redis-sentinels with --redis-master)")
	case c.CAFile != "" && !c.TLS:
		return errors.New("--redis-tls-ca-file needs --redis-tls")
	}
	addrs := c.Sentinels
	switch {
	case len(c.Cluster) > 0:
		addrs = c.Cluster
	case len(addrs) == 0:
		addrs = []string{c.Addr}
	}
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return fmt.Errorf("Redis address %q is not host:port", a)
		}
	}
	return nil
}

// String names the Redis for logs and errors, without secrets.
func (c Config) String() string {
	if len(c.Cluster) > 0 {
		return "Redis Cluster via " + strings.Join(c.Cluster, ",")
	}
	if len(c.Sentinels) > 0 {
		return fmt.Sprintf("master %q via Sentinels %s", c.MasterName, strings.Join(c.Sentinels, ","))
	}
	return c.Addr
}

// Options are the client's pool and timeouts.
type Options struct {
	PoolSize     int
	MinIdleConns int
	// Protocol is the RESP version (2 or 3); 0 lets go-redis choose.
	Protocol int
}

// Open returns a client for c. It does not connect yet.
func Open(c Config, o Options) (redis.UniversalClient, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var tc *tls.Config
	if c.TLS {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("--redis-tls-ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--redis-tls-ca-file %s holds no PEM certificate", c.CAFile)
			}
			tc.RootCAs = pool
		}
	}
	const dial, read, write = 2 * time.Second, 3 * time.Second, 3 * time.Second
	if len(c.Cluster) > 0 {
		// PoolSize is per cluster node, as with one server.
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Cluster, Username: c.Username, Password: c.Password, TLSConfig: tc,
			DialTimeout: dial, ReadTimeout: read, WriteTimeout: write,
			PoolSize: o.PoolSize, MinIdleConns: o.MinIdleConns, Protocol: o.Protocol,
			// A failover moves slots; follow MOVED for a while before
			// giving up, so a command waits out a promotion.
			MaxRedirects: 8,
		}), nil
	}
	if len(c.Sentinels) > 0 {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: c.Sentinels, SentinelPassword: c.SentinelPassword,
			Username: c.Username, Password: c.Password, TLSConfig: tc,
			DialTimeout: dial, ReadTimeout: read, WriteTimeout: write,
			PoolSize: o.PoolSize, MinIdleConns: o.MinIdleConns, Protocol: o.Protocol,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr: c.Addr, Username: c.Username, Password: c.Password, TLSConfig: tc,
		DialTimeout: dial, ReadTimeout: read, WriteTimeout: write,
		PoolSize: o.PoolSize, MinIdleConns: o.MinIdleConns, Protocol: o.Protocol,
	}), nil
}

// Flags defines the Redis flags (with their environment variables) on fs
// and returns the function that builds the Config once fs is parsed,
// reading the password files.
func Flags(fs *flagenv.Set) func() (Config, error) {
	addr := fs.String("redis", "CHAT_REDIS", "127.0.0.1:6379", "Redis address, host:port (unused with --redis-sentinels or --redis-cluster)")
	cluster := fs.String("redis-cluster", "CHAT_REDIS_CLUSTER", "", "Redis Cluster seed nodes, comma-separated host:port (any of its nodes; the others and the slots are learnt from them)")
	sentinels := fs.String("redis-sentinels", "CHAT_REDIS_SENTINELS", "", "Redis Sentinel addresses, comma-separated: the master is the one they name --redis-master, followed across failovers")
	master := fs.String("redis-master", "CHAT_REDIS_MASTER", "", "the master's name in the Sentinels' configuration (with --redis-sentinels)")
	user := fs.String("redis-username", "CHAT_REDIS_USERNAME", "", "Redis ACL user (empty: the default user)")
	pwFile := fs.String("redis-password-file", "CHAT_REDIS_PASSWORD_FILE", "", "file holding the Redis password (empty: none)")
	sentPwFile := fs.String("redis-sentinel-password-file", "CHAT_REDIS_SENTINEL_PASSWORD_FILE", "", "file holding the Sentinels' password (empty: none)")
	useTLS := fs.String("redis-tls", "CHAT_REDIS_TLS", "false", "connect to Redis (and the Sentinels) over TLS")
	ca := fs.String("redis-tls-ca-file", "CHAT_REDIS_TLS_CA_FILE", "", "PEM file of the CA that signed the Redis servers' certificates (empty: the system's)")
	return func() (Config, error) {
		c := Config{Addr: *addr, Cluster: flagenv.List(*cluster), Sentinels: flagenv.List(*sentinels), MasterName: *master, Username: *user, CAFile: *ca}
		var err error
		if c.TLS, err = parseBool("--redis-tls", *useTLS); err != nil {
			return c, err
		}
		if c.Password, err = readSecret("--redis-password-file", *pwFile); err != nil {
			return c, err
		}
		if c.SentinelPassword, err = readSecret("--redis-sentinel-password-file", *sentPwFile); err != nil {
			return c, err
		}
		return c, c.Validate()
	}
}

func parseBool(flag, v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no", "":
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want true or false", flag, v)
}

// readSecret reads a one-line secret from path ("" gives "").
func readSecret(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return s, nil
}

// Logger is the Redis client library's own logger (redis.SetLogger, which
// a command sets once in main): its lines go to log as warnings, with the
// component "redis", at most 5 a second (a master that went away has the
// pool log every failed dial).
type Logger struct{ log zerolog.Logger }

// NewLogger returns the library logger writing to log.
func NewLogger(log zerolog.Logger) Logger {
	return Logger{log: log.With().Str("component", "redis").Logger().Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second})}
}

// Printf implements the library's logging interface.
func (l Logger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn().Msg(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// EachMaster calls fn with a client of every master rdb writes to: the one
// server (or the Sentinels' master), or each master of a Redis Cluster,
// concurrently. For what must see every shard, such as SCAN.
func EachMaster(ctx context.Context, rdb redis.UniversalClient, fn func(context.Context, *redis.Client) error) error {
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, c)
	}
	return fmt.Errorf("redisconn: no masters known for a %T", rdb)
}
