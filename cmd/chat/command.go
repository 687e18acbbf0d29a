package main

import (
	"fmt"
	"strconv"
	"strings"

	"chatcluster/protocol"
)

// Command kinds.
const (
	cmdNone    = ""        // an empty line
	cmdSay     = "say"     // text to the current room
	cmdJoin    = "join"    // arg: room
	cmdLeave   = "leave"   // arg: room, "" for the current one
	cmdRooms   = "rooms"   //
	cmdRoom    = "room"    // which room is the current one
	cmdMsg     = "msg"     // arg: user; text
	cmdHistory = "history" // arg: room, "@user", or "" for the current room
	cmdWho     = "who"     // arg: user
	cmdTop     = "top"     // n: words, 0 for the server's default
	cmdEdit    = "edit"    // arg: "#room", "@user" or "" for the current room; text
	cmdRecall  = "recall"  // arg: room, "@user" or "" for the current room
	cmdRead    = "read"    // arg: room, "@user" or "" for the current room
	cmdHelp    = "help"    //
	cmdQuit    = "quit"    //
)

// command is one parsed input line.
type command struct {
	kind string
	arg  string
	text string
	n    int
}

// parseCommand parses one line of input (without its line ending, and
// cleaned by cleanInput). An error is meant for the user.
func parseCommand(line string) (command, error) {
	if strings.TrimSpace(line) == "" {
		return command{kind: cmdNone}, nil
	}
	if !strings.HasPrefix(line, "/") {
		return command{kind: cmdSay, text: line}, nil
	}
	if strings.HasPrefix(line, "//") {
		return command{kind: cmdSay, text: line[1:]}, nil
	}
	name, rest := cutSpace(line[1:])
	args := strings.Fields(rest)
	usage := func(u string) error { return fmt.Errorf("usage: %s", u) }
	switch name {
	case "join":
		if len(args) != 1 {
			return command{}, usage("/join <room>")
		}
		return command{kind: cmdJoin, arg: args[0]}, nil
	case "leave":
		if len(args) > 1 {
			return command{}, usage("/leave [room]")
		}
		c := command{kind: cmdLeave}
		if len(args) == 1 {
			c.arg = args[0]
		}
		return c, nil
	case "rooms":
		if len(args) != 0 {
			return command{}, usage("/rooms")
		}
		return command{kind: cmdRooms}, nil
	case "room":
		if len(args) != 0 {
			return command{}, usage("/room (/join <room> changes it)")
		}
		return command{kind: cmdRoom}, nil
	case "msg":
		user, text := cutSpace(rest)
		if user == "" || strings.TrimSpace(text) == "" {
			return command{}, usage("/msg <user> <text>")
		}
		return command{kind: cmdMsg, arg: user, text: text}, nil
	case "history":
		if len(args) > 1 {
			return command{}, usage("/history [room|@user]")
		}
		c := command{kind: cmdHistory}
		if len(args) == 1 {
			c.arg = args[0]
		}
		return c, nil
	case "who":
		if len(args) != 1 {
			return command{}, usage("/who <user>")
		}
		return command{kind: cmdWho, arg: args[0]}, nil
	case "top":
		if len(args) > 1 {
			return command{}, usage("/top [n]")
		}
		c := command{kind: cmdTop}
		if len(args) == 1 {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > protocol.MaxPopular {
				return command{}, fmt.Errorf("/top: n must be 1 to %d", protocol.MaxPopular)
			}
			c.n = n
		}
		return c, nil
	case "edit":
		c := command{kind: cmdEdit, text: rest}
		if strings.HasPrefix(rest, "@") || strings.HasPrefix(rest, "#") {
			c.arg, c.text = cutSpace(rest)
			c.arg = strings.TrimPrefix(c.arg, "#")
		}
		if c.arg == "@" || strings.TrimSpace(c.text) == "" {
			return command{}, usage("/edit [#room|@user] <new text>")
		}
		return c, nil
	case "recall", "read":
		if len(args) > 1 {
			return command{}, usage("/" + name + " [room|@user]")
		}
		c := command{kind: cmdRecall}
		if name == "read" {
			c.kind = cmdRead
		}
		if len(args) == 1 {
			c.arg = strings.TrimPrefix(args[0], "#")
		}
		return c, nil
	case "help":
		return command{kind: cmdHelp}, nil
	case "quit":
		return command{kind: cmdQuit}, nil
	}
	return command{}, fmt.Errorf("unknown command %q (/help lists the commands)", "/"+name)
}

// cutSpace splits s at its first space or tab, dropping the blanks after it.
func cutSpace(s string) (head, tail string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i+1:], " \t")
}
