package protocol

import (
	"bytes"
	"unicode/utf8"
)

// A client request is read here in one pass over its bytes: the envelope
// and, for a chat whose action comes before its data (as every client of
// this project sends it), the chat's fields too. Anything this reader does
// not handle exactly as encoding/json would (escapes beyond the common
// ones, keys that differ from a field's name only in case, a repeated
// field, null or a wrong type where a field is expected, and every
// malformed frame) it leaves to encoding/json, which then decodes the frame
// and words the error. FuzzFastRequest checks that the two agree.

// decodeFastRequest decodes b, a frame of at most MaxFrameSize bytes; ok
// false means it must be decoded by encoding/json instead.
func decodeFastRequest(b []byte) (req Request, ok bool) {
	p := jsonReader{b: b}
	p.space()
	if !p.byte('{') {
		return req, false
	}
	var seenAction, seenID, seenData bool
	p.space()
	if !p.byte('}') {
		for {
			p.space()
			key, ok := p.key()
			if !ok {
				return req, false
			}
			p.space()
			if !p.byte(':') {
				return req, false
			}
			p.space()
			switch string(key) {
			case "action":
				if seenAction {
					return req, false
				}
				seenAction = true
				if req.Action, ok = p.str(); !ok || req.Action == "" {
					return req, false
				}
			case "id":
				if seenID {
					return req, false
				}
				seenID = true
				if !p.null() {
					if req.ID, ok = p.str(); !ok || len(req.ID) > MaxIDLen {
						return req, false
					}
				}
			case "data":
				if seenData {
					return req, false
				}
				seenData = true
				if p.null() {
					break
				}
				start := p.i
				if p.i >= len(p.b) || p.b[p.i] != '{' {
					return req, false
				}
				if req.Action == ActionChat {
					if d, ok := p.chatData(); ok {
						req.Chat = &d
					} else {
						p.i = start
						req.Chat = nil
					}
				}
				if req.Chat == nil && !p.skip(0) {
					return req, false
				}
				req.Data = p.b[start:p.i]
			default:
				if foldsTo(key, "action", "id", "data") || !p.skip(0) {
					return req, false
				}
			}
			p.space()
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return req, false
			}
		}
	}
	p.space()
	if p.i != len(p.b) || !seenAction {
		return req, false
	}
	return req, true
}

// chatData reads a chat's data object whose fields are strings; ok false
// for anything else.
func (p *jsonReader) chatData() (d ChatData, ok bool) {
	if !p.byte('{') {
		return d, false
	}
	var seen [5]bool
	p.space()
	if p.byte('}') {
		return d, true
	}
	for {
		p.space()
		key, ok := p.key()
		if !ok {
			return d, false
		}
		p.space()
		if !p.byte(':') {
			return d, false
		}
		p.space()
		var field *string
		var n int
		switch string(key) {
		case "to":
			field, n = &d.To, 0
		case "room":
			field, n = &d.Room, 1
		case "text":
			field, n = &d.Text, 2
		case "clientMsgId":
			field, n = &d.ClientMsgID, 3
		case "conv":
			field, n = &d.Conv, 4
		default:
			if foldsTo(key, "to", "room", "text", "clientMsgId", "conv") || !p.skip(0) {
				return d, false
			}
		}
		if field != nil {
			if seen[n] {
				return d, false
			}
			seen[n] = true
			if *field, ok = p.str(); !ok {
				return d, false
			}
		}
		p.space()
		if p.byte('}') {
			return d, true
		}
		if !p.byte(',') {
			return d, false
		}
	}
}

// foldsTo reports whether key matches one of names the way encoding/json
// matches a field it has no exact match for: without regard to case.
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// maxFastDepth bounds the nesting the fast reader follows; deeper frames
// go to encoding/json.
const maxFastDepth = 64

// jsonReader reads JSON from b at i.
type jsonReader struct {
	b []byte
	i int
}

func (p *jsonReader) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonReader) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonReader) literal(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *jsonReader) null() bool { return p.literal("null") }

// key reads an object key: ASCII without escapes, or ok false (a key this
// reader could mistake for another under encoding/json's case folding).
func (p *jsonReader) key() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			k := p.b[start:p.i]
			p.i++
			return k, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// str reads a string value. It decodes the escapes \" \\ \/ \b \f \n \r
// \t and \uXXXX outside the surrogate range, and takes valid UTF-8; for
// anything else (which encoding/json would replace or refuse) ok is false.
func (p *jsonReader) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			if !utf8.Valid(s) {
				return "", false
			}
			p.i++
			return string(s), true
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}

// escaped finishes a string that has an escape at i, begun at start.
func (p *jsonReader) escaped(start int) (string, bool) {
	out := make([]byte, 0, p.i-start+16)
	out = append(out, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return "", false
			}
			p.i++
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return "", false
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok || r >= 0xd800 && r < 0xe000 {
				return "", false
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (p *jsonReader) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// skip passes over one valid JSON value (strings checked as str checks
// them), at nesting depth.
func (p *jsonReader) skip(depth int) bool {
	if p.i >= len(p.b) || depth > maxFastDepth {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		_, ok := p.str()
		return ok
	case c == '{':
		p.i++
		p.space()
		if p.byte('}') {
			return true
		}
		for {
			p.space()
			if _, ok := p.str(); !ok {
				return false
			}
			p.space()
			if !p.byte(':') {
				return false
			}
			p.space()
			if !p.skip(depth + 1) {
				return false
			}
			p.space()
			if p.byte('}') {
				return true
			}
			if !p.byte(',') {
				return false
			}
		}
	case c == '[':
		p.i++
		p.space()
		if p.byte(']') {
			return true
		}
		for {
			p.space()
			if !p.skip(depth + 1) {
				return false
			}
			p.space()
			if p.byte(']') {
				return true
			}
			if !p.byte(',') {
				return false
			}
		}
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.null()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return false
}

// number passes over a JSON number.
func (p *jsonReader) number() bool {
	p.byte('-')
	switch {
	case p.byte('0'):
	case p.digits() == 0:
		return false
	}
	if p.byte('.') && p.digits() == 0 {
		return false
	}
	if p.byte('e') || p.byte('E') {
		if !p.byte('+') {
			p.byte('-')
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *jsonReader) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}
