package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"chatcluster/protocol"
)

// encoded is the frame of an encoding call that cannot fail on a test's
// values.
func encoded(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestScanFrame(t *testing.T) {
	msg := protocol.Message{ID: "x1", Conv: "dm:a:b", Seq: 7, From: "a", To: "b", Text: "bench r.1 5 123", TS: 9}
	push := encoded(protocol.EncodePush(protocol.PushMessage, msg))
	reply := encoded(protocol.EncodeReply(protocol.Reply{Action: protocol.ActionChat, ID: "m42", Code: 0,
		Data: protocol.ChatReply{ID: "x1", Conv: "dm:a:b", Seq: 7, TS: 9}}))
	refused := encoded(protocol.EncodeReply(protocol.ReplyError(protocol.ActionSync, "r3",
		protocol.Errorf(protocol.CodeUnavailable, `busy "now" <retry>`))))

	var f frameFields
	if !scanFrame(push, &f) || f.hasCode || string(f.action) != "message" || f.id != nil {
		t.Fatalf("push %s: %+v", push, f)
	}
	if text, ok := messageText(f.data); !ok || string(text) != msg.Text {
		t.Errorf("push text %q %v, want %q", text, ok, msg.Text)
	}
	if !scanFrame(reply, &f) || !f.hasCode || f.code != 0 || string(f.id) != "m42" || string(f.action) != "chat" {
		t.Fatalf("reply %s: %+v", reply, f)
	}
	if conv, seq, ok := chatReplyData(f.data); !ok || string(conv) != "dm:a:b" || seq != 7 {
		t.Errorf("reply data: %q %d %v", conv, seq, ok)
	}
	if !scanFrame(refused, &f) || f.code != 503 || string(f.id) != "r3" {
		t.Fatalf("refusal %s: %+v", refused, f)
	}
	// White space, members in another order, nested values and escapes.
	odd := []byte(` { "data" : {"x":[1,{"y":"}"}],"text":"a\"b\\u0041"} , "action":"message" } `)
	if !scanFrame(odd, &f) || string(f.action) != "message" || f.hasCode {
		t.Fatalf("odd frame: %+v", f)
	}
	if text, ok := messageText(f.data); !ok || string(text) != `a"b\u0041` {
		t.Errorf("escaped text %q %v", text, ok)
	}
	for _, bad := range []string{"", "[]", `{"action":`, `{"action":"chat"`, `{"code":5x}`, `{"code":"0"}`, `{"id":1}`, `{"data":{"text":`, `{"a" "b"}`} {
		if scanFrame([]byte(bad), &f) {
			t.Errorf("scanFrame(%q) accepted: %+v", bad, f)
		}
	}
	if _, ok := messageText([]byte(`{"text":5}`)); ok {
		t.Error("a number taken as a text")
	}
}

// FuzzScanFrame checks the scanner against encoding/json: whatever it
// reads from a valid object is what encoding/json reads.
func FuzzScanFrame(f *testing.F) {
	f.Add([]byte(`{"action":"message","data":{"text":"bench x 1 2","seq":3}}`))
	f.Add([]byte(`{"action":"chat","id":"m1","code":0,"data":{"conv":"dm:a:b","seq":4}}`))
	f.Add([]byte(`{"action":"sync","id":"r1","code":503,"error":"x\"y"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ff frameFields
		ok := scanFrame(b, &ff)
		// encoding/json matches keys regardless of case; a map keeps
		// them as written, the last of a repeated key winning, as the
		// scanner does.
		var ref map[string]json.RawMessage
		if !ok || !utf8.Valid(b) || json.Unmarshal(b, &ref) != nil {
			return
		}
		if raw, ok := ref["action"]; ok {
			var want string
			got, gok := stringValue(raw)
			if json.Unmarshal(raw, &want) == nil && (!gok || string(got) != want) {
				t.Errorf("action %q, encoding/json %q", got, want)
			}
		}
		if raw, ok := ref["code"]; ok {
			var want int
			if json.Unmarshal(raw, &want) == nil && (!ff.hasCode || ff.code != want) {
				t.Errorf("code %d %v, encoding/json %d", ff.code, ff.hasCode, want)
			}
		}
		if raw, ok := ref["data"]; ok && string(raw) != string(ff.data) {
			t.Errorf("data %s, encoding/json %s", ff.data, raw)
		}
	})
}

func TestAppendChatFrame(t *testing.T) {
	trk := newTracker("run9")
	due := time.Unix(1700000000, 123)
	k := trk.add(due, 1, 0)
	b := appendChatFrame(nil, trk, k, `odd"name\`, "", due.UnixNano())
	var req protocol.Request
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var d protocol.ChatData
	if err := json.Unmarshal(req.Data, &d); err != nil {
		t.Fatal(err)
	}
	if req.Action != "chat" || req.ID != "m1" || d.To != `odd"name\` || d.Room != "" || d.Text != trk.text(k, due) || d.ClientMsgID != trk.clientMsgID(k) {
		t.Errorf("decoded %+v %+v from %s", req, d, b)
	}
	if got, ok := trk.parseText(d.Text); !ok || got != k {
		t.Errorf("parseText(%q) = %d %v", d.Text, got, ok)
	}
	if _, ok := trk.parseTextBytes([]byte("bench " + trk.id + " 12 x")); ok {
		t.Error("a text with a bad due time taken")
	}
	if _, ok := trk.parseTextBytes([]byte("bench " + trk.id + "x 12 5")); ok {
		t.Error("a text of another run taken")
	}
	if got := appendJSONString(nil, "a\x01\n"); string(got) != `"a\u0001\u000a"` {
		t.Errorf("control characters: %s", got)
	}
}

// testClient is a client without a connection, for feeding frames to its
// read path.
func testClient(idx int, trk *tracker) *client {
	return &client{idx: idx, waiting: map[string]chan frame{}, trk: func() *tracker { return trk }, done: make(chan struct{})}
}

func TestClientOnFrame(t *testing.T) {
	trk := newTracker("run3")
	start := time.Now()
	trk.setStart(start)
	due := start.Add(time.Millisecond)
	k := trk.add(due, 1, 0)
	sender, recipient := testClient(0, trk), testClient(1, trk)

	reply := encoded(protocol.EncodeReply(protocol.Reply{Action: protocol.ActionChat, ID: "m1", Code: 0,
		Data: protocol.ChatReply{ID: "x", Conv: "dm:a:b", Seq: 11}}))
	sender.onFrame(reply, due.Add(2*time.Millisecond))
	push := encoded(protocol.EncodePush(protocol.PushMessage, protocol.Message{Conv: "dm:a:b", Seq: 11, Text: trk.text(k, due)}))
	recipient.onFrame(push, due.Add(3*time.Millisecond))
	recipient.onFrame(encoded(protocol.EncodePush(protocol.PushPresence, map[string]any{"username": "a"})), due)

	if trk.acked.Load() != 1 || trk.delivered() != 1 || trk.outstanding() != 0 {
		t.Fatalf("acked %d delivered %d owed %d, want 1 1 0", trk.acked.Load(), trk.delivered(), trk.outstanding())
	}
	if m := trk.missing(); len(m) != 0 {
		t.Errorf("missing %+v", m)
	}
	if s := summarize(trk.e2e.merged()); s.Count != 1 || s.P50Ms < 2.9 || s.P50Ms > 3.1 {
		t.Errorf("latency %+v, want one of 3 ms", s)
	}
	// A reply to another request reaches its waiter, decoded.
	ch := make(chan frame, 1)
	sender.waiting["r7"] = ch
	sender.onFrame(encoded(protocol.EncodeReply(protocol.ReplyError(protocol.ActionSync, "r7", protocol.Errorf(503, "busy")))), time.Now())
	select {
	case f := <-ch:
		if f.Code == nil || *f.Code != 503 || f.Error != "busy" {
			t.Errorf("waiter got %+v", f)
		}
	default:
		t.Error("the waiter got nothing")
	}
}

func BenchmarkReceivePush(b *testing.B) {
	trk := newTracker("runB")
	trk.setStart(time.Now())
	due := time.Now()
	k := trk.add(due, 1<<30, 0)
	c := testClient(1, trk)
	push, err := protocol.EncodePush(protocol.PushMessage, protocol.Message{ID: "mid-0123456789", Conv: "room:bench-room", Seq: 123456,
		From: "bench17", Room: "bench-room", Text: trk.text(k, due), TS: due.UnixMilli()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(push)))
	now := time.Now()
	for b.Loop() {
		c.onFrame(push, now)
	}
	if trk.delivered() == 0 {
		b.Fatal("nothing delivered")
	}
}

func BenchmarkChatReply(b *testing.B) {
	trk := newTracker("runB")
	due := time.Now()
	c := testClient(1, trk)
	keys := make([][]byte, 1<<16)
	for i := range keys {
		k := trk.add(due, 1, 1)
		keys[i] = encoded(protocol.EncodeReply(protocol.Reply{Action: protocol.ActionChat, ID: "m" + strconv.FormatUint(k, 10), Code: 0,
			Data: protocol.ChatReply{ID: "mid-0123456789", Conv: "dm:bench1:bench2", Seq: int64(k), TS: due.UnixMilli()}}))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.onFrame(keys[i&(len(keys)-1)], due)
		i++
	}
}

func BenchmarkChatFrame(b *testing.B) {
	trk := newTracker("runB")
	due := time.Now()
	var buf []byte
	b.ReportAllocs()
	k := uint64(1)
	for b.Loop() {
		buf = appendChatFrame(buf[:0], trk, k, "bench12345", "", due.UnixNano())
		k++
	}
}

func TestClientOnPush(t *testing.T) {
	trk := newTracker("run4")
	c := testClient(0, trk)
	var got []string
	c.onPush = func(action, data []byte, _ time.Time) { got = append(got, string(action)+" "+string(data)) }
	c.onFrame(encoded(protocol.EncodePush(protocol.PushAssigned, protocol.ConvData{Conv: "cs:~v:1"})), time.Now())
	c.onFrame(encoded(protocol.EncodePush(protocol.PushMessage, protocol.Message{Conv: "cs:~v:1", Text: trk.text(trk.add(time.Now(), 1, 0), time.Now())})), time.Now())
	if len(got) != 2 || got[0] != `assigned {"conv":"cs:~v:1"}` || !strings.HasPrefix(got[1], "message ") {
		t.Errorf("pushes %q", got)
	}
	if trk.delivered() != 0 {
		t.Error("a push went to the tracker as well")
	}
}
