package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"chatcluster/bench/baseline"
)

// relayMain runs the baseline relay until SIGINT or SIGTERM. Its first
// line on stdout is "listening <host:port>".
func relayMain(args []string) error {
	fs := flag.NewFlagSet("chatbench relay", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (/ws and /metrics)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := baseline.New()
	if err := s.Start(*listen); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	fmt.Printf("listening %s\n", s.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Close(cctx)
}

// relayProc is a baseline relay running as a subprocess of this binary,
// so its memory and CPU are its own.
type relayProc struct {
	cmd  *exec.Cmd
	addr string
}

func (r *relayProc) pid() int { return r.cmd.Process.Pid }

// startRelay starts "<this binary> relay" on a free loopback port.
func startRelay(ctx context.Context) (*relayProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting the baseline relay: %w", err)
	}
	cmd := exec.Command(self, "relay", "--listen", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the baseline relay: %w", err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() { // keep the pipe drained until the relay exits
		}
	}()
	r := &relayProc{cmd: cmd}
	select {
	case l, ok := <-lines:
		if addr, found := strings.CutPrefix(l, "listening "); ok && found {
			r.addr = addr
			return r, nil
		}
		r.stop()
		return nil, errors.New("the baseline relay did not start (see its output above)")
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	r.stop()
	return nil, errors.New("the baseline relay did not say where it listens within 10s")
}

// stop ends the relay: SIGTERM, then SIGKILL after 5 s.
func (r *relayProc) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}
