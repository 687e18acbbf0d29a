package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// The frames that carry a push between nodes (route, node to leader;
// push, leader to node; signal, a typing push either way) are most of
// what the peer link carries: a message's push, a read receipt, a typing
// indicator. They are encoded and decoded here without reflection, in one
// fixed field order, with the push last, so that the leader forwards the
// push's bytes as they came: on decoding they are only checked to be JSON,
// never taken apart. Any other frame, or one in another layout, goes
// through encoding/json; the two read each other's output.

// fastPeer reports whether f has only the fields of a push frame.
func fastPeer(f *PeerFrame) bool {
	switch f.Type {
	case PeerRoute:
		if len(f.Users) == 0 || f.Recipients != "" {
			return false
		}
	case PeerPush:
		if f.Users != nil || f.Recipients == "" || f.Away {
			return false
		}
	case PeerSignal:
		if f.Users != nil && len(f.Users) == 0 {
			return false
		}
	default:
		return false
	}
	if len(f.Push) == 0 || f.Conv == "" && f.Seq != 0 {
		return false
	}
	return f.Dest == "" && f.Message == nil && f.Conn == "" && f.Connections == 0 && f.Started == 0 && f.Messages == 0 &&
		f.Req == 0 && f.Op == "" && f.ClientMsgID == "" && f.Deadline == 0 &&
		f.Code == 0 && f.Error == "" && f.Members == nil && f.Rooms == nil && !f.Dup && !f.Online && f.Ver == 0 &&
		f.Sessions == nil && f.Support == nil && f.Server == nil && !f.Again && f.Reason == "" && !f.Busy && f.RetryAfter == 0
}

// appendFastPeer encodes a frame fastPeer accepts:
//
//	{"type":T,"epoch":E,"from":F,"up":U,"away":true,"except":X,"users":[...],"recipients":R,"room":M,"user":N,"conv":C,"seq":S,"push":P}
//
// with "up", "away", "except", "users", "recipients", "room", "user" only
// when set, and "conv" and "seq" together, when conv is set.
func appendFastPeer(b []byte, f *PeerFrame) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, f.Type)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendInt(b, f.Epoch, 10)
	b = append(b, `,"from":`...)
	b = appendJSONString(b, f.From)
	if f.Up != 0 {
		b = append(b, `,"up":`...)
		b = strconv.AppendUint(b, f.Up, 10)
	}
	if f.Away {
		b = append(b, `,"away":true`...)
	}
	if f.Except != "" {
		b = append(b, `,"except":`...)
		b = appendJSONString(b, f.Except)
	}
	if len(f.Users) > 0 {
		b = append(b, `,"users":[`...)
		for i, u := range f.Users {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, u)
		}
		b = append(b, ']')
	}
	if f.Recipients != "" {
		b = append(b, `,"recipients":`...)
		b = appendJSONString(b, f.Recipients)
	}
	if f.Room != "" {
		b = append(b, `,"room":`...)
		b = appendJSONString(b, f.Room)
	}
	if f.User != "" {
		b = append(b, `,"user":`...)
		b = appendJSONString(b, f.User)
	}
	if f.Conv != "" {
		b = append(b, `,"conv":`...)
		b = appendJSONString(b, f.Conv)
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, f.Seq, 10)
	}
	b = append(b, `,"push":`...)
	b = append(b, f.Push...)
	return append(b, '}')
}

// decodeFastPeer decodes what appendFastPeer writes; ok false for
// anything else (which encoding/json then decodes).
func decodeFastPeer(b []byte) (f PeerFrame, ok bool) {
	p := fastParser{b: b}
	if !p.lit(`{"type":`) {
		return f, false
	}
	f.Type, ok = p.str()
	if !ok || f.Type != PeerPush && f.Type != PeerRoute && f.Type != PeerSignal {
		return f, false
	}
	if !p.lit(`,"epoch":`) {
		return f, false
	}
	if f.Epoch, ok = p.int(); !ok || !p.lit(`,"from":`) {
		return f, false
	}
	if f.From, ok = p.str(); !ok {
		return f, false
	}
	if p.lit(`,"up":`) {
		n, ok := p.int()
		if !ok || n <= 0 {
			return f, false
		}
		f.Up = uint64(n)
	}
	if p.lit(`,"away":true`) {
		f.Away = true
	}
	// Optional strings: present only when not empty.
	optStr := func(key string, dst *string) bool {
		if !p.lit(key) {
			return true
		}
		v, ok := p.str()
		*dst = v
		return ok && v != ""
	}
	if !optStr(`,"except":`, &f.Except) {
		return f, false
	}
	if p.lit(`,"users":[`) {
		for !p.lit("]") {
			if len(f.Users) > 0 && !p.lit(",") {
				return f, false
			}
			u, ok := p.str()
			if !ok {
				return f, false
			}
			f.Users = append(f.Users, u)
		}
		if len(f.Users) == 0 {
			return f, false
		}
	}
	if !optStr(`,"recipients":`, &f.Recipients) || !optStr(`,"room":`, &f.Room) || !optStr(`,"user":`, &f.User) {
		return f, false
	}
	if p.lit(`,"conv":`) {
		if f.Conv, ok = p.str(); !ok || f.Conv == "" || !p.lit(`,"seq":`) {
			return f, false
		}
		if f.Seq, ok = p.int(); !ok {
			return f, false
		}
	}
	if !p.lit(`,"push":`) {
		return f, false
	}
	rest := p.b[p.i:]
	if len(rest) < 2 || rest[len(rest)-1] != '}' {
		return f, false
	}
	push := bytes.TrimSpace(rest[:len(rest)-1])
	if len(push) == 0 || push[0] != '{' || !json.Valid(push) {
		return f, false
	}
	f.Push = json.RawMessage(push)
	// The layout read is one fastPeer accepts, or encoding/json decides.
	return f, fastPeer(&f)
}

// fastParser reads the fixed layout of appendFastPeer. Strings with
// escapes are left to encoding/json (names and conversation ids never
// need them).
type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

func (p *fastParser) str() (string, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", false
	}
	j := p.i + 1
	for j < len(p.b) && p.b[j] != '"' {
		if c := p.b[j]; c == '\\' || c < 0x20 {
			return "", false
		}
		j++
	}
	if j >= len(p.b) || !utf8.Valid(p.b[p.i+1:j]) {
		return "", false
	}
	s := string(p.b[p.i+1 : j])
	p.i = j + 1
	return s, true
}

func (p *fastParser) int() (int64, bool) {
	j := p.i
	if j < len(p.b) && p.b[j] == '-' {
		j++
	}
	for j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(p.b[p.i:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	p.i = j
	return n, true
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
