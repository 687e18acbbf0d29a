// Command mongostore serves the MongoDB wire protocol on one machine: it
// embeds FerretDB with its SQLite backend, so `make run` and the test suite
// get a real MongoDB-compatible server without installing MongoDB.
//
// It lives in its own module so that the product binaries (cmd/node,
// cmd/gateway) depend only on the MongoDB driver, never on FerretDB.
//
// Usage:
//
//	mongostore --listen 127.0.0.1:27017 --dir ./data/mongo [--pprof 127.0.0.1:6060]
//
// Besides serving, it gives every collection an index that makes FerretDB's
// lookups by _id use one (see idindex.go), and --pprof serves Go's
// net/http/pprof profiles of the store on the given address.
//
// Once the listener is bound it prints one line
// "mongostore ready uri=mongodb://127.0.0.1:27017/ dir=..." to stdout.
// SIGINT or SIGTERM stop it cleanly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "mongostore: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mongostore", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:27017", "TCP address to serve the MongoDB wire protocol on")
	dir := fs.String("dir", "", "directory for the SQLite data files (required; created if missing)")
	logLevel := fs.String("log-level", "warn", "log level of the embedded store: debug, info, warn or error")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address (empty: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}

	logger := slog.New(&lazyHandler{h: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})})

	// New binds the listener, so once it returns clients can connect.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/?" + sqliteParams,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *pprofAddr != "" {
		stopPprof, err := servePprof(*pprofAddr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	ictx, stopIndexer := context.WithCancel(ctx)
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		newIDIndexer(abs, logger).run(ictx, time.Second)
	}()
	defer func() {
		stopIndexer()
		<-indexed
	}()

	fmt.Printf("mongostore ready uri=%s dir=%s\n", f.MongoDBURI(), abs)

	select {
	case err := <-done:
		// Run returns on its own only if serving failed.
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		return err
	case <-ctx.Done():
	}
	stop() // a second signal now kills the process the default way

	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(10 * time.Second):
		return errors.New("did not stop within 10s")
	}
	fmt.Println("mongostore stopped")
	return nil
}

// sqliteParams are the SQLite settings of every database file, besides
// those FerretDB sets (WAL, busy timeout). temp_store(memory) keeps the
// statement journals of multi-row inserts in memory: by default one
// larger than 64 KiB spills to a temporary file, which the profile of a
// bulk insert showed as an eighth of the store's CPU (writes and closes
// of a file that is thrown away).
const sqliteParams = "_pragma=temp_store(memory)"

// servePprof serves the profiles on addr until the returned stop is called.
func servePprof(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	return func() {
		_ = srv.Close()
		<-served
	}, nil
}
