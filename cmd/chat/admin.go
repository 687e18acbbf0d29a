package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"chatcluster/history"
	"chatcluster/internal/flagenv"
	"chatcluster/protocol"
)

const adminUsage = `usage: chat admin agent <command> [flags]

  add <user> [--capacity N]    make a registered user an agent (default capacity 3); an agent that exists is left as it is
  set <user> --capacity N      change an agent's capacity
  disable <user>               take an agent out of service: what it holds goes back to the queue
  enable <user>                put a disabled agent back in service
  remove <user>                make a user no longer an agent
  list                         the agents, their capacity and status

It writes to MongoDB (--mongo, --mongo-db, as the nodes use); the leader
applies a change within 2 s. An agent sets itself available or away in its
client (agentStatus); a new agent is away.
`

// runAdmin is the admin subcommand: chat admin agent ...
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "agent" {
		fmt.Fprint(stderr, adminUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return exitOK
		}
		return exitUsage
	}
	cmd, rest := args[1], args[2:]
	var name string
	if cmd != "list" {
		if len(rest) == 0 || rest[0] == "" || rest[0][0] == '-' {
			fmt.Fprintf(stderr, "chat admin agent %s: give the user's name\n\n%s", cmd, adminUsage)
			return exitUsage
		}
		name, rest = rest[0], rest[1:]
	}
	fs := flagenv.New("chat admin agent " + cmd)
	fs.SetOutput(stderr)
	mongo := fs.String("mongo", "CHAT_MONGO", "mongodb://127.0.0.1:27017/", "MongoDB URI")
	mongoDB := fs.String("mongo-db", "CHAT_MONGO_DB", "chat", "MongoDB database")
	capacity := fs.Int("capacity", "CHAT_AGENT_CAPACITY", 3, fmt.Sprintf("conversations the agent holds at once, 1 to %d", protocol.MaxAgentCapacity))
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, "chat admin:", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chat admin: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	capSet := false
	fs.Visit(func(f *flag.Flag) { capSet = capSet || f.Name == "capacity" })
	if *capacity < 1 || *capacity > protocol.MaxAgentCapacity {
		fmt.Fprintf(stderr, "chat admin: --capacity must be 1 to %d\n", protocol.MaxAgentCapacity)
		return exitUsage
	}
	switch cmd {
	case "add", "list", "disable", "enable", "remove":
	case "set":
		if !capSet {
			fmt.Fprintln(stderr, "chat admin agent set: give --capacity")
			return exitUsage
		}
	default:
		fmt.Fprintf(stderr, "chat admin agent: unknown command %q\n\n%s", cmd, adminUsage)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := history.Open(ctx, *mongo, *mongoDB)
	if err != nil {
		fmt.Fprintln(stderr, "chat admin:", err)
		return exitFailed
	}
	defer store.Close(context.WithoutCancel(ctx))
	if err := agentCommand(ctx, store, cmd, name, *capacity, stdout); err != nil {
		fmt.Fprintln(stderr, "chat admin:", err)
		return exitFailed
	}
	return exitOK
}

func agentCommand(ctx context.Context, store *history.Store, cmd, name string, capacity int, out io.Writer) error {
	notAgent := func(err error) error {
		if errors.Is(err, history.ErrNotFound) {
			return fmt.Errorf("%s is not an agent (chat admin agent add %s)", name, name)
		}
		return err
	}
	switch cmd {
	case "add":
		created, has, err := store.AddAgent(ctx, name, capacity)
		if errors.Is(err, history.ErrNotFound) {
			return fmt.Errorf("no user %q: register it first (POST /api/register, or chat --register)", name)
		}
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(out, "agent %s added, capacity %d; it is away until it sets itself available\n", name, capacity)
		} else {
			fmt.Fprintf(out, "agent %s exists already, capacity %d: left as it is (chat admin agent set %s --capacity N changes it)\n", name, has, name)
		}
	case "set":
		if err := store.UpdateAgent(ctx, name, &capacity, nil); err != nil {
			return notAgent(err)
		}
		fmt.Fprintf(out, "agent %s: capacity %d\n", name, capacity)
	case "disable", "enable":
		off := cmd == "disable"
		if err := store.UpdateAgent(ctx, name, nil, &off); err != nil {
			return notAgent(err)
		}
		fmt.Fprintf(out, "agent %s %sd\n", name, cmd)
	case "remove":
		if err := store.RemoveAgent(ctx, name); err != nil {
			return notAgent(err)
		}
		fmt.Fprintf(out, "agent %s removed\n", name)
	case "list":
		agents, err := store.Agents(ctx)
		if err != nil {
			return err
		}
		if len(agents) == 0 {
			fmt.Fprintln(out, "no agents (chat admin agent add <user>)")
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AGENT\tCAPACITY\tSTATUS\tENABLED")
		for _, a := range agents {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", a.Name, a.Capacity, a.Status, strconv.FormatBool(!a.Disabled))
		}
		return tw.Flush()
	}
	return nil
}
