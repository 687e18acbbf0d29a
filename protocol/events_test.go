package protocol

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestApplyEvents(t *testing.T) {
	msg := func(seq int64, text string) Message {
		return Message{ID: "m", Conv: "room:r", Seq: seq, From: "a", Room: "r", Text: text, TS: seq * 10}
	}
	ev := func(seq int64, kind string, ref int64, text string) Message {
		return Message{ID: "e", Conv: "room:r", Seq: seq, From: "a", Room: "r", Kind: kind, Ref: ref, Text: text, TS: seq * 10}
	}
	edited := func(m Message, text string, at int64) Message { m.Text, m.Edited = text, at; return m }
	recalled := func(m Message) Message { m.Text, m.Edited, m.Recalled = "", 0, true; return m }
	for _, tc := range []struct {
		name         string
		msgs, events []Message
		want         []Message
	}{
		{"nothing", []Message{msg(1, "a")}, nil, []Message{msg(1, "a")}},
		{"edit in the page",
			[]Message{msg(1, "a"), ev(2, KindEdit, 1, "b")}, nil,
			[]Message{edited(msg(1, "a"), "b", 20), ev(2, KindEdit, 1, "b")}},
		{"edits from elsewhere, out of order, repeated: the last wins",
			[]Message{msg(1, "a")}, []Message{ev(9, KindEdit, 1, "c"), ev(5, KindEdit, 1, "b"), ev(9, KindEdit, 1, "c")},
			[]Message{edited(msg(1, "a"), "c", 90)}},
		{"recall wins over edits before and after it",
			[]Message{msg(1, "a"), ev(2, KindEdit, 1, "b"), ev(3, KindRecall, 1, "")}, []Message{ev(4, KindEdit, 1, "c")},
			[]Message{recalled(msg(1, "a")), recalled(ev(2, KindEdit, 1, "b")), ev(3, KindRecall, 1, "")}},
		{"an edit of a recalled message outside the page loses its text",
			[]Message{ev(7, KindEdit, 1, "secret")}, []Message{ev(8, KindRecall, 1, "")},
			[]Message{recalled(ev(7, KindEdit, 1, "secret"))}},
		{"events never change events",
			[]Message{ev(2, KindJoin, 0, ""), ev(3, KindEdit, 2, "x"), ev(4, KindRecall, 3, "")}, nil,
			[]Message{ev(2, KindJoin, 0, ""), ev(3, KindEdit, 2, "x"), ev(4, KindRecall, 3, "")}},
		{"an event naming a later seq is no change",
			[]Message{msg(5, "a")}, []Message{ev(4, KindEdit, 5, "x")},
			[]Message{msg(5, "a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := append([]Message(nil), tc.msgs...)
			ApplyEvents(got, tc.events)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// The new fields are left out when zero, so a plain message reads as it
// did before there were events.
func TestMessageEventFieldsOmitted(t *testing.T) {
	b, _ := json.Marshal(Message{ID: "m", Conv: "dm:a:b", Seq: 1, From: "a", To: "b", Text: "x", TS: 1})
	if want := `{"id":"m","conv":"dm:a:b","seq":1,"from":"a","to":"b","text":"x","ts":1}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	b, _ = json.Marshal(Message{ID: "e", Conv: "dm:a:b", Seq: 2, From: "a", To: "b", Kind: KindRecall, Ref: 1, TS: 2})
	if want := `{"id":"e","conv":"dm:a:b","seq":2,"from":"a","to":"b","kind":"recall","ref":1,"text":"","ts":2}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}
