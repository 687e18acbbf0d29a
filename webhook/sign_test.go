package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignIsHMACOfTimestampAndBody(t *testing.T) {
	secret := []byte("0123456789abcdef-secret")
	body := []byte(`{"id":"m-1","type":"message.stored","ts":1,"data":{}}`)
	got := Sign(secret, 1767225600, body)

	h := hmac.New(sha256.New, secret)
	h.Write([]byte("1767225600." + string(body)))
	want := "t=1767225600,v1=" + hex.EncodeToString(h.Sum(nil))
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	// The vector docs/protocol.md computes with openssl.
	if v := Sign([]byte("whsec-test-0123456789"), 1700000000, []byte(`{"hello":"world"}`)); v !=
		"t=1700000000,v1=0f61b4d90a6a2e870990876acb701066ca260620ee0a61d7cc3e1f64a9b4c69e" {
		t.Fatalf("Sign vector = %s", v)
	}
}

func TestVerify(t *testing.T) {
	secret := []byte("0123456789abcdef-secret")
	body := []byte(`{"id":"e-1"}`)
	now := time.Unix(1767225600, 0)
	good := Sign(secret, now.Unix(), body)
	tests := []struct {
		name   string
		header string
		body   []byte
		secret []byte
		now    time.Time
		want   error
	}{
		{name: "good", header: good, body: body, secret: secret, now: now},
		{name: "clock a little ahead", header: good, body: body, secret: secret, now: now.Add(4 * time.Minute)},
		{name: "clock a little behind", header: good, body: body, secret: secret, now: now.Add(-4 * time.Minute)},
		{name: "old", header: good, body: body, secret: secret, now: now.Add(6 * time.Minute), want: ErrStale},
		{name: "from the future", header: good, body: body, secret: secret, now: now.Add(-6 * time.Minute), want: ErrStale},
		{name: "body changed", header: good, body: []byte(`{"id":"e-2"}`), secret: secret, now: now, want: ErrBadSignature},
		{name: "other secret", header: good, body: body, secret: []byte("another secret of 16+"), now: now, want: ErrBadSignature},
		{name: "timestamp changed", header: strings.Replace(good, "t=1767225600", "t=1767225601", 1), body: body, secret: secret, now: now, want: ErrBadSignature},
		{name: "second v1 matches", header: "t=1767225600,v1=00," + good[len("t=1767225600,"):], body: body, secret: secret, now: now},
		{name: "empty", header: "", body: body, secret: secret, now: now, want: ErrNoSignature},
		{name: "no v1", header: "t=1767225600", body: body, secret: secret, now: now, want: ErrNoSignature},
		{name: "bad t", header: "t=soon,v1=00", body: body, secret: secret, now: now, want: ErrNoSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.header, tc.body, DefaultTolerance, tc.now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

// The delivery docs/protocol.md shows: its body is what the dispatcher
// makes of the stored message, and its signature what openssl computes.
func TestDocumentedDelivery(t *testing.T) {
	msg := `{"id":"mjuohs2s-c83515199ead7b82","conv":"dm:alice:bob","seq":1,"from":"alice","to":"bob","text":"hello bob","ts":1767225600100}`
	_, body, ok, err := decodeEntry(map[string]any{fieldMessage: msg})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	want := `{"id":"m-mjuohs2s-c83515199ead7b82","type":"message.stored","ts":1767225600100,"data":{"message":` + msg + `}}`
	if string(body) != want {
		t.Fatalf("body\n%s\nwant\n%s", body, want)
	}
	if sig := Sign([]byte("whsec-test-0123456789"), 1767225601, body); sig != "t=1767225601,v1=6fff1b59036047eb1c678d6384b31bec33c92b33cda83897c9b16a17a2003eba" {
		t.Fatalf("signature %s", sig)
	}
}
