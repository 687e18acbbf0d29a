// Command chat is the terminal client of the chat service, and the tool
// that seeds the demo users and rooms.
//
// # Chatting
//
//	chat --user alice [--register] [--room lobby] [--node n2] [--gateway http://127.0.0.1:8080]
//
// with the password in $CHAT_PASSWORD (or --password, which other users of
// the machine can see in the process list; it is never printed). The client
// logs in at the gateway, connects to the least loaded node (or the one
// --node names, if the gateway lists it), logs in there with the gateway's
// token, syncs, and then reads one command per line from standard input:
//
//	/join <room>           join (or create) a room; it becomes the current room
//	/leave [room]          leave a room (default: the current room; another room the user is in becomes the current one)
//	/room                  which room is the current one
//	/rooms                 list the rooms
//	/msg <user> <text>     send a direct message
//	<text>                 send to the current room ("//x" sends "/x")
//	/history [room|@user]  the last 20 messages of a room (default: the current one) or a direct conversation
//	/who <user>            whether a user is online, and on which node
//	/top [n]               the most used words
//	/help                  list the commands
//	/quit                  exit; so does the end of the input
//
// Flags, each with an environment variable:
//
//	--gateway   $CHAT_GATEWAY_URL  gateway base URL (http://127.0.0.1:8080)
//	--user      $CHAT_USER         username (required)
//	--password  $CHAT_PASSWORD     password (required; the flag has no variable default, so -h never shows it)
//	--register  $CHAT_REGISTER     register first; a taken name is fine if the password works
//	--room      $CHAT_ROOM         room to join at start
//	--node      $CHAT_CLIENT_NODE  node id to use while the gateway lists it (else the least loaded)
//	--timeout   $CHAT_TIMEOUT      how long to wait for one reply (15s)
//	--ca-file   $CHAT_CA_FILE      CA certificates for https:// and wss:// (default: the system's)
//
// Commands run one at a time, in order: each waits for its reply (a room
// message also for its own copy to come back) before the next one starts,
// so a script piped to standard input gives the same output every time.
// At the end of the input the client exits with status 0.
//
// Escape sequences (arrow and function keys) and the other C0 and C1
// control characters (Ctrl+L, ...) are removed from every line read, a tab
// becomes a space, so a key pressed by mistake is never sent; a line with
// nothing left does nothing. When standard input and output are both a
// terminal, the client shows a prompt with the current room, "[lobby]> ",
// while it waits for a line, and prints what arrives meanwhile in its
// place; otherwise it prints no prompt.
//
// # Output
//
// Standard output is plain text, one line per event, written as a whole
// line as soon as it happens:
//
//	connected to n2 as alice               logged in at first
//	joined lobby: alice, bob, carol        /join, with the members; then the online line and the room's recent messages not printed yet
//	online in lobby: bob                   which of the other members are online ("nobody else"); the first 50 are asked
//	left lobby                             /leave
//	current room: golang                   /room; after /leave of the current room, the room that is current now
//	no current room: /join <room> to pick one
//	[lobby] bob: hello                     a room message, the user's own included, once, in seq order
//	[dm] bob: hi                           a direct message from bob
//	[dm -> bob] hi                         a direct message to bob, once the server stored it
//	* bob is online                        a member of a shared room came online
//	* bob is offline                       ... or went offline
//	rooms: golang (2), lobby (4, joined, current)
//	                                       /rooms: name (members), "joined" if the user is a member, "current"; "rooms: none"
//	history lobby: 2 messages              /history, then the messages indented by two spaces:
//	  [lobby] bob: hello
//	history @bob: 1 message
//	  [dm -> bob] hi
//	bob is online on n2                    /who ("bob is offline")
//	top: hello 3, world 2                  /top ("top: none")
//	error: not a member of room "x"        a refused command: the server's reason, or the client's
//	node n2 is going away; reconnecting... the node drains for shutdown
//	connection to n2 lost; reconnecting... the connection broke
//	reconnected to n3; 2 missed messages   back online; the missed messages follow
//	kicked: logged in elsewhere            the user logged in elsewhere: the client exits (status 3)
//	giving up: <reason>                    no node could be reached in 20 attempts (status 1)
//	error: logging in as alice: wrong username or password
//	                                       (or another reason) the first connection failed (status 1)
//
// Every message is printed at most once: the client keeps, per
// conversation, the highest sequence number it holds, skips what it has,
// and fetches what it missed (after a reconnect, or when a push skips a
// number) with sync. Control characters in names and texts are shown
// escaped (\n, \t, \x1b), so one message is always one line.
//
// Diagnostics (failed reconnect attempts, unexpected frames) go to standard
// error. Exit status: 0 at the end of the input, /quit, SIGINT or SIGTERM;
// 1 when the client cannot log in or gives up reconnecting; 2 for bad
// flags; 3 when kicked.
//
// # Reconnecting
//
// When the node announces that it drains (a node push) or the connection
// breaks, the client logs in at the gateway again for a fresh token,
// connects to a listed node other than the one it lost (while another one
// is listed), logs in, syncs from its offsets and prints what it missed. It
// tries up to 20 times with a backoff from 100 ms to 3 s (the first
// connection: 8 times, about 9 s). A command whose reply was lost with the
// connection is sent again on the new one (a chat message with the same
// clientMsgId, so it is stored once).
//
// # Demo data
//
//	chat seed-demo [--gateway URL] [--wait 60s]
//
// registers the demo users alice, bob, carol and dave (password
// "<name>-demo") and makes each user it registers a member of the rooms
// lobby (all four), golang (alice and bob) and random (carol and dave),
// through the gateway and the WebSocket API. A demo user that exists is
// left as it is (a room they left stays left), so running it again
// changes nothing. It first waits up to --wait for the gateway to list a
// node.
//
// # Customer-service agents
//
//	chat admin agent add <user> [--capacity N] [--mongo URI] [--mongo-db DB]
//	chat admin agent set <user> --capacity N
//	chat admin agent disable|enable|remove <user>
//	chat admin agent list
//
// makes a registered user an agent (an agent that exists is left as it
// is), changes its capacity, takes it out of service or back, or lists the
// agents, writing to MongoDB; the leader applies a change within 2 s.
//
// Every flag has an environment variable; see chat -h and chat seed-demo -h.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"chatcluster/internal/flagenv"
	"chatcluster/internal/keypair"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	exitKicked = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command; it returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "seed-demo" {
		return runSeed(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "admin" {
		return runAdmin(ctx, args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "chat:", err)
		return exitUsage
	}
	cfg.Prompt = isTerminal(stdin) && isTerminal(stdout)
	return newClient(cfg, stdout, stderr).run(ctx, stdin)
}

// isTerminal reports whether f is a terminal (a character device: also
// /dev/null, where a prompt does no harm).
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// parseFlags reads the client's flags and their environment variables.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flagenv.New("chat")
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: chat --user NAME [flags]   (password in $CHAT_PASSWORD; commands on standard input, /help lists them)\n"+
			"       chat seed-demo [flags]    (creates the demo users and rooms; chat seed-demo -h)\n"+
			"       chat admin agent ...      (customer-service agents; chat admin -h)\n\nflags:\n")
		fs.PrintDefaults()
	}
	gateway := fs.String("gateway", "CHAT_GATEWAY_URL", cfg.Gateway, "gateway base URL")
	user := fs.String("user", "CHAT_USER", "", "username (required)")
	// The password's default is not taken from the environment here, so
	// that -h never prints it.
	password := fs.FlagSet.String("password", "", "password; prefer $CHAT_PASSWORD, which other users cannot see in the process list")
	register := boolFlag(fs, "register", "CHAT_REGISTER", "register the user first (a taken name is fine if the password works)")
	room := fs.String("room", "CHAT_ROOM", "", "room to join at start; it becomes the current room")
	node := fs.String("node", "CHAT_CLIENT_NODE", "", "id of the node to use while the gateway lists it (default: the least loaded)")
	device := fs.String("device", "CHAT_DEVICE", "", "a name for this device, kept across runs (under the multi login policy a new login of the same device replaces the old one; default: none, a device of its own per connection)")
	timeout := fs.Duration("timeout", "CHAT_TIMEOUT", cfg.Timeout, "how long to wait for one reply")
	caFile := fs.String("ca-file", "CHAT_CA_FILE", "", "PEM certificates of the CA that signed the gateway's and the nodes' certificates, for https:// and wss:// (default: the system's)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (commands are read from standard input; the subcommands are seed-demo and admin)", fs.Arg(0))
	}
	if err := register.err; err != nil {
		return cfg, err
	}
	cfg.Gateway, cfg.User, cfg.Room, cfg.Node, cfg.Timeout, cfg.Device = *gateway, *user, *room, *node, *timeout, *device
	cfg.Password, cfg.Register = *password, register.value
	if *caFile != "" {
		pool, err := keypair.LoadCAs(*caFile)
		if err != nil {
			return cfg, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.TLS = &tls.Config{RootCAs: pool}
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv("CHAT_PASSWORD")
	}
	return cfg, cfg.validate()
}

