package webhook

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeEntry(t *testing.T) {
	msg := `{"id":"mx1","conv":"room:lobby","seq":7,"from":"amy","room":"lobby","text":"hi <all>","ts":1767225600100}`
	tests := []struct {
		name     string
		values   map[string]any
		typ      string // "" : no event
		id       string
		ts       int64
		data     string // JSON of data, compared as values
		malforms bool
	}{
		{name: "message", values: map[string]any{"m": msg}, typ: MessageStored, id: "m-mx1", ts: 1767225600100,
			data: `{"message":` + msg + `}`},
		{name: "edit", values: map[string]any{"m": `{"id":"mx2","conv":"dm:amy:bob","seq":8,"from":"amy","to":"bob","text":"fixed","ts":5,"kind":"edit","ref":"mx1"}`},
			typ: MessageEdited, id: "m-mx2", ts: 5,
			data: `{"message":{"id":"mx2","conv":"dm:amy:bob","seq":8,"from":"amy","to":"bob","text":"fixed","ts":5,"kind":"edit","ref":"mx1"}}`},
		{name: "recall", values: map[string]any{"m": `{"id":"mx3","conv":"dm:amy:bob","seq":9,"from":"amy","to":"bob","text":"","ts":6,"kind":"recall"}`},
			typ: MessageRecalled, id: "m-mx3", ts: 6,
			data: `{"message":{"id":"mx3","conv":"dm:amy:bob","seq":9,"from":"amy","to":"bob","text":"","ts":6,"kind":"recall"}}`},
		{name: "join", values: map[string]any{"m": `{"id":"mx4","conv":"room:lobby","seq":10,"from":"bob","room":"lobby","text":"","ts":7,"kind":"join"}`},
			typ: RoomJoin, id: "m-mx4", ts: 7,
			data: `{"room":"lobby","user":"bob","message":{"id":"mx4","conv":"room:lobby","seq":10,"from":"bob","room":"lobby","text":"","ts":7,"kind":"join"}}`},
		{name: "leave", values: map[string]any{"m": `{"id":"mx5","conv":"room:lobby","seq":11,"from":"bob","room":"lobby","text":"","ts":8,"kind":"leave"}`},
			typ: RoomLeave, id: "m-mx5", ts: 8,
			data: `{"room":"lobby","user":"bob","message":{"id":"mx5","conv":"room:lobby","seq":11,"from":"bob","room":"lobby","text":"","ts":8,"kind":"leave"}}`},
		{name: "kind without an event", values: map[string]any{"m": `{"id":"mx6","conv":"room:lobby","seq":12,"from":"bob","ts":9,"kind":"topic"}`}},
		{name: "node event", values: map[string]any{"e": `{"id":"e-1","type":"user.login","ts":3,"data":{"user":"amy","node":"n1","sessionId":"c1"}}`},
			typ: UserLogin, id: "e-1", ts: 3, data: `{"user":"amy","node":"n1","sessionId":"c1"}`},
		{name: "bad message", values: map[string]any{"m": `{"id":`}, malforms: true},
		{name: "message without id", values: map[string]any{"m": `{"conv":"x"}`}, malforms: true},
		{name: "bad event", values: map[string]any{"e": `{"type":"user.login"}`}, malforms: true},
		{name: "deleted entry", values: map[string]any{}, malforms: true},
		{name: "other field", values: map[string]any{"x": "y"}, malforms: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, body, ok, err := decodeEntry(tc.values)
			if tc.malforms {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("err = %v, want errMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.typ == "" {
				if ok {
					t.Fatalf("an event %+v for an entry that is none", ev)
				}
				return
			}
			if !ok || ev.Type != tc.typ || ev.ID != tc.id || ev.TS != tc.ts {
				t.Fatalf("event %+v (ok %v), want %s %s %d", ev, ok, tc.typ, tc.id, tc.ts)
			}
			var sent Event
			if err := json.Unmarshal(body, &sent); err != nil || sent.ID != ev.ID || sent.Type != ev.Type || sent.TS != ev.TS {
				t.Fatalf("body %s (%v) does not match %+v", body, err, ev)
			}
			var got, want any
			if err := json.Unmarshal(sent.Data, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.data), &want); err != nil {
				t.Fatal(err)
			}
			if g, w := mustJSON(got), mustJSON(want); g != w {
				t.Fatalf("data %s, want %s", g, w)
			}
		})
	}
	// The body is the same every time: a retry sends the same bytes, and
	// its id is the message's, whoever queues it.
	_, b1, _, _ := decodeEntry(map[string]any{"m": msg})
	_, b2, _, _ := decodeEntry(map[string]any{"m": msg})
	if string(b1) != string(b2) {
		t.Fatalf("two bodies of one message differ:\n%s\n%s", b1, b2)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
