package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of every delivery and of every call of the before-message hook.
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex>": the HMAC-SHA256,
	// keyed with the endpoint's secret, of the decimal timestamp, a dot
	// and the body (Sign).
	HeaderSignature = "X-Chat-Signature"
	// HeaderEventID is the event's id, the same on every attempt: what a
	// receiver dedupes by.
	HeaderEventID = "X-Chat-Event-Id"
	// HeaderEventType is the event's type (message.stored, ...).
	HeaderEventType = "X-Chat-Event-Type"
	// HeaderAttempt is the number of the attempt, 1 for the first.
	HeaderAttempt = "X-Chat-Attempt"
)

// DefaultTolerance is how old a signature's timestamp a receiver should
// accept (Verify): an attempt is signed when it is sent, so only a replay
// or a badly wrong clock is older.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrNoSignature  = errors.New("webhook: no valid signature header")
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrStale        = errors.New("webhook: signature timestamp outside the tolerance")
)

// Sign returns the signature header value of body sent at ts (unix
// seconds) with secret: "t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>." + body)>".
func Sign(secret []byte, ts int64, body []byte) string {
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts int64, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Verify checks a signature header value against body and secret, as a
// receiver does: some v1 must be the HMAC of the header's timestamp and
// body, and the timestamp within tolerance of now (either way). It is what
// docs/protocol.md describes, for receivers written in Go.
func Verify(secret []byte, header string, body []byte, tolerance time.Duration, now time.Time) error {
	var (
		ts   int64
		sigs []string
		seen bool
	)
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%w: bad timestamp %q", ErrNoSignature, v)
			}
			ts, seen = n, true
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if !seen || len(sigs) == 0 {
		return ErrNoSignature
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s ago", ErrStale, d.Round(time.Second))
	}
	return nil
}