// envBool is a boolean flag whose default comes from an environment
// variable; err holds a bad value of the variable.
type envBool struct {
	value bool
	err   error
}

// boolFlag defines a boolean flag backed by env (1, true, 0, false, ...).
func boolFlag(fs *flagenv.Set, name, env, usage string) *envBool {
	b := &envBool{}
	if v, ok := os.LookupEnv(env); ok {
		parsed, err := strconv.ParseBool(v)
		if err != nil {
			b.err = fmt.Errorf("$%s=%q is not a boolean", env, v)
		}
		b.value = parsed
	}
	fs.FlagSet.BoolVar(&b.value, name, b.value, usage+" ($"+env+")")
	return b
}

// runSeed is the seed-demo subcommand.
func runSeed(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flagenv.New("chat seed-demo")
	fs.SetOutput(stderr)
	gateway := fs.String("gateway", "CHAT_GATEWAY_URL", defaultConfig().Gateway, "gateway base URL")
	wait := fs.Duration("wait", "CHAT_SEED_WAIT", 60*time.Second, "how long to wait for a chat node, and to retry while the cluster settles")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, "chat seed-demo:", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chat seed-demo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *wait <= 0 {
		fmt.Fprintln(stderr, "chat seed-demo: --wait must be positive")
		return exitUsage
	}
	if err := seedDemo(ctx, *gateway, *wait, stdout); err != nil {
		fmt.Fprintln(stderr, "chat seed-demo:", err)
		return exitFailed
	}
	return exitOK
}
