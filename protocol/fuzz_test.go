package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// The fuzz targets run their committed corpus (testdata/fuzz/<target>/)
// with every `go test`; `make test` also fuzzes each of them for a few
// seconds. A failure the fuzzer finds is written to that directory: keep it
// there once fixed, so that it is checked from then on.

// Bounds on how much larger a re-encoded value may be than the bytes it
// was decoded from. encoding/json writes an invalid UTF-8 byte as \ufffd and
// '<', '>', '&' as \u003c...: at most 6 bytes for 1. Each decoded element
// (the value itself, a message, a map entry, a session...) may add the names
// and zero values of its fields, which the input may have left out.
const (
	maxEscapeGrowth = 6
	elementOverhead = 256
)

// FuzzDecode feeds arbitrary client frames to DecodeRequest, and the data
// of every frame that decodes to DecodeData with the data type of each
// action. It checks that
//   - nothing panics, and every error is an *Error with code 400 or 413;
//   - a frame over MaxFrameSize is refused with 413 whatever it holds;
//   - the request id is kept, also on failure, whenever the frame is a JSON
//     object whose id is a string of at most MaxIDLen bytes;
//   - what decodes re-encodes to a frame that decodes to the same value,
//     and encoding that value again gives the very same bytes;
//   - the decoded value is bounded by the input: its encoding is at most
//     maxEscapeGrowth times the input plus a constant per element.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(b)
		checkIDKept(t, b, req, err)
		checkFastAgrees(t, b)
		if len(b) > MaxFrameSize {
			if errCode(err) != CodeTooLarge || !reflect.DeepEqual(req, Request{}) {
				t.Fatalf("frame of %d bytes: got %+v, %v; want nothing and code %d", len(b), req, err, CodeTooLarge)
			}
			return
		}
		if err != nil {
			if c := errCode(err); c != CodeBadRequest {
				t.Fatalf("decode error %v: code %d, want %d", err, c, CodeBadRequest)
			}
			return
		}
		if req.Action == "" {
			t.Fatal("decoded a request without action")
		}
		if len(req.ID) > MaxIDLen {
			t.Fatalf("decoded an id of %d bytes", len(req.ID))
		}
		if len(req.Data) > 0 && (req.Data[0] != '{' || !json.Valid(req.Data)) {
			t.Fatalf("decoded data %q that is not a JSON object", req.Data)
		}

		enc, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("encode %+v: %v", req, err)
		}
		checkGrowth(t, b, enc, 1)
		again, err := DecodeRequest(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %q: %v", enc, err)
		}
		if again.Action != req.Action || again.ID != req.ID || !sameJSON(again.Data, req.Data) {
			t.Fatalf("round trip changed the request:\n got %+v\nwant %+v", again, req)
		}
		if enc2, err := json.Marshal(again); err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not stable: %q then %q (%v)", enc, enc2, err)
		}

		for _, newData := range dataTypes {
			checkData(t, req.Data, newData)
		}
	})
}

// checkFastAgrees checks that what the one-pass reader decodes is what
// encoding/json decodes from the same frame: the envelope, and the chat's
// fields when it read them too.
func checkFastAgrees(t *testing.T, b []byte) {
	t.Helper()
	if len(b) > MaxFrameSize {
		return
	}
	fast, ok := decodeFastRequest(b)
	if !ok {
		return
	}
	slow, err := decodeRequestJSON(b)
	if err != nil {
		t.Fatalf("fast reader took %q, encoding/json refuses it: %v", b, err)
	}
	if fast.Action != slow.Action || fast.ID != slow.ID || !bytes.Equal(fast.Data, slow.Data) {
		t.Fatalf("fast reader and encoding/json differ on %q:\n fast %+v\n json %+v", b, fast, slow)
	}
	if fast.Chat != nil {
		var d ChatData
		if err := DecodeData(slow.Data, &d); err != nil || d != *fast.Chat {
			t.Fatalf("chat data of %q: fast %+v, encoding/json %+v (%v)", b, *fast.Chat, d, err)
		}
	}
}

