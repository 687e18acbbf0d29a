package peerlink

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Calls: plain HTTP requests to a node's peer listener, as the gateway
// makes them for the server API, authenticated by the cluster secret like
// the link's handshake. The caller proves the secret by an HMAC over its
// name, the node it calls, the method, the path and query, the time, a
// nonce and the body's SHA-256; the node checks the proof, the clock skew
// and that the nonce is new (Acceptor.VerifyCall), and proves the secret
// back by an HMAC over its id, the nonce, the status and the body of its
// answer (Acceptor.SignAnswer), which the caller checks (VerifyAnswer).
//
// The headers are the handshake's: hdrNode names the caller, hdrTarget
// the node called.
const hdrTarget = "X-Chat-Target"

func bodySum(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

func callProof(secret []byte, caller, target, method, uri, ts, nonce string, body []byte) string {
	return mac(secret, "call", caller, target, method, uri, ts, nonce, bodySum(body))
}

func answerProof(secret []byte, node, nonce string, status int, body []byte) string {
	return mac(secret, "answer", node, nonce, strconv.Itoa(status), bodySum(body))
}

// SignCall signs req, whose body is body, as caller for the node target.
// It returns the nonce, by which VerifyAnswer checks the answer.
func SignCall(secret []byte, caller, target string, req *http.Request, body []byte) string {
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set(hdrNode, caller)
	req.Header.Set(hdrTarget, target)
	req.Header.Set(hdrTime, ts)
	req.Header.Set(hdrNonce, nonce)
	req.Header.Set(hdrAuth, callProof(secret, caller, target, req.Method, req.URL.RequestURI(), ts, nonce, body))
	return nonce
}

// ErrAnswerUnproven: the answer of a call does not prove the cluster
// secret (or was changed on its way).
var ErrAnswerUnproven = errors.New("peerlink: the node's answer does not prove the cluster secret")

// VerifyAnswer checks that resp, with body body, is the answer of node
// target to the call signed with nonce.
func VerifyAnswer(secret []byte, target, nonce string, resp *http.Response, body []byte) error {
	want := answerProof(secret, target, nonce, resp.StatusCode, body)
	if !hmac.Equal([]byte(resp.Header.Get(hdrAccept)), []byte(want)) {
		return fmt.Errorf("%w (node %s, status %d)", ErrAnswerUnproven, target, resp.StatusCode)
	}
	return nil
}

// Call is a call the node accepted: who made it, and the nonce its answer
// is signed over.
type Call struct {
	Caller string
	nonce  string
}

// VerifyCall checks the call req, whose body is body: the caller must
// prove the cluster secret for this node, within handshakeSkew of its
// clock, with a nonce not seen before. It returns a *Refusal when it does
// not.
func (a *Acceptor) VerifyCall(req *http.Request, body []byte) (Call, error) {
	c := Call{Caller: req.Header.Get(hdrNode), nonce: req.Header.Get(hdrNonce)}
	ts := req.Header.Get(hdrTime)
	sec, _ := strconv.ParseInt(ts, 10, 64)
	now := time.Now()
	want := callProof(a.secret, c.Caller, a.self, req.Method, req.URL.RequestURI(), ts, c.nonce, body)
	switch {
	case c.Caller == "" || c.nonce == "" || !hmac.Equal([]byte(req.Header.Get(hdrAuth)), []byte(want)):
		if t := req.Header.Get(hdrTarget); t != "" && t != a.self {
			return c, &Refusal{http.StatusUnauthorized, fmt.Sprintf("call meant for node %s, this is %s", t, a.self)}
		}
		return c, &Refusal{http.StatusUnauthorized, "bad cluster credentials"}
	case now.Sub(time.Unix(sec, 0)).Abs() > handshakeSkew:
		return c, &Refusal{http.StatusUnauthorized, "call too old or clocks apart"}
	case !a.nonces.fresh(c.nonce, now):
		return c, &Refusal{http.StatusUnauthorized, "replayed call"}
	}
	return c, nil
}

// SignAnswer sets on h the proof of the answer to c: status and body.
func (a *Acceptor) SignAnswer(h http.Header, c Call, status int, body []byte) {
	h.Set(hdrAccept, answerProof(a.secret, a.self, c.nonce, status, body))
}

// CallerTLS is the TLS configuration of a caller that is no node (the
// gateway) for nodes whose peer listeners require mutual TLS: t's
// certificate, and the cluster's CA to check the node's against. The CA is
// read from t now: a later Reload changes the certificate it presents,
// not the CA.
func (t *TLS) CallerTLS() *tls.Config { return t.clientConfig() }
