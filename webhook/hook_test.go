package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/protocol"
)

// hookServer answers every call with answer(the message's text) after
// checking the call's signature and shape; it fails the test otherwise.
func hookServer(t *testing.T, secret []byte, answer func(w http.ResponseWriter, text string)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(HeaderSignature), body, DefaultTolerance, time.Now()); err != nil {
			t.Errorf("hook call not signed right: %v", err)
		}
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Data struct {
				Message protocol.Message `json:"message"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.Type != MessageBefore || ev.ID == "" || r.Header.Get(HeaderEventType) != MessageBefore {
			t.Errorf("hook call %s: %v", body, err)
		}
		answer(w, ev.Data.Message.Text)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHookDecisions(t *testing.T) {
	long := strings.Repeat("é", 150) // 300 bytes
	release := make(chan struct{})
	srv := hookServer(t, testSecret, func(w http.ResponseWriter, text string) {
		switch text {
		case "slow":
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			return
		case "500":
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		replies := map[string]string{
			"allow":        `{"action":"allow"}`,
			"reject":       `{"action":"reject","reason":"  no spam here  "}`,
			"reject long":  `{"action":"reject","reason":"` + long + `"}`,
			"rewrite":      `{"action":"rewrite","text":"tidied"}`,
			"rewrite none": `{"action":"rewrite","text":""}`,
			"rewrite huge": `{"action":"rewrite","text":"` + strings.Repeat("x", protocol.MaxTextBytes+1) + `"}`,
			"unknown":      `{"action":"shrug"}`,
			"not json":     `allow`,
		}
		io.WriteString(w, replies[text])
	})
	t.Cleanup(func() { close(release) }) // before the server closes: it waits for its handlers
	var observed atomic.Int64
	h, err := NewHook(HookConfig{URL: srv.URL, Secret: testSecret, Timeout: 300 * time.Millisecond}, zerolog.Nop(),
		func(time.Duration) { observed.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		text    string
		want    Decision
		wantErr string
	}{
		{text: "allow", want: Decision{Action: ActionAllow}},
		{text: "reject", want: Decision{Action: ActionReject, Reason: "no spam here"}},
		{text: "reject long", want: Decision{Action: ActionReject, Reason: strings.Repeat("é", 100)}},
		{text: "rewrite", want: Decision{Action: ActionRewrite, Text: "tidied"}},
		{text: "rewrite none", wantErr: "empty text"},
		{text: "rewrite huge", wantErr: "over the limit"},
		{text: "unknown", wantErr: `unknown action "shrug"`},
		{text: "not json", wantErr: "not a JSON decision"},
		{text: "500", wantErr: "500 Internal Server Error"},
		{text: "slow", wantErr: "no answer within 300ms"},
	}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			start := time.Now()
			d, err := h.Check(context.Background(), protocol.Message{ID: "x", Conv: "dm:amy:bob", From: "amy", To: "bob", Text: tc.text, TS: 1})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Check = %+v, %v; want an error with %q", d, err, tc.wantErr)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Fatalf("Check took %v past its timeout", took)
				}
				return
			}
			if err != nil || d != tc.want {
				t.Fatalf("Check = %+v, %v; want %+v", d, err, tc.want)
			}
		})
	}
	st := h.Stats()
	if st.Allowed != 1 || st.Rejected != 2 || st.Rewritten != 1 || st.Failed != 6 || observed.Load() != int64(len(tests)) {
		t.Fatalf("stats %+v, observed %d", st, observed.Load())
	}
}

// A hook that cannot be reached fails fast, and the caller's deadline
// bounds it too.
func TestHookUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	h, err := NewHook(HookConfig{URL: url, Secret: testSecret, Timeout: time.Second}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Check(context.Background(), protocol.Message{Text: "x"}); err == nil {
		t.Fatal("a hook that is not there answered")
	}
	if !strings.Contains(h.url, "127.0.0.1") || h.FailClosed() {
		t.Fatalf("hook %+v", h.cfg)
	}
}