// dataTypes make the data value of each action that takes data.
var dataTypes = []func() any{
	func() any { return new(LoginData) },
	func() any { return new(ChatData) },
	func() any { return new(HistoryData) },
	func() any { return new(SyncData) },
	func() any { return new(RebuildData) },
	func() any { return new(UserInfoData) },
	func() any { return new(RoomData) },
	func() any { return new(PopularData) },
	func() any { return new(Empty) },
	func() any { return new(EditData) },
	func() any { return new(RecallData) },
}

// checkData decodes data into a new value of one data type and, if that
// works, checks its round trip and size.
func checkData(t *testing.T, data json.RawMessage, newData func() any) {
	t.Helper()
	v := newData()
	if err := DecodeData(data, v); err != nil {
		if c := errCode(err); c != CodeBadRequest {
			t.Fatalf("DecodeData(%q) into %T: %v: code %d, want %d", data, v, err, c, CodeBadRequest)
		}
		return
	}
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %T %+v: %v", v, v, err)
	}
	checkGrowth(t, data, enc, 1+elements(v))
	w := newData()
	if err := DecodeData(enc, w); err != nil {
		t.Fatalf("DecodeData of re-encoded %T %q: %v", v, enc, err)
	}
	if !reflect.DeepEqual(v, w) {
		t.Fatalf("round trip changed the %T:\n got %+v\nwant %+v", v, w, v)
	}
	if enc2, err := json.Marshal(w); err != nil || !bytes.Equal(enc2, enc) {
		t.Fatalf("encoding of %T is not stable: %q then %q (%v)", v, enc, enc2, err)
	}
}

// elements counts the parts of a data value that may each encode to more
// than the input spent on them.
func elements(v any) int {
	switch d := v.(type) {
	case *SyncData:
		return len(d.Convs)
	case *RebuildData:
		return len(d.Messages)
	}
	return 0
}

// FuzzDecodePeer feeds arbitrary frames to DecodePeer, with the properties
// FuzzDecode checks for client frames (MaxPeerFrame is the limit, and there
// is no id to keep).
func FuzzDecodePeer(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodePeer(b)
		if len(b) > MaxPeerFrame {
			if errCode(err) != CodeTooLarge {
				t.Fatalf("peer frame of %d bytes: %v, want code %d", len(b), err, CodeTooLarge)
			}
			return
		}
		if err != nil {
			if c := errCode(err); c != CodeBadRequest {
				t.Fatalf("decode error %v: code %d, want %d", err, c, CodeBadRequest)
			}
			return
		}
		if fr.Type == "" {
			t.Fatal("decoded a peer frame without type")
		}
		enc, err := EncodePeer(&fr)
		if err != nil {
			t.Fatalf("encode %+v: %v", fr, err)
		}
		n := 1 + len(fr.Users) + len(fr.Members) + len(fr.Rooms) + len(fr.Sessions)
		if fr.Message != nil {
			n++
		}
		checkGrowth(t, b, enc, n)
		again, err := DecodePeer(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %q: %v", enc, err)
		}
		if !samePeer(fr, again) {
			t.Fatalf("round trip changed the peer frame:\n got %+v\nwant %+v", again, fr)
		}
		if enc2, err := EncodePeer(&again); err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not stable: %q then %q (%v)", enc, enc2, err)
		}
	})
}

// samePeer reports whether two peer frames mean the same. The encoding
// omits empty lists, so an empty list and no list are the same; Push is
// compared as JSON, since encoding compacts it.
func samePeer(a, b PeerFrame) bool {
	if !sameJSON(a.Push, b.Push) {
		return false
	}
	a.Push, b.Push = nil, nil
	return reflect.DeepEqual(normalizePeer(a), normalizePeer(b))
}

func normalizePeer(f PeerFrame) PeerFrame {
	if len(f.Users) == 0 {
		f.Users = nil
	}
	if len(f.Members) == 0 {
		f.Members = nil
	}
	if len(f.Rooms) == 0 {
		f.Rooms = nil
	}
	if len(f.Sessions) == 0 {
		f.Sessions = nil
	}
	return f
}

