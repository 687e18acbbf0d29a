package protocol

import (
	"encoding/json"
	"testing"
)

// The read and typing frames written without reflection are the bytes
// encoding/json writes, whatever the names hold.
func TestReceiptFramesMatchJSON(t *testing.T) {
	names := []string{"", "bob", `a"b\c`, "<x>&y", "ünï\u2028", "bad\xffutf8", "tab\there"}
	for _, a := range names {
		for _, b := range names {
			rp := ReadPush{Conv: "dm:" + a + ":" + b, User: a, Seq: int64(len(a)*100 - 7)}
			want, _ := json.Marshal(Push{Action: PushRead, Data: rp})
			if got := EncodeReadPush(rp); string(got) != string(want) {
				t.Errorf("read push %+v: %s, want %s", rp, got, want)
			}
			tp := TypingPush{Conv: "room:" + a, From: b}
			want, _ = json.Marshal(Push{Action: PushTyping, Data: tp})
			if got := EncodeTypingPush(tp); string(got) != string(want) {
				t.Errorf("typing push %+v: %s, want %s", tp, got, want)
			}
			for _, r := range []Reply{
				{Action: ActionRead, ID: a, Data: ReadReply{Conv: "room:" + b, Seq: 42}},
				{Action: ActionTyping, ID: b, Data: Empty{}},
			} {
				want, _ := json.Marshal(r)
				got, err := EncodeReply(r)
				if err != nil || string(got) != string(want) {
					t.Errorf("reply %+v: %s %v, want %s", r, got, err, want)
				}
			}
		}
	}
	// A failed one is left to encoding/json.
	r := Reply{Action: ActionRead, ID: "1", Code: CodeBadRequest, Error: "no", Data: ReadReply{Conv: "x"}}
	if _, ok := appendReceiptReply(nil, &r); ok {
		t.Error("a failed reply took the fast path")
	}
}
