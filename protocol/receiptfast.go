package protocol

import (
	"bytes"
	"strconv"
)

// Read receipts and typing indicators are as frequent as messages, and
// their frames are small and fixed: they are written here without
// reflection, byte for byte as encoding/json writes them
// (TestReceiptFramesMatchJSON).

// EncodeReadPush encodes the read push of p, as EncodePush(PushRead, p).
func EncodeReadPush(p ReadPush) []byte {
	b := make([]byte, 0, 64+len(p.Conv)+len(p.User))
	b = append(b, `{"action":"`+PushRead+`","data":{"conv":`...)
	b = appendJSONStringHTML(b, p.Conv)
	b = append(b, `,"user":`...)
	b = appendJSONStringHTML(b, p.User)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, p.Seq, 10)
	return append(b, `}}`...)
}

// EncodeTypingPush encodes the typing push of p, as
// EncodePush(PushTyping, p).
func EncodeTypingPush(p TypingPush) []byte {
	b := make([]byte, 0, 64+len(p.Conv)+len(p.From))
	b = append(b, `{"action":"`+PushTyping+`","data":{"conv":`...)
	b = appendJSONStringHTML(b, p.Conv)
	b = append(b, `,"from":`...)
	b = appendJSONStringHTML(b, p.From)
	return append(b, `}}`...)
}

// appendReceiptReply encodes a successful reply whose data is a
// ReadReply or Empty (typing's); ok false for any other.
func appendReceiptReply(b []byte, r *Reply) ([]byte, bool) {
	if r.Code != CodeOK || r.Error != "" {
		return b, false
	}
	var rr ReadReply
	switch d := r.Data.(type) {
	case ReadReply:
		rr = d
	case Empty:
	default:
		return b, false
	}
	b = appendReplyHead(b, r)
	if _, empty := r.Data.(Empty); empty {
		return append(b, `,"code":0,"data":{}}`...), true
	}
	b = append(b, `,"code":0,"data":{"conv":`...)
	b = appendJSONStringHTML(b, rr.Conv)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, rr.Seq, 10)
	return append(b, `}}`...), true
}

// IsReceiptFrame reports whether b is a read or typing frame, a push or a
// reply, as this package writes one (its action first): frames that may
// wait a moment to go out with others, since no one waits on them the way
// a message is waited for.
func IsReceiptFrame(b []byte) bool {
	return bytes.HasPrefix(b, receiptRead) || bytes.HasPrefix(b, receiptTyping)
}

var (
	receiptRead   = []byte(`{"action":"` + ActionRead + `",`)
	receiptTyping = []byte(`{"action":"` + ActionTyping + `",`)
)
