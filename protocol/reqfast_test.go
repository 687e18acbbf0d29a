package protocol

import (
	"encoding/json"
	"testing"
)

// The frames clients send most are read in one pass; the rest go to
// encoding/json with the same result (FuzzDecode checks that on every
// input).
func TestFastRequestReadsCommonFrames(t *testing.T) {
	tests := []struct {
		in   string
		chat *ChatData
	}{
		{in: `{"action":"chat","id":"12","data":{"to":"bob","text":"hi","clientMsgId":"c-1"}}`,
			chat: &ChatData{To: "bob", Text: "hi", ClientMsgID: "c-1"}},
		{in: " {\"action\" : \"chat\", \"data\" : {\"room\":\"go\", \"text\":\"a \\\"quote\\\"\\n\\u00e9\\/ ünï 😀\"}}\n",
			chat: &ChatData{Room: "go", Text: "a \"quote\"\né/ ünï 😀"}},
		{in: `{"action":"chat","id":"3","data":{"to":"bob","text":"x","extra":[1,-2.5e3,{"a":null},true,false,"s"]}}`,
			chat: &ChatData{To: "bob", Text: "x"}},
		{in: `{"action":"chat","data":{}}`, chat: &ChatData{}},
		{in: `{"action":"ping","id":"7"}`},
		{in: `{"id":null,"action":"sync","data":{"convs":{"dm:a:b":3}}}`},
		{in: `{"data":{"to":"bob","text":"hi"},"action":"chat"}`}, // data first: decoded later
		{in: `{"action":"login","data":null}`},
	}
	for _, tc := range tests {
		got, ok := decodeFastRequest([]byte(tc.in))
		if !ok {
			t.Errorf("%s: not read in one pass", tc.in)
			continue
		}
		want, err := decodeRequestJSON([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if got.Action != want.Action || got.ID != want.ID || string(got.Data) != string(want.Data) {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, want)
		}
		switch {
		case tc.chat == nil && got.Chat != nil:
			t.Errorf("%s: chat data %+v read, want it left for later", tc.in, *got.Chat)
		case tc.chat != nil && (got.Chat == nil || *got.Chat != *tc.chat):
			t.Errorf("%s: chat data %+v, want %+v", tc.in, got.Chat, *tc.chat)
		}
	}
}

// What the one-pass reader cannot take exactly as encoding/json does is
// left to encoding/json, never decoded differently.
func TestFastRequestLeavesTheRest(t *testing.T) {
	for _, in := range []string{
		`{"Action":"chat","data":{}}`,                        // a key matched only without regard to case
		`{"action":"chat","data":{"TEXT":"x"}}`,              // the same inside data
		`{"action":"chat","action":"ping"}`,                  // a repeated field
		`{"action":"chat","data":{"text":"\ud83d\ude00"}}`,   // a surrogate pair
		"{\"action\":\"chat\",\"data\":{\"text\":\"\xff\"}}", // invalid UTF-8
		`{"action":"chat","data":{"text":5}}`,                // a wrong type
		`{"action":"chat","data":{"text":null}}`,             // null for a field
		`{"action":"ping"} x`,                                // trailing bytes
		`{"action":"ping",}`,                                 // malformed
		`{"action":"ping","data":[]}`,                        // data not an object
		`{"action":"","id":"1"}`,                             // an empty action
	} {
		if r, ok := decodeFastRequest([]byte(in)); ok && (r.Chat != nil || in[len(in)-1] != '}') {
			t.Errorf("%s: read in one pass as %+v", in, r)
		}
	}
}

func BenchmarkDecodeChatRequest(b *testing.B) {
	frame := []byte(`{"action":"chat","id":"1842","data":{"to":"user0042","text":"message 1842 from user0017, with \"quotes\" and an é","clientMsgId":"c-17-1842"}}`)
	b.Run("one-pass", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, err := DecodeRequest(frame)
			if err != nil || req.Chat == nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, err := decodeRequestJSON(frame)
			if err != nil {
				b.Fatal(err)
			}
			var d ChatData
			if err := json.Unmarshal(req.Data, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
