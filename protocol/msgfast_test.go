package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

var awkward = []string{
	"", "plain", `quote " backslash \ slash /`, "<b>&amp;</b>", "tab\tnl\ncr\rbs\bff\f",
	"\x00\x01\x1f\x7f", "é ünï 中文 😀", "\u2028\u2029", "bad \xff\xfe utf8 \xc3", "\ufffd",
}

// The hand-written encodings are encoding/json's bytes.
func TestFastEncodingIsEncodingJSON(t *testing.T) {
	for _, s := range awkward {
		for _, m := range []Message{
			{ID: s, Conv: "dm:a:b", Seq: 42, From: "a", To: "b", Text: s, TS: 1732460000123},
			{ID: "m1", Conv: "room:" + s, Seq: -1, From: s, Room: s, Text: "x", TS: 0},
			{Text: s},
			{ID: "e1", Conv: "dm:a:b", Seq: 43, From: "a", To: "b", Kind: KindEdit, Ref: 42, Text: s, TS: 1732460000124},
			{ID: "e2", Conv: "room:x", Seq: 44, From: s, Room: "x", Kind: KindRecall, Ref: -3, TS: 5},
			{ID: s, Conv: "room:x", Seq: 45, From: "a", Room: "x", Kind: s, TS: 6},
			{ID: "m", Conv: "dm:a:b", Seq: 42, From: "a", To: "b", Edited: 1732460000124, Text: s, TS: 1},
			{ID: "m", Conv: "dm:a:b", Seq: 41, From: "a", To: "b", Recalled: true, Edited: -1, TS: 1},
		} {
			checkMessageEncoding(t, m)
		}
		r := Reply{Action: ActionChat, ID: s, Code: CodeOK, Data: ChatReply{ID: s, Conv: "dm:a:b", Seq: 7, TS: 99}}
		got, err := EncodeReply(r)
		want, _ := json.Marshal(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("chat reply %q:\n got %s\nwant %s", s, got, want)
		}
	}
	// Replies other than a chat's success go through encoding/json.
	for _, r := range []Reply{
		{Action: ActionChat, ID: "1", Code: CodeBadRequest, Error: "text is empty"},
		{Action: ActionPing, Code: CodeOK, Data: Empty{}},
	} {
		if _, ok := appendChatReply(nil, &r); ok {
			t.Errorf("reply %+v encoded as a chat's", r)
		}
	}
}

func checkMessageEncoding(t *testing.T, m Message) {
	t.Helper()
	want, _ := json.Marshal(m)
	if got := AppendMessage(nil, &m); !bytes.Equal(got, want) {
		t.Errorf("message %+v:\n got %s\nwant %s", m, got, want)
	}
	wantPush, _ := EncodePush(PushMessage, m)
	if got := EncodeMessagePush(&m); !bytes.Equal(got, wantPush) {
		t.Errorf("push of %+v:\n got %s\nwant %s", m, got, wantPush)
	}
}

func FuzzMessageEncoding(f *testing.F) {
	for _, s := range awkward {
		f.Add(s, s, int64(3), "", int64(0), int64(0), false)
		f.Add(s, s, int64(3), KindEdit, int64(2), int64(0), false)
		f.Add("", s, int64(4), "", int64(0), int64(1732460000123), true)
	}
	f.Fuzz(func(t *testing.T, text, name string, seq int64, kind string, ref, edited int64, recalled bool) {
		checkMessageEncoding(t, Message{ID: name, Conv: "dm:" + name, Seq: seq, From: name, To: name, Room: name,
			Kind: kind, Ref: ref, Edited: edited, Recalled: recalled, Text: text, TS: seq})
	})
}

func BenchmarkEncodeMessagePush(b *testing.B) {
	m := Message{ID: "01JD4X3Q5V7W8Y9Z0A1B2C3D4E", Conv: "dm:user0017:user0042", Seq: 1842, From: "user0017", To: "user0042",
		Text: "message 1842 from user0017, with \"quotes\" and an é", TS: 1732460000123}
	b.Run("hand-written", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = EncodeMessagePush(&m)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = EncodePush(PushMessage, m)
		}
	})
}

func TestMessagePushTS(t *testing.T) {
	m := Message{ID: "x", Conv: "dm:a:b", Seq: 3, From: "a", To: "b", Text: `with ,"ts":5} inside`, TS: 1732460000123}
	if ts, ok := MessagePushTS(EncodeMessagePush(&m)); !ok || ts != m.TS {
		t.Fatalf("ts %d %v, want %d", ts, ok, m.TS)
	}
	e := Message{ID: "y", Conv: "dm:a:b", Seq: 4, From: "a", To: "b", Kind: KindEdit, Ref: 3, Text: `,"ts":1}`, TS: 1732460000124}
	if ts, ok := MessagePushTS(EncodeMessagePush(&e)); !ok || ts != e.TS {
		t.Fatalf("edit push: ts %d %v, want %d", ts, ok, e.TS)
	}
	// A member push ends with its event's time too, so a member push
	// handed over again is judged as a message's.
	mp, err := EncodePush(PushMember, MemberPush{Room: "r", Username: "u", Joined: true, Conv: "room:r", Seq: 5, TS: 1732460000125})
	if err != nil {
		t.Fatal(err)
	}
	if ts, ok := MessagePushTS(mp); !ok || ts != 1732460000125 {
		t.Fatalf("member push %s: ts %d %v", mp, ts, ok)
	}
	for _, b := range []string{``, `{}`, `{"action":"presence","data":{"user":"a"}}`, `{"action":"message","data":{"ts":x}}`} {
		if ts, ok := MessagePushTS([]byte(b)); ok {
			t.Errorf("%s: ts %d read", b, ts)
		}
	}
}
