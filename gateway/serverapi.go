package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"chatcluster/apikey"
	"chatcluster/directory"
	"chatcluster/peerlink"
	"chatcluster/protocol"
)

// The server API (docs/protocol.md, "Server API"): /api/server/... for
// bots, moderation and other systems, authenticated by an operator's key
// (package apikey), never the cluster secret. The gateway stores and
// routes nothing itself: it checks the key and the request's shape, then
// forwards the call to a live node's peer listener, signed with the
// cluster secret (peerlink.SignCall), and relays the node's answer once
// it proved the secret back. The node runs it as it runs its clients'
// requests (node/serverapi.go).

// Defaults of the server API.
const (
	DefaultAPIRate    = 20               // requests a second per key
	DefaultAPIBurst   = 40               // requests at once per key
	DefaultAPITimeout = 10 * time.Second // one call forwarded to a node
)

// apiCaller is the name the gateway signs its calls to the nodes with.
const apiCaller = "gateway"

// apiTries is how many nodes a call is offered to, one after the other,
// when a node cannot be reached (the call never left the gateway).
const apiTries = 3

// maxAnswer bounds the body of a node's answer the gateway reads.
const maxAnswer = 4 << 20

// apiKeys is the key set in use: nil keys with the error that left the
// gateway without any.
type apiKeys struct {
	keys *apikey.Keys
	err  error
}

// serverAPI serves /api/server/... . Its fields are set by New and Start;
// keys changes on reload.
type serverAPI struct {
	g       *Gateway
	file    string // "": the server API is off
	secret  []byte
	timeout time.Duration
	limit   *apikey.Limiter
	client  *http.Client
	scheme  string // of the nodes' peer listeners: http or https (peer TLS)
	keys    atomic.Pointer[apiKeys]
}

func newServerAPI(g *Gateway, cfg Config) (*serverAPI, error) {
	a := &serverAPI{g: g, file: cfg.APIKeysFile, secret: cfg.Secret, timeout: cfg.APITimeout, scheme: "http"}
	if a.timeout <= 0 {
		a.timeout = DefaultAPITimeout
	}
	a.limit = apikey.NewLimiter(cfg.APIRate, cfg.APIBurst)
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: a.timeout,
		TLSHandshakeTimeout:   3 * time.Second,
	}
	if cfg.PeerTLSCertFile != "" {
		t, err := peerlink.LoadTLS(cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile, cfg.PeerTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: peer TLS (--peer-tls-cert-file): %w", err)
		}
		tr.TLSClientConfig, a.scheme = t.CallerTLS(), "https"
	}
	a.client = &http.Client{Transport: tr}
	a.keys.Store(&apiKeys{err: errors.New("not loaded yet")})
	return a, nil
}

// load reads the key file. At start a file that does not load leaves the
// API without keys (it answers 503); on a reload the keys in use stay.
func (a *serverAPI) load(start bool) error {
	if a.file == "" {
		return nil
	}
	k, err := apikey.Load(a.file)
	if err != nil {
		if start {
			a.keys.Store(&apiKeys{err: err})
		}
		return err
	}
	a.keys.Store(&apiKeys{keys: k})
	a.limit.Keep(k)
	a.g.log.Info().Str("file", a.file).Strs("keys", k.Names()).Msg("server API keys loaded")
	return nil
}

func (a *serverAPI) close() { a.client.CloseIdleConnections() }

// routes adds the API's endpoints to mux. Off, every path under
// /api/server/ says so.
func (a *serverAPI) routes(mux *http.ServeMux) {
	if a.file == "" {
		mux.HandleFunc("/api/server/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "the server API is off: the gateway was started without --api-keys-file")
		})
		return
	}
	mux.HandleFunc("POST /api/server/messages", a.auth(a.publish))
	mux.HandleFunc("POST /api/server/users/{username}/disconnect", a.auth(a.disconnect))
	mux.HandleFunc("GET /api/server/online", a.auth(a.online))
	mux.HandleFunc("GET /api/server/rooms/{room}/members", a.auth(a.members))
	mux.HandleFunc("POST /api/server/rooms", a.auth(a.createRoom))
	mux.HandleFunc("DELETE /api/server/rooms/{room}", a.auth(a.deleteRoom))
}