// checkIDKept checks the id DecodeRequest returned for b, whether it
// succeeded or not: when b is a JSON object whose id is a string that fits
// the limit, that is the id; otherwise there is none.
func checkIDKept(t *testing.T, b []byte, req Request, err error) {
	t.Helper()
	var ref struct {
		ID any `json:"id"`
	}
	want := ""
	if len(b) <= MaxFrameSize && json.Unmarshal(b, &ref) == nil {
		if s, ok := ref.ID.(string); ok && len(s) <= MaxIDLen {
			want = s
		}
	}
	if req.ID != want {
		t.Fatalf("id %q, want %q (err %v)", req.ID, want, err)
	}
}

// checkGrowth fails if enc, the encoding of a value decoded from in, is
// larger than the bound for a value of n elements.
func checkGrowth(t *testing.T, in, enc []byte, n int) {
	t.Helper()
	if limit := maxEscapeGrowth*len(in) + elementOverhead*n; len(enc) > limit {
		t.Fatalf("%d input bytes decoded to a value of %d elements that encodes to %d bytes, over %d", len(in), n, len(enc), limit)
	}
}

// errCode is the code of a protocol *Error, -1 for any other error and 0
// for none.
func errCode(err error) int {
	var pe *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &pe):
		return pe.Code
	}
	return -1
}

// sameJSON reports whether two raw JSON values are the same once compacted
// and HTML-escaped, as encoding/json writes a json.RawMessage.
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	ca, erra := canonicalJSON(a)
	cb, errb := canonicalJSON(b)
	return erra == nil && errb == nil && bytes.Equal(ca, cb)
}

func canonicalJSON(v json.RawMessage) ([]byte, error) {
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, v); err != nil {
		return nil, err
	}
	json.HTMLEscape(&out, compact.Bytes())
	return out.Bytes(), nil
}

// The size limits are checked before anything is parsed or copied: an
// oversized frame is refused with 413 whatever it holds, for a few hundred
// bytes of garbage, however large it is.
func TestOversizeFramesAreRefusedUnread(t *testing.T) {
	frames := func(limit int) map[string][]byte {
		return map[string][]byte{
			"valid object": []byte(`{"action":"ping","id":"1","data":{"pad":"` + strings.Repeat("x", limit) + `"}}`),
			"garbage":      bytes.Repeat([]byte{0xff}, limit+1),
			"deep nesting": []byte(`{"action":"ping","data":` + strings.Repeat("[", limit)),
			"huge id":      []byte(`{"action":"ping","id":"` + strings.Repeat("9", limit) + `"}`),
		}
	}
	for name, b := range frames(MaxFrameSize) {
		t.Run("client "+name, func(t *testing.T) {
			req, err := DecodeRequest(b)
			if errCode(err) != CodeTooLarge || !reflect.DeepEqual(req, Request{}) {
				t.Fatalf("got %+v, %v; want nothing and code %d", req, err, CodeTooLarge)
			}
			if n := allocBytes(func() { _, _ = DecodeRequest(b) }); n > 1024 {
				t.Fatalf("refusing a frame of %d bytes allocated %d bytes", len(b), n)
			}
		})
	}
	for name, b := range frames(MaxPeerFrame) {
		t.Run("peer "+name, func(t *testing.T) {
			if _, err := DecodePeer(b); errCode(err) != CodeTooLarge {
				t.Fatalf("got %v, want code %d", err, CodeTooLarge)
			}
			if n := allocBytes(func() { _, _ = DecodePeer(b) }); n > 1024 {
				t.Fatalf("refusing a peer frame of %d bytes allocated %d bytes", len(b), n)
			}
		})
	}
	// Right at the limit, a frame is still read.
	pad := MaxFrameSize - len(`{"action":"ping","data":{"pad":""}}`)
	b := []byte(`{"action":"ping","data":{"pad":"` + strings.Repeat("x", pad) + `"}}`)
	if len(b) != MaxFrameSize {
		t.Fatalf("test frame has %d bytes, want %d", len(b), MaxFrameSize)
	}
	if req, err := DecodeRequest(b); err != nil || req.Action != ActionPing {
		t.Fatalf("frame of exactly %d bytes: %+v, %v", len(b), req, err)
	}
}

// allocBytes reports how many bytes f allocates per call, on average over
// a number of calls on one P, so that other goroutines add little.
func allocBytes(f func()) uint64 {
	const runs = 50
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}
