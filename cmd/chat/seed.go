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
		user("sam"), // the demo customer-service agent (make run makes it one)
	}
}

// seedDemo creates the demo users and rooms through the gateway and the
// WebSocket API, leaving what exists alone, so that running it again
// changes nothing: it joins a user to the demo rooms only when it has
// just registered that user. A demo user that exists already is not even
// logged in, so a room they left stays left and an open session of theirs
// stays open. No message is posted. It waits up to wait for a chat node
// and retries what fails while the cluster settles (no leader yet, a node
// going away) within the same bound.
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
		// unsure: an attempt failed without an answer, so a later "taken"
		// may be this run's own registration.
		var created, unsure bool
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
			unsure = true
			return err
		})
		if err != nil {
			say("%s: registering failed: %s", u.name, userError(err))
			failed = append(failed, u.name)
			continue
		}
		if !created && unsure {
			// Taken after an unanswered attempt: ours if the user has
			// never been used (no conversation at all).
			err = retry(ctx, func() (err error) {
				created, err = neverUsed(ctx, gw, u)
				return err
			})
			if err != nil {
				say("%s: exists, but checking whether it was just registered failed: %s", u.name, userError(err))
				failed = append(failed, u.name)
				continue
			}
		}
		if !created {
			say("%s: exists, left as it is", u.name)
			continue
		}
		if len(u.rooms) == 0 {
			say("%s: registered", u.name)
			continue
		}
		if err := retry(ctx, func() error { return joinRooms(ctx, gw, u) }); err != nil {
			say("%s: registered, but joining %s failed: %s; join them as %s (/join <room>)",
				u.name, strings.Join(u.rooms, ", "), userError(err), u.name)
			failed = append(failed, u.name)
			continue
		}
		say("%s: registered, member of %s", u.name, strings.Join(u.rooms, ", "))
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not seed %s", strings.Join(failed, ", "))
	}
	say("done")
	return nil
}

// login logs u in: a gateway token, then the first node that takes it.
// The caller closes the connection with closeConn.
func login(ctx context.Context, gw *chatclient.Gateway, u demoUser) (*chatclient.Conn, error) {
	token, nodes, err := gw.Login(ctx, u.name, u.password)
	var he *chatclient.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusUnauthorized {
		return nil, permanentError{fmt.Errorf("the user exists with another password: %w", err)}
	}
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("no chat node is listed")
	}
	conn, err := chatclient.Dial(ctx, nodes[0].WS, 64)
	if err != nil {
		return nil, err
	}
	if _, err := conn.LoginToken(ctx, token); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

// neverUsed reports whether u, who exists, has no conversation at all (no
// room, no direct message): an account nobody has used. One that exists
// with another password has been used.
func neverUsed(ctx context.Context, gw *chatclient.Gateway, u demoUser) (bool, error) {
	conn, err := login(ctx, gw, u)
	if isPermanent(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closeConn(conn)
	r, err := conn.Sync(ctx, nil)
	if err != nil {
		return false, err
	}
	return len(r.Convs) == 0, nil
}

// joinRooms logs u in and joins u's rooms; joining a room one is a member
// of is a no-op, so a retry is safe.
func joinRooms(ctx context.Context, gw *chatclient.Gateway, u demoUser) error {
	conn, err := login(ctx, gw, u)
	if err != nil {
		return err
	}
	defer closeConn(conn)
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
