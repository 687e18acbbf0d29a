package protocol

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Conversation name prefixes.
const (
	DMPrefix   = "dm:"
	RoomPrefix = "room:"
)

// ValidName reports whether s is a usable user or room name: 1 to
// MaxUsernameLen letters, digits, '_', '-' or '.', in any script. ':' is
// excluded because conversation ids use it. Room names are compared as
// they are; usernames are also unique under a normal form, which package
// accounts checks at registration.
func ValidName(s string) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > MaxUsernameLen {
		return false
	}
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-' || r == '.' {
			continue
		}
		return false
	}
	return true
}

// ValidDevice reports whether s is a usable device name (LoginData.Device):
// 1 to MaxDeviceLen ASCII letters, digits, '_', '-' or '.'.
func ValidDevice(s string) bool {
	if s == "" || len(s) > MaxDeviceLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' {
			continue
		}
		return false
	}
	return true
}

// DMConv is the conversation id of a direct conversation: the two names
// sorted, so both sides name it alike.
func DMConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return DMPrefix + a + ":" + b
}

// RoomConv is the conversation id of a room.
func RoomConv(room string) string { return RoomPrefix + room }

// ParseConv splits a conversation id. For a direct conversation ("dm") it
// returns the two users; for a room ("room"), the room name; for a support
// conversation ("cs"), the visitor and its number. ok is false for
// anything else.
func ParseConv(conv string) (kind string, a, b string, ok bool) {
	switch {
	case strings.HasPrefix(conv, SupportPrefix):
		v, n, ok := ParseSupportConv(conv)
		if !ok {
			return "", "", "", false
		}
		return "cs", v, strconv.FormatInt(n, 10), true
	case strings.HasPrefix(conv, DMPrefix):
		rest := conv[len(DMPrefix):]
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			return "", "", "", false
		}
		a, b = rest[:i], rest[i+1:]
		if !ValidName(a) || !ValidName(b) || a > b {
			return "", "", "", false
		}
		return "dm", a, b, true
	case strings.HasPrefix(conv, RoomPrefix):
		r := conv[len(RoomPrefix):]
		if !ValidName(r) {
			return "", "", "", false
		}
		return "room", r, "", true
	}
	return "", "", "", false
}