// auth admits a request that presents a key of the file, within the
// key's rate, and hands next the key's name.
func (a *serverAPI) auth(next func(w http.ResponseWriter, r *http.Request, key string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ks := a.keys.Load()
		if ks.keys == nil {
			writeError(w, http.StatusServiceUnavailable, "the server API has no keys: the gateway could not read its --api-keys-file (its log says why)")
			return
		}
		tok, ok := apikey.Bearer(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat server API"`)
			writeError(w, http.StatusUnauthorized, "missing API key: send it in the header Authorization, after the word Bearer")
			return
		}
		name, ok := ks.keys.Match(tok)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat server API", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "wrong API key")
			return
		}
		if ok, wait := a.limit.Allow(name, time.Now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			writeError(w, http.StatusTooManyRequests, fmt.Sprintf("key %s is over its rate of %g requests a second; retry shortly", name, a.limit.Rate()))
			return
		}
		next(w, r, name)
	}
}

// readBody decodes a request body of one JSON object with known fields
// only into v; an empty body leaves v as it is when optional. It writes
// the 400 itself.
func readBody(w http.ResponseWriter, r *http.Request, v any, optional bool, shape string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, protocol.MaxServerRequestBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	switch {
	case err == io.EOF && optional:
		return true
	case err == nil:
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object "+shape+": "+err.Error())
		return false
	}
	return true
}

func (a *serverAPI) publish(w http.ResponseWriter, r *http.Request, key string) {
	var d protocol.ServerMessage
	if readBody(w, r, &d, false, `{"from", "to" or "room", "text", "clientMsgId"}`) {
		a.forward(w, r, key, protocol.ServerPublish, d)
	}
}

func (a *serverAPI) disconnect(w http.ResponseWriter, r *http.Request, key string) {
	var d struct {
		Reason string `json:"reason"`
	}
	if readBody(w, r, &d, true, `{"reason"} (or no body)`) {
		a.forward(w, r, key, protocol.ServerDisconnect, protocol.ServerDisconnectData{Username: r.PathValue("username"), Reason: d.Reason})
	}
}

func (a *serverAPI) online(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	d := protocol.ServerOnlineData{After: q.Get("after")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > protocol.MaxOnlinePage {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1 to %d", protocol.MaxOnlinePage))
			return
		}
		d.Limit = n
	}
	a.forward(w, r, key, protocol.ServerOnline, d)
}

func (a *serverAPI) members(w http.ResponseWriter, r *http.Request, key string) {
	a.forward(w, r, key, protocol.ServerMembers, protocol.ServerRoomData{Room: r.PathValue("room")})
}

func (a *serverAPI) createRoom(w http.ResponseWriter, r *http.Request, key string) {
	var d struct {
		Room    string   `json:"room"`
		Members []string `json:"members"`
	}
	if readBody(w, r, &d, false, `{"room", "members"}`) {
		a.forward(w, r, key, protocol.ServerCreateRoom, protocol.ServerRoomData{Room: d.Room, Members: d.Members})
	}
}

func (a *serverAPI) deleteRoom(w http.ResponseWriter, r *http.Request, key string) {
	d := struct {
		Reason string `json:"reason"`
	}{Reason: r.URL.Query().Get("reason")}
	if readBody(w, r, &d, true, `{"reason"} (or no body)`) {
		a.forward(w, r, key, protocol.ServerDeleteRoom, protocol.ServerRoomData{Room: r.PathValue("room"), Reason: d.Reason})
	}
}

