package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"chatcluster/chatclient"
)

// demoUser is one user of the demo data.
type demoUser struct {
	name     string
	password string
	rooms    []string
}

// demoUsers is the demo data: users, their passwords (documented in the
// README) and the rooms they are members of.
func demoUsers() []demoUser {
	user := func(name string, rooms ...string) demoUser {
		return demoUser{name: name, password: name + "-demo", rooms: rooms}
	}
	return []demoUser{
		user("alice", "lobby", "golang"),
		user("bob", "lobby", "golang"),
		user("carol", "lobby", "random"),
		user("dave", "lobby", "random"),
	}
}

// seedDemo creates the demo users and rooms through the gateway and the
// WebSocket API, leaving what exists alone: registering a taken name and
// joining a room twice change nothing, and no message is posted. It waits
// up to wait for a chat node and retries what fails while the cluster
// settles (no leader yet, a node going away) within the same bound.
func seedDemo(ctx context.Context, gatewayURL string, wait time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	gw := &chatclient.Gateway{URL: strings.TrimRight(gatewayURL, "/"), HTTP: &http.Client{Timeout: 5 * time.Second}}
	say := func(format string, args ...any) { fmt.Fprintf(out, "seed-demo: "+format+"\n", args...) }

	say("waiting for %s to list a chat node (up to %s)", gw.URL, wait)
	if err := retry(ctx, func() error {
		n, err := gw.Nodes(ctx)
		if err == nil && len(n.Nodes) == 0 {
			err = errors.New("no chat node is listed")
		}
		return err
	}); err != nil {
		return fmt.Errorf("no chat node listed by %s within %s: %w", gw.URL, wait, err)
	}

	var failed []string
	for _, u := range demoUsers() {
		var created bool
		err := retry(ctx, func() error {
			err := gw.Register(ctx, u.name, u.password)
			var he *chatclient.HTTPError
			switch {
			case err == nil:
				created = true
				return nil
			case errors.As(err, &he) && he.Status == http.StatusConflict:
				return nil
			case errors.As(err, &he) && he.Status < 500:
				return permanentError{err}
			}
			return err
		})
		if err != nil {
			say("%s: registering failed: %s", u.name, userError(err))
			failed = append(failed, u.name)
			continue
		}
		err = retry(ctx, func() error { return joinRooms(ctx, gw, u) })
		state := "exists"
		if created {
			state = "registered"
		}
		if err != nil {
			say("%s: %s, but joining %s failed: %s", u.name, state, strings.Join(u.rooms, ", "), userError(err))
			failed = append(failed, u.name)
			continue
		}
		say("%s: %s, member of %s", u.name, state, strings.Join(u.rooms, ", "))
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not seed %s", strings.Join(failed, ", "))
	}
	say("done")
	return nil
}

// joinRooms logs u in (gateway token, then the first node that takes it)
// and joins u's rooms; joining a room one is a member of is a no-op.
func joinRooms(ctx context.Context, gw *chatclient.Gateway, u demoUser) error {
	token, nodes, err := gw.Login(ctx, u.name, u.password)
	var he *chatclient.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusUnauthorized {
		return permanentError{fmt.Errorf("the user exists with another password: %w", err)}
	}
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		return errors.New("no chat node is listed")
	}
	conn, err := chatclient.Dial(ctx, nodes[0].WS, 64)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.LoginToken(ctx, token); err != nil {
		return err
	}
	for _, room := range u.rooms {
		if _, err := conn.JoinRoom(ctx, room); err != nil {
			if c := chatclient.Code(err); c >= 400 && c < 500 && c != 429 {
				return permanentError{fmt.Errorf("joining %s: %w", room, err)}
			}
			return fmt.Errorf("joining %s: %w", room, err)
		}
	}
	return nil
}

// retry calls f until it succeeds, fails permanently, or ctx ends; it
// returns f's last error.
func retry(ctx context.Context, f func() error) error {
	delay := backoffMin
	for {
		err := f()
		if err == nil || isPermanent(err) {
			return err
		}
		if !sleep(ctx, delay) {
			return err
		}
		delay = min(2*delay, time.Second)
	}
}
