package main

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// The receive path reads every frame a node pushes, up to hundreds of
// thousands a second in a large room, on the same two cores as the cluster
// it measures. So it does not decode frames into maps or structs: it walks
// the JSON once, finds the few fields it checks (action, id, code, and in
// the data the text of a message or the conv and seq of a chat reply) and
// reads them in place, without allocating. Anything it does not need is
// skipped; anything unusual (an escaped string where chatbench's own
// texts have none) falls back to encoding/json.

// frameFields are the top-level fields of a server frame, as slices of the
// frame: strings without their quotes (still escaped), data as its raw
// JSON value. They are valid until the frame's buffer is reused.
type frameFields struct {
	action  []byte
	id      []byte
	data    []byte
	code    int
	hasCode bool // replies have a code; pushes do not
}

// scanFrame fills f from the JSON object b. It reports false if b is not
// an object it can read.
func scanFrame(b []byte, f *frameFields) bool {
	*f = frameFields{}
	var s objScanner
	if !s.init(b) {
		return false
	}
	for {
		key, val, ok := s.next()
		if !ok {
			return !s.err
		}
		switch string(key) {
		case "action":
			if f.action, ok = rawString(val); !ok {
				return false
			}
		case "id":
			if f.id, ok = rawString(val); !ok {
				return false
			}
		case "code":
			n, ok := parseInt(val)
			if !ok {
				return false
			}
			f.code, f.hasCode = int(n), true
		case "data":
			f.data = val
		}
	}
}

// objScanner walks the members of one JSON object. It does not validate
// beyond what it needs to find where each value ends.
type objScanner struct {
	b   []byte
	i   int
	err bool // the object is malformed
}

// init starts at the object b; it reports false if b is not one.
func (s *objScanner) init(b []byte) bool {
	s.b, s.i, s.err = b, skipWS(b, 0), false
	if s.i >= len(b) || b[s.i] != '{' {
		s.err = true
		return false
	}
	s.i++
	return true
}

// next returns the next member: its key (unquoted, as written) and its
// value (raw). ok is false at the end of the object or on malformed input
// (then s.err is set).
func (s *objScanner) next() (key, val []byte, ok bool) {
	b := s.b
	i := skipWS(b, s.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) {
		s.err = true
		return nil, nil, false
	}
	if b[i] == '}' {
		s.i = i + 1
		return nil, nil, false
	}
	if b[i] != '"' {
		s.err = true
		return nil, nil, false
	}
	end := skipString(b, i)
	if end < 0 {
		s.err = true
		return nil, nil, false
	}
	key = b[i+1 : end-1]
	i = skipWS(b, end)
	if i >= len(b) || b[i] != ':' {
		s.err = true
		return nil, nil, false
	}
	i = skipWS(b, i+1)
	vend := skipValue(b, i)
	if vend < 0 {
		s.err = true
		return nil, nil, false
	}
	s.i = vend
	return key, b[i:vend], true
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i]
// (a quote), or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index just past the JSON value starting at b[i],
// or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := skipString(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	// A number, true, false or null: up to the next delimiter.
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if j == i {
				return -1
			}
			return j
		}
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// rawString returns the contents of the JSON string v, still escaped; ok
// is false if v is not a string.
func rawString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// stringValue returns the JSON string v as bytes: in place when it has no
// escapes (chatbench's own texts and names never do), else decoded into a
// new slice.
func stringValue(v []byte) ([]byte, bool) {
	raw, ok := rawString(v)
	if !ok {
		return nil, false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

// parseInt reads a JSON integer (no fraction or exponent).
func parseInt(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	neg := v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// parseUint reads a decimal number of up to 19 digits.
func parseUint(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// messageText returns the text of a message push's data.
func messageText(data []byte) ([]byte, bool) {
	var s objScanner
	if !s.init(data) {
		return nil, false
	}
	for {
		key, val, ok := s.next()
		if !ok {
			return nil, false
		}
		if string(key) == "text" {
			return stringValue(val)
		}
	}
}

// chatReplyData returns the conv and seq of a chat reply's data.
func chatReplyData(data []byte) (conv []byte, seq int64, ok bool) {
	var s objScanner
	if !s.init(data) {
		return nil, 0, false
	}
	var haveConv, haveSeq bool
	for !haveConv || !haveSeq {
		key, val, more := s.next()
		if !more {
			break
		}
		switch string(key) {
		case "conv":
			conv, haveConv = stringValue(val)
		case "seq":
			seq, haveSeq = parseInt(val)
		}
	}
	return conv, seq, haveConv && haveSeq
}

// appendJSONString appends s as a JSON string. Names and chatbench's texts
// are plain ASCII; anything else is escaped as JSON requires.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigit(c>>4), hexDigit(c&0xf))
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func hexDigit(c byte) byte {
	if c < 10 {
		return '0' + c
	}
	return 'a' + c - 10
}

// appendChatFrame appends the chat request of message k of trk, due at
// due (unix nanoseconds), to a user (to) or a room: the same JSON
// encoding/json would write for a protocol.Request of protocol.ChatData,
// without its reflection and intermediate copies.
func appendChatFrame(dst []byte, trk *tracker, k uint64, to, room string, due int64) []byte {
	dst = append(dst, `{"action":"chat","id":"`+chatIDPrefix...)
	dst = strconv.AppendUint(dst, k, 10)
	dst = append(dst, `","data":{"to":`...)
	dst = appendJSONString(dst, to)
	dst = append(dst, `,"room":`...)
	dst = appendJSONString(dst, room)
	dst = append(dst, `,"text":"`...)
	dst = trk.appendText(dst, k, due)
	dst = append(dst, `","clientMsgId":"`...)
	dst = trk.appendClientMsgID(dst, k)
	return append(dst, `"}}`...)
}