// targets are the live nodes a call may go to, in the order to try them:
// the leader first (room operations and the online list are the leader's;
// there they take no hop on the peer link), then the least loaded.
func targets(v directory.View) []directory.Node {
	var out []directory.Node
	for _, n := range v.ByLoad() {
		switch {
		case n.Peer == "" || !n.Linked && n.ID != v.Leader:
		case n.ID == v.Leader:
			out = append([]directory.Node{n}, out...)
		default:
			out = append(out, n)
		}
	}
	return out
}

// forward sends call op with body to a live node and relays its answer.
func (a *serverAPI) forward(w http.ResponseWriter, r *http.Request, key, op string, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	v, err := a.g.readView(ctx)
	switch {
	case errors.Is(err, directory.ErrNoView):
		writeError(w, http.StatusServiceUnavailable, "no chat node is live")
		return
	case err != nil:
		a.g.log.Error().Err(err).Msg("reading the node list")
		writeError(w, http.StatusServiceUnavailable, "node list unavailable")
		return
	}
	nodes := targets(v)
	if len(nodes) == 0 {
		writeError(w, http.StatusServiceUnavailable, "no live chat node serves the server API (none publishes its peer address)")
		return
	}
	log := a.g.log.With().Str("key", key).Str("op", op).Logger()
	var lastErr error
	var last directory.Node
	for i, n := range nodes[:min(apiTries, len(nodes))] {
		status, hdr, answer, err := a.call(ctx, n, key, op, b)
		if err == nil {
			if ra := hdr.Get("Retry-After"); ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(status)
			_, _ = w.Write(answer)
			ev := log.Info()
			if op == protocol.ServerOnline || op == protocol.ServerMembers {
				ev = log.Debug()
			}
			if status >= 400 {
				ev = log.Warn().Bytes("answer", bytes.TrimSpace(answer))
			}
			ev.Str("node", n.ID).Int("status", status).Dur("took", time.Since(start)).Msg("server API call")
			return
		}
		lastErr, last = err, n
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" || ctx.Err() != nil {
			break
		}
		log.Warn().Err(err).Str("node", n.ID).Int("try", i+1).Msg("chat node unreachable for a server API call")
	}
	log.Warn().Err(lastErr).Str("node", last.ID).Dur("took", time.Since(start)).Msg("server API call failed")
	var oe *net.OpError
	switch {
	case errors.Is(lastErr, peerlink.ErrAnswerUnproven):
		writeError(w, http.StatusServiceUnavailable, "chat node "+last.ID+" did not prove the cluster secret: the gateway's --cluster-secret-file must be the nodes'")
	case errors.Is(lastErr, context.DeadlineExceeded) || ctx.Err() != nil:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("chat node %s did not answer within %s; the call may have been carried out (a message sent again with the same clientMsgId is stored once)", last.ID, a.timeout))
	case errors.As(lastErr, &oe) && oe.Op == "dial":
		writeError(w, http.StatusServiceUnavailable, "no chat node could be reached; retry shortly")
	default:
		writeError(w, http.StatusServiceUnavailable, "chat node "+last.ID+" did not answer; retry shortly")
	}
}

// call makes one signed call to node n and checks its answer.
func (a *serverAPI) call(ctx context.Context, n directory.Node, key, op string, body []byte) (int, http.Header, []byte, error) {
	u := a.scheme + "://" + n.Peer + protocol.ServerPath + op + "?key=" + url.QueryEscape(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	nonce := peerlink.SignCall(a.secret, apiCaller, n.ID, req, body)
	// Marked idempotent, the call is sent again on a new connection when
	// a kept-alive one turns out closed before it was written: the node
	// refuses a nonce it has seen, so it never runs one call twice.
	req.Header.Set("Idempotency-Key", nonce)
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, nil, err
	}
	if err := peerlink.VerifyAnswer(a.secret, n.ID, nonce, resp, answer); err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, answer, nil
}
