package peerlink

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// callingNode serves calls for node self as a node does: a verified call
// is answered 200 with its caller's name, signed; a refused one gets the
// refusal's status.
func callingNode(t *testing.T, a *Acceptor) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c, err := a.VerifyCall(r, body)
		var rf *Refusal
		if errors.As(err, &rf) {
			http.Error(w, rf.Reason, rf.Status)
			return
		}
		out := []byte("hello " + c.Caller)
		a.SignAnswer(w.Header(), c, http.StatusOK, out)
		_, _ = w.Write(out)
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

func call(t *testing.T, secret []byte, url, target string, body []byte, edit func(*http.Request)) (*http.Response, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/server/publish?x=1", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	nonce := SignCall(secret, "gateway", target, req, body)
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b, nonce
}

// A call signed with the cluster secret for the node it reaches is
// accepted, and its answer proves the node knows the secret too.
func TestCallAccepted(t *testing.T) {
	url := callingNode(t, NewAcceptor(testSecret, "n2"))
	body := []byte(`{"text":"hi"}`)
	resp, b, nonce := call(t, testSecret, url, "n2", body, nil)
	if resp.StatusCode != http.StatusOK || string(b) != "hello gateway" {
		t.Fatalf("answer %d %q", resp.StatusCode, b)
	}
	if err := VerifyAnswer(testSecret, "n2", nonce, resp, b); err != nil {
		t.Fatalf("a proven answer: %v", err)
	}
	if err := VerifyAnswer(testSecret, "n2", nonce, resp, []byte("hello mallory")); !errors.Is(err, ErrAnswerUnproven) {
		t.Fatalf("an answer whose body changed: %v, want ErrAnswerUnproven", err)
	}
	if err := VerifyAnswer(testSecret, "n3", nonce, resp, b); !errors.Is(err, ErrAnswerUnproven) {
		t.Fatalf("an answer checked as another node's: %v, want ErrAnswerUnproven", err)
	}
	if err := VerifyAnswer([]byte("another secret!!"), "n2", nonce, resp, b); !errors.Is(err, ErrAnswerUnproven) {
		t.Fatalf("an answer checked with another secret: %v, want ErrAnswerUnproven", err)
	}
}

// Calls without the secret, for another node, changed on their way, or
// replayed are refused with 401.
func TestCallRefused(t *testing.T) {
	url := callingNode(t, NewAcceptor(testSecret, "n2"))
	body := []byte(`{"text":"hi"}`)
	cases := []struct {
		name   string
		secret []byte
		target string
		edit   func(*http.Request)
		want   string
	}{
		{"wrong secret", []byte("not the secret!!"), "n2", nil, "bad cluster credentials\n"},
		{"another node", testSecret, "n3", nil, "call meant for node n3, this is n2\n"},
		{"no credentials", testSecret, "n2", func(r *http.Request) { r.Header.Del(hdrAuth) }, "bad cluster credentials\n"},
		{"path changed", testSecret, "n2", func(r *http.Request) { r.URL.Path = "/server/deleteRoom" }, "bad cluster credentials\n"},
		{"body changed", testSecret, "n2", func(r *http.Request) {
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader([]byte(`{"text":"ho"}`))), int64(len(body))
		}, "bad cluster credentials\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b, _ := call(t, tc.secret, url, tc.target, body, tc.edit)
			if resp.StatusCode != http.StatusUnauthorized || string(b) != tc.want {
				t.Fatalf("answer %d %q, want 401 %q", resp.StatusCode, b, tc.want)
			}
		})
	}
	t.Run("replayed", func(t *testing.T) {
		var saved http.Header
		resp, _, _ := call(t, testSecret, url, "n2", body, func(r *http.Request) { saved = r.Header.Clone() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first call: %d", resp.StatusCode)
		}
		resp, b, _ := call(t, testSecret, url, "n2", body, func(r *http.Request) { r.Header = saved })
		if resp.StatusCode != http.StatusUnauthorized || string(b) != "replayed call\n" {
			t.Fatalf("replay answered %d %q", resp.StatusCode, b)
		}
	})
}
