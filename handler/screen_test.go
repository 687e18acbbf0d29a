package handler

import (
	"context"
	"errors"
	"strings"
	"testing"

	"chatcluster/protocol"
)

// fakeScreen answers by the text of the message it is asked about.
type fakeScreen struct {
	closed bool
	asked  []protocol.Message
}

func (f *fakeScreen) FailClosed() bool { return f.closed }

func (f *fakeScreen) Screen(_ context.Context, m protocol.Message) (Verdict, error) {
	f.asked = append(f.asked, m)
	switch {
	case strings.HasPrefix(m.Text, "reject"):
		return Verdict{Action: VerdictReject, Reason: "no " + strings.TrimPrefix(m.Text, "reject ")}, nil
	case m.Text == "silent reject":
		return Verdict{Action: VerdictReject}, nil
	case m.Text == "rewrite":
		return Verdict{Action: VerdictRewrite, Text: "darn tidy"}, nil
	case m.Text == "rewrite empty":
		return Verdict{Action: VerdictRewrite, Text: ""}, nil
	case m.Text == "rewrite huge":
		return Verdict{Action: VerdictRewrite, Text: strings.Repeat("x", protocol.MaxTextBytes+1)}, nil
	case m.Text == "shrug":
		return Verdict{Action: "shrug"}, nil
	case m.Text == "timeout":
		return Verdict{}, context.DeadlineExceeded
	case m.Text == "fail":
		return Verdict{}, errors.New("hook answered 500")
	}
	return Verdict{Action: VerdictAllow}, nil
}

func TestScreenDecisions(t *testing.T) {
	tests := []struct {
		text   string
		closed bool
		code   int
		stored string // the text stored, when code is 0
		errMsg string
	}{
		{text: "hello", stored: "hello"},
		{text: "hello darn", stored: "hello ****"}, // the hook sees the filtered text
		{text: "reject spam", code: 403, errMsg: "message rejected: no spam"},
		{text: "silent reject", code: 403, errMsg: "message rejected"},
		{text: "rewrite", stored: "**** tidy"}, // a rewrite goes through the filter too
		// Fail-open: without a usable verdict the message is stored as sent.
		{text: "rewrite empty", stored: "rewrite empty"},
		{text: "rewrite huge", stored: "rewrite huge"},
		{text: "shrug", stored: "shrug"},
		{text: "timeout", stored: "timeout"},
		{text: "fail", stored: "fail"},
		// Fail-closed: refused with 503, nothing stored.
		{text: "timeout", closed: true, code: 503, errMsg: "could not be checked"},
		{text: "fail", closed: true, code: 503, errMsg: "could not be checked"},
		{text: "rewrite huge", closed: true, code: 503, errMsg: "could not be checked"},
		{text: "shrug", closed: true, code: 503, errMsg: "could not be checked"},
		{text: "hello", closed: true, stored: "hello"},
		{text: "reject spam", closed: true, code: 403, errMsg: "message rejected: no spam"},
	}
	for _, kind := range []string{"dm", "room"} {
		for _, tc := range tests {
			t.Run(kind+"/"+tc.text+map[bool]string{true: "/closed"}[tc.closed], func(t *testing.T) {
				h, j, r, rooms, _ := newTestRooms()
				sc := &fakeScreen{closed: tc.closed}
				h.d.Screen = sc
				c := &fakeConn{id: "c1", user: "amy"}
				conv, data := "dm:amy:bob", map[string]string{"to": "bob", "text": tc.text}
				if kind == "room" {
					if _, err := rooms.Join(context.Background(), "amy", "lobby"); err != nil {
						t.Fatal(err)
					}
					conv, data = "room:lobby", map[string]string{"room": "lobby", "text": tc.text}
				}
				rep := h.Handle(context.Background(), c, req("chat", data))
				if rep.Code != tc.code || tc.errMsg != "" && !strings.Contains(rep.Error, tc.errMsg) {
					t.Fatalf("code %d %q, want %d %q", rep.Code, rep.Error, tc.code, tc.errMsg)
				}
				if len(sc.asked) != 1 {
					t.Fatalf("the hook was asked %d times", len(sc.asked))
				}
				if a := sc.asked[0]; a.Conv != conv || a.From != "amy" || a.Seq != 0 || a.ID == "" || a.TS != 1000 {
					t.Fatalf("the hook was asked about %+v", a)
				}
				stored := j.convs[conv]
				if tc.code != 0 {
					if len(stored) != 0 || len(r.delivered) != 0 {
						t.Fatalf("a refused message was stored (%v) or delivered (%v)", stored, r.delivered)
					}
					if tc.code == 503 && rep.Cause == nil {
						t.Fatal("a 503 without its cause for the log")
					}
					return
				}
				if len(stored) != 1 || stored[0].Text != tc.stored {
					t.Fatalf("stored %+v, want the text %q", stored, tc.stored)
				}
			})
		}
	}
}

// Without a hook nothing is asked; a bad request is refused before the
// hook is.
func TestScreenOnlyForValidMessages(t *testing.T) {
	h, _, _ := newTest()
	sc := &fakeScreen{}
	h.d.Screen = sc
	c := &fakeConn{id: "c1", user: "amy"}
	for _, d := range []map[string]string{
		{"to": "bob", "text": ""},
		{"to": "zed", "text": "hi"},
		{"to": "bob", "text": strings.Repeat("x", protocol.MaxTextBytes+1)},
	} {
		if rep := h.Handle(context.Background(), c, req("chat", d)); rep.Code == 0 {
			t.Fatalf("%v accepted", d)
		}
	}
	if len(sc.asked) != 0 {
		t.Fatalf("the hook was asked about %d bad messages", len(sc.asked))
	}
}
