package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	"chatcluster/protocol"
)

// Tuning of the client. They are constants rather than flags: they bound
// waits that normally end in milliseconds.
const (
	pushBuffer        = 4096                   // pushes one connection buffers before its reader waits
	reconnectAttempts = 20                     // attempts to reach a node again before giving up
	startAttempts     = 8                      // attempts at start (about 9 s: the cluster may be starting)
	backoffMin        = 100 * time.Millisecond // first wait between attempts
	backoffMax        = 3 * time.Second        // longest wait between attempts
	retries           = 3                      // resends of a command whose connection was lost, or that got 503
	echoWait          = 3 * time.Second        // how long a room message waits for its own copy before syncing
	keepaliveInterval = 15 * time.Second       // ping of an idle connection, to notice a dead one
	historyLimit      = 20                     // messages /history shows
	onlineAsk         = 50                     // members of a room joined whose presence is asked for
)

// config is what the flags and environment say.
type config struct {
	Gateway  string        // gateway base URL
	User     string        // username
	Password string        // never printed
	Register bool          // register before logging in
	Room     string        // room to join at start ("" none)
	Node     string        // preferred node id ("" the least loaded)
	Device   string        // the device named at login ("" none: a device of its own per connection)
	Timeout  time.Duration // wait for one reply
	TLS      *tls.Config   // for https:// and wss://: the CA of --ca-file; nil the system's
	Prompt   bool          // show a prompt: standard input and output are a terminal (not a flag)
}

func defaultConfig() config {
	return config{Gateway: "http://127.0.0.1:8080", Timeout: 15 * time.Second}
}

// validate reports the first problem of c.
func (c config) validate() error {
	u, err := url.Parse(c.Gateway)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("--gateway %q must be an http:// or https:// URL", c.Gateway)
	case c.Device != "" && !protocol.ValidDevice(c.Device):
		return fmt.Errorf("--device %q: 1 to 64 ASCII letters, digits, _, - or .", c.Device)
	case c.User == "":
		return errors.New("--user (or $CHAT_USER) is required")
	case !protocol.ValidName(c.User):
		return fmt.Errorf("--user %q: a username is 1 to %d letters, digits, '_', '-' or '.'", c.User, protocol.MaxUsernameLen)
	case c.Password == "":
		return errors.New("a password is required: set $CHAT_PASSWORD (or --password)")
	case c.Room != "" && !protocol.ValidName(c.Room):
		return fmt.Errorf("--room %q: a room name is 1 to %d letters, digits, '_', '-' or '.'", c.Room, protocol.MaxUsernameLen)
	case c.Timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	return nil
}
