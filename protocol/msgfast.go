package protocol

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// A message is encoded on every chat, and a chat's reply with it; both are
// written here without reflection, to the very bytes encoding/json writes
// for them (TestFastEncodingIsEncodingJSON and FuzzMessageEncoding check
// it), so a message reads the same whichever wrote it.

// AppendMessageHead appends m's JSON up to its seq's value:
// {"id":…,"conv":…,"seq":
func AppendMessageHead(b []byte, m *Message) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONStringHTML(b, m.ID)
	b = append(b, `,"conv":`...)
	b = appendJSONStringHTML(b, m.Conv)
	return append(b, `,"seq":`...)
}

// AppendMessageTail appends the rest of m's JSON after its seq's value.
func AppendMessageTail(b []byte, m *Message) []byte {
	b = append(b, `,"from":`...)
	b = appendJSONStringHTML(b, m.From)
	if m.To != "" {
		b = append(b, `,"to":`...)
		b = appendJSONStringHTML(b, m.To)
	}
	if m.Room != "" {
		b = append(b, `,"room":`...)
		b = appendJSONStringHTML(b, m.Room)
	}
	if m.Kind != "" {
		b = append(b, `,"kind":`...)
		b = appendJSONStringHTML(b, m.Kind)
	}
	if m.Ref != 0 {
		b = append(b, `,"ref":`...)
		b = strconv.AppendInt(b, m.Ref, 10)
	}
	if m.Edited != 0 {
		b = append(b, `,"edited":`...)
		b = strconv.AppendInt(b, m.Edited, 10)
	}
	if m.Recalled {
		b = append(b, `,"recalled":true`...)
	}
	b = append(b, `,"text":`...)
	b = appendJSONStringHTML(b, m.Text)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, m.TS, 10)
	return append(b, '}')
}

// AppendMessage appends m's JSON, as json.Marshal writes it.
func AppendMessage(b []byte, m *Message) []byte {
	b = AppendMessageHead(b, m)
	b = strconv.AppendInt(b, m.Seq, 10)
	return AppendMessageTail(b, m)
}

// MessagePushPrefix and MessagePushSuffix enclose a message's JSON in the
// message push a recipient gets: {"action":"message","data":<message>}.
const (
	MessagePushPrefix = `{"action":"message","data":`
	MessagePushSuffix = `}`
)

// EncodeMessagePush encodes the message push of m, as
// EncodePush(PushMessage, m) does.
func EncodeMessagePush(m *Message) []byte {
	b := make([]byte, 0, len(MessagePushPrefix)+len(m.Text)+len(m.ID)+len(m.Conv)+len(m.From)+len(m.To)+len(m.Room)+len(m.Kind)+160)
	b = append(b, MessagePushPrefix...)
	b = AppendMessage(b, m)
	return append(b, MessagePushSuffix...)
}

// MessagePushTS reads the time of the message in push, a message push as
// EncodeMessagePush writes it (the time is its last field); ok false for
// anything else.
func MessagePushTS(push []byte) (ts int64, ok bool) {
	const key = `,"ts":`
	end := len(push) - len(MessagePushSuffix) - 1 // the message's closing brace
	if end < len(key) || string(push[end:]) != "}"+MessagePushSuffix {
		return 0, false
	}
	i := bytes.LastIndex(push[:end], []byte(key))
	if i < 0 {
		return 0, false
	}
	ts, err := strconv.ParseInt(string(push[i+len(key):end]), 10, 64)
	return ts, err == nil
}

// appendChatReply appends r, a successful chat's reply, as json.Marshal
// writes it; ok false for any other reply.
func appendChatReply(b []byte, r *Reply) ([]byte, bool) {
	d, ok := r.Data.(ChatReply)
	if !ok || r.Code != CodeOK || r.Error != "" {
		return b, false
	}
	b = appendReplyHead(b, r)
	b = append(b, `,"code":0,"data":{"id":`...)
	b = appendJSONStringHTML(b, d.ID)
	b = append(b, `,"conv":`...)
	b = appendJSONStringHTML(b, d.Conv)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, d.Seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, d.TS, 10)
	return append(b, `}}`...), true
}

// appendReplyHead writes a reply's action and id, as encoding/json does.
func appendReplyHead(b []byte, r *Reply) []byte {
	b = append(b, `{"action":`...)
	b = appendJSONStringHTML(b, r.Action)
	if r.ID != "" {
		b = append(b, `,"id":`...)
		b = appendJSONStringHTML(b, r.ID)
	}
	return b
}

// appendJSONStringHTML appends s as a JSON string the way encoding/json
// writes one: <, > and & escaped, as are U+2028 and U+2029, and each byte
// that is not valid UTF-8 written as \ufffd.
func appendJSONStringHTML(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
