package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   Request
		code   int
		wantID string // id recovered even on failure
	}{
		{name: "ok", in: `{"action":"ping","id":"7","data":{}}`, want: Request{Action: "ping", ID: "7", Data: json.RawMessage(`{}`)}},
		{name: "no data", in: `{"action":"ping"}`, want: Request{Action: "ping"}},
		{name: "null data", in: `{"action":"ping","data":null}`, want: Request{Action: "ping"}},
		{name: "spaces", in: "  {\"action\":\"ping\"}\n", want: Request{Action: "ping"}},
		{name: "not json", in: `hello`, code: CodeBadRequest},
		{name: "array", in: `[1]`, code: CodeBadRequest},
		{name: "truncated", in: `{"action":"ping"`, code: CodeBadRequest},
		{name: "trailing object", in: `{"action":"login","data":{"username":"a","password":"b"}}{"x":1}`, code: CodeBadRequest},
		{name: "trailing junk", in: `{"action":"ping"} x`, code: CodeBadRequest},
		{name: "no action", in: `{"id":"3"}`, code: CodeBadRequest, wantID: "3"},
		{name: "empty action", in: `{"action":"","id":"3"}`, code: CodeBadRequest, wantID: "3"},
		{name: "action number", in: `{"action":1,"id":"3"}`, code: CodeBadRequest, wantID: "3"},
		{name: "id number", in: `{"action":"ping","id":3}`, code: CodeBadRequest},
		{name: "id too long", in: `{"action":"ping","id":"` + strings.Repeat("x", MaxIDLen+1) + `"}`, code: CodeBadRequest},
		{name: "data string", in: `{"action":"ping","id":"3","data":"x"}`, code: CodeBadRequest, wantID: "3"},
		{name: "too large", in: `{"action":"ping","data":{"x":"` + strings.Repeat("x", MaxFrameSize) + `"}}`, code: CodeTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest([]byte(tc.in))
			if tc.code != 0 {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tc.code {
					t.Fatalf("err = %v, want code %d", err, tc.code)
				}
				if got.ID != tc.wantID {
					t.Fatalf("id = %q, want %q", got.ID, tc.wantID)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeDataNamesField(t *testing.T) {
	var d ChatData
	err := DecodeData(json.RawMessage(`{"to":"bob","text":5}`), &d)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeBadRequest || !strings.Contains(pe.Msg, `"text"`) {
		t.Fatalf("err = %v, want 400 naming the text field", err)
	}
}

func TestReplyRoundTrip(t *testing.T) {
	m := Message{ID: "x", Conv: DMConv("b", "a"), Seq: 3, From: "a", To: "b", Text: "héllo \"quoted\" <b>", TS: 1732460000123}
	b, err := EncodePush(PushMessage, m)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Action string
		Data   Message
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Action != PushMessage || p.Data != m {
		t.Fatalf("round trip: %+v %v", p, err)
	}
	r := ReplyError("chat", "9", errors.New("secret store detail"))
	if r.Code != CodeInternal || strings.Contains(r.Error, "secret") {
		t.Fatalf("internal errors must not leak: %+v", r)
	}
	r = ReplyError("chat", "9", Errorf(CodeNotFound, "unknown user"))
	if r.Code != CodeNotFound || r.ID != "9" || r.Error != "unknown user" {
		t.Fatalf("reply error: %+v", r)
	}
	// An error without data has none in the frame; one with data sends it.
	if b, _ := EncodeReply(r); strings.Contains(string(b), `"data"`) {
		t.Fatalf("error reply without data: %s", b)
	}
	r = ReplyError("login", "3", &Error{Code: CodeRateLimited, Msg: "wait", Data: RetryData{RetryAfter: 2}})
	b, _ = EncodeReply(r)
	if want := `{"action":"login","id":"3","code":429,"data":{"retryAfter":2},"error":"wait"}`; string(b) != want {
		t.Fatalf("throttled reply %s, want %s", b, want)
	}
}

func TestNames(t *testing.T) {
	for _, ok := range []string{"alice", "Bob_1", "li.wei", "张伟", "a-b"} {
		if !ValidName(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", "a b", "a:b", "<x>", strings.Repeat("a", MaxUsernameLen+1), "\xff"} {
		if ValidName(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
	if DMConv("zed", "amy") != "dm:amy:zed" || DMConv("amy", "zed") != "dm:amy:zed" {
		t.Fatal("DMConv must sort")
	}
	for conv, want := range map[string][3]string{
		"dm:amy:zed": {"dm", "amy", "zed"},
		"room:lobby": {"room", "lobby", ""},
	} {
		k, a, b, ok := ParseConv(conv)
		if !ok || [3]string{k, a, b} != want {
			t.Errorf("ParseConv(%q) = %v %v %v %v", conv, k, a, b, ok)
		}
	}
	for _, bad := range []string{"dm:zed:amy", "dm:amy", "room:", "x:y", "dm:a:b:c"} {
		if _, _, _, ok := ParseConv(bad); ok {
			t.Errorf("ParseConv(%q) should fail", bad)
		}
	}
}

func TestPeerRoundTrip(t *testing.T) {
	f := PeerFrame{Type: PeerRoute, Epoch: 42, From: "n1", Dest: "n2", Users: []string{"u"}, Message: &Message{ID: "m", Seq: 1}}
	b, err := EncodePeer(&f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := DecodePeer(b)
	if err != nil || !reflect.DeepEqual(f, g) {
		t.Fatalf("peer round trip: %+v %v", g, err)
	}
	if _, err := DecodePeer([]byte(`{}`)); err == nil {
		t.Fatal("frame without type accepted")
	}
}

func TestRecipientNames(t *testing.T) {
	for _, users := range [][]string{nil, {"a"}, {"alice", "bob", "Zoë"}} {
		var got []string
		for n := range Names(JoinNames(users)) {
			got = append(got, n)
		}
		if !slices.Equal(got, users) {
			t.Fatalf("names of %q = %q", users, got)
		}
	}
}
