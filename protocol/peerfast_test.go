package protocol

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Message push frames take the fast path both ways, and read the same as
// encoding/json reads them; frames in any other layout still decode.
func TestFastPeerFramesRoundTrip(t *testing.T) {
	m := Message{ID: "mjuoj484-0a87eda4ff168455", Conv: "dm:alice:bob", Seq: 3, From: "alice", To: "bob", Text: `he said "hi", \o/ ünïcode`, TS: 1767225662500}
	push, err := EncodePush(PushMessage, m)
	if err != nil {
		t.Fatal(err)
	}
	readPush, err := EncodePush(PushRead, ReadPush{Conv: m.Conv, User: "bob", Seq: 3})
	if err != nil {
		t.Fatal(err)
	}
	typingPush, err := EncodePush(PushTyping, TypingPush{Conv: "room:lobby", From: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	frames := []PeerFrame{
		{Type: PeerRoute, Epoch: 7, From: "n2", Up: 5121, Users: []string{"bob"}, Push: push, Conv: m.Conv, Seq: m.Seq},
		{Type: PeerRoute, Epoch: 7, From: "n2", Users: []string{"bob", "carol"}, Push: push, Conv: m.Conv, Seq: m.Seq},
		{Type: PeerPush, Epoch: 7, From: "n1", Recipients: "bob,carol", Push: push, Conv: m.Conv, Seq: m.Seq},
		// Several devices: the sender's node delivered to its own
		// connections, and the sending connection has the reply.
		{Type: PeerRoute, Epoch: 7, From: "n2", Up: 5122, Away: true, Except: "mjuohrzq-9c4c8a5b301063b9", Users: []string{"alice"}, Push: push, Conv: m.Conv, Seq: m.Seq},
		{Type: PeerRoute, Epoch: 7, From: "n2", Away: true, Users: []string{"bob"}, Push: push, Conv: m.Conv, Seq: m.Seq},
		{Type: PeerPush, Epoch: 7, From: "n1", Except: "mjuohrzq-9c4c8a5b301063b9", Recipients: "alice", Push: push, Conv: m.Conv, Seq: m.Seq},
		// A read receipt: a push of no message, so no conv or seq.
		{Type: PeerRoute, Epoch: 7, From: "n2", Up: 5123, Users: []string{"bob"}, Push: readPush},
		{Type: PeerRoute, Epoch: 7, From: "n2", Up: 5124, Away: true, Except: "mjuohrzq-9c4c8a5b301063b9", Users: []string{"alice"}, Push: readPush},
		{Type: PeerPush, Epoch: 7, From: "n1", Recipients: "bob", Push: readPush},
		// Typing: to a room's members or to users, and on to a node.
		{Type: PeerSignal, Epoch: 7, From: "n2", Room: "lobby", User: "alice", Push: typingPush},
		{Type: PeerSignal, Epoch: 7, From: "n2", Users: []string{"bob"}, User: "alice", Push: typingPush},
		{Type: PeerSignal, Epoch: 7, From: "n1", Recipients: "bob,carol", Push: typingPush},
	}
	for _, f := range frames {
		b, err := EncodePeer(&f)
		if err != nil {
			t.Fatal(err)
		}
		if !fastPeer(&f) {
			t.Errorf("%s frame not encoded on the fast path", f.Type)
		}
		if _, ok := decodeFastPeer(b); !ok {
			t.Errorf("%s: fast decoder refused %s", f.Type, b)
		}
		got, err := DecodePeer(b)
		if err != nil || !reflect.DeepEqual(got, f) {
			t.Errorf("round trip of %s: %+v %v, want %+v", b, got, err, f)
		}
		var viaJSON PeerFrame
		if err := json.Unmarshal(b, &viaJSON); err != nil || !reflect.DeepEqual(viaJSON, f) {
			t.Errorf("encoding/json reads %s as %+v %v", b, viaJSON, err)
		}
		std, _ := json.Marshal(&f)
		if got, err := DecodePeer(std); err != nil || !reflect.DeepEqual(got, f) {
			t.Errorf("frame of encoding/json %s: %+v %v", std, got, err)
		}
	}
	// Frames that are not push frames, or lack what theirs need, go
	// through encoding/json.
	for _, f := range []PeerFrame{
		{Type: PeerRoute, Epoch: 7, From: "n2", Push: readPush},                             // no users
		{Type: PeerPush, Epoch: 7, From: "n1", Push: readPush},                              // no recipients
		{Type: PeerRoute, Epoch: 7, From: "n2", Users: []string{"bob"}, Push: push, Seq: 3}, // seq without conv
		{Type: PeerSignal, Epoch: 7, From: "n2", Room: "lobby", User: "alice"},              // no push
		{Type: PeerRoom, Epoch: 7, From: "n2", Room: "lobby", User: "alice", Push: push},
		{Type: PeerPush, Epoch: 7, From: "n1", Recipients: "bob", Push: push, Conv: m.Conv, Seq: 3, Again: true},
	} {
		if fastPeer(&f) {
			t.Errorf("%+v taken on the fast path", f)
		}
		b, err := EncodePeer(&f)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := decodeFastPeer(b); ok {
			t.Errorf("fast decoder took %s", b)
		}
		if got, err := DecodePeer(b); err != nil || !reflect.DeepEqual(got, f) {
			t.Errorf("round trip of %s: %+v %v, want %+v", b, got, err, f)
		}
	}
	// A push that is not JSON, or a frame cut short, is refused.
	for _, bad := range []string{
		`{"type":"push","epoch":7,"from":"n1","recipients":"bob","conv":"dm:a:b","seq":3,"push":{"action":}`,
		`{"type":"push","epoch":7,"from":"n1","recipients":"bob","conv":"dm:a:b","seq":3,"push":`,
	} {
		if _, err := DecodePeer([]byte(bad)); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
}

func BenchmarkPeerPushFrame(b *testing.B) {
	m := Message{ID: "mjuoj484-0a87eda4ff168455", Conv: "dm:alice:bob", Seq: 3, From: "alice", To: "bob", Text: "a message of a typical length, some forty bytes", TS: 1767225662500}
	push, _ := EncodePush(PushMessage, m)
	f := &PeerFrame{Type: PeerPush, Epoch: 7, From: "n1", Recipients: "bob", Push: push, Conv: m.Conv, Seq: m.Seq}
	enc, _ := EncodePeer(f)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodePeer(f); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodePeer(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
