package protocol

import (
	"encoding/json"
	"testing"
)

// The frames of typing and read receipts are as docs/protocol.md shows
// them, and sync leaves out read positions that are 0.
func TestTypingAndReadFrames(t *testing.T) {
	enc := func(action string, data any) string {
		t.Helper()
		b, err := EncodePush(action, data)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct{ got, want string }{
		{enc(PushTyping, TypingPush{Conv: "room:lobby", From: "alice"}), `{"action":"typing","data":{"conv":"room:lobby","from":"alice"}}`},
		{enc(PushRead, ReadPush{Conv: "dm:alice:bob", User: "bob", Seq: 42}), `{"action":"read","data":{"conv":"dm:alice:bob","user":"bob","seq":42}}`},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("push %s, want %s", tc.got, tc.want)
		}
	}
	rep, err := EncodeReply(Reply{Action: ActionRead, ID: "9", Data: ReadReply{Conv: "dm:alice:bob", Seq: 42}})
	if err != nil || string(rep) != `{"action":"read","id":"9","code":0,"data":{"conv":"dm:alice:bob","seq":42}}` {
		t.Errorf("read reply %s, %v", rep, err)
	}
	sc, _ := json.Marshal(SyncConv{Latest: 3, Messages: []Message{}})
	if string(sc) != `{"latest":3,"messages":[]}` {
		t.Errorf("sync entry without read positions: %s", sc)
	}
	sc, _ = json.Marshal(SyncConv{Latest: 3, Messages: []Message{}, Read: 2, PeerRead: 3})
	if string(sc) != `{"latest":3,"messages":[],"read":2,"peerRead":3}` {
		t.Errorf("sync entry with read positions: %s", sc)
	}
	var d ReadData
	if err := DecodeData(json.RawMessage(`{"conv":"room:x","seq":"5"}`), &d); err == nil {
		t.Errorf("a seq that is a string decoded")
	}
}
