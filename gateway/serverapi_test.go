package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"chatcluster/internal/redisconn"
)

const (
	botKey   = "bot-key-0123456789abcdef"
	otherKey = "other-key-0123456789abcdef"
)

// syncBuffer is a log sink the HTTP handlers may write from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// apiGateway is a gateway that is not started, with the server API's keys
// file, its keys loaded as Start loads them.
func apiGateway(t *testing.T, file string, edit func(*Config)) (*Gateway, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := DefaultConfig()
	cfg.Redis, cfg.Mongo = redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/"
	cfg.APIKeysFile, cfg.Secret = file, []byte("0123456789abcdef0123")
	cfg.Logger = zerolog.New(logs).Level(zerolog.DebugLevel)
	if edit != nil {
		edit(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = g.api.load(true)
	return g, logs
}

func keysFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.keys")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// do sends a request to h and returns the status and the error of its
// JSON body.
func do(t *testing.T, h http.Handler, method, path, key, body string) (*httptest.ResponseRecorder, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	return rec, e.Error
}

func TestServerAPIOff(t *testing.T) {
	g, _ := apiGateway(t, "", nil)
	rec, msg := do(t, g.routes(), http.MethodPost, "/api/server/messages", botKey, `{}`)
	if rec.Code != http.StatusNotFound || !strings.Contains(msg, "the server API is off") {
		t.Fatalf("API off: %d %q", rec.Code, msg)
	}
}

func TestServerAPIWithoutKeys(t *testing.T) {
	g, logs := apiGateway(t, filepath.Join(t.TempDir(), "missing"), nil)
	rec, msg := do(t, g.routes(), http.MethodGet, "/api/server/online", botKey, "")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(msg, "has no keys") {
		t.Fatalf("keys file missing: %d %q", rec.Code, msg)
	}
	// Once the file is there, a reload turns the API on.
	if err := os.WriteFile(g.cfg.APIKeysFile, []byte("bot "+botKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.ReloadAPIKeys(); err != nil {
		t.Fatal(err)
	}
	if rec, msg := do(t, g.routes(), http.MethodPost, "/api/server/messages", botKey, `{"nope":1}`); rec.Code != http.StatusBadRequest {
		t.Fatalf("after the reload: %d %q, want 400 for the body", rec.Code, msg)
	}
	if strings.Contains(logs.String(), botKey) {
		t.Fatal("a key is in the log")
	}
}

func TestServerAPIConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Redis, cfg.Mongo, cfg.APIKeysFile = redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/", "keys"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--cluster-secret-file") {
		t.Fatalf("keys without the cluster secret: %v", err)
	}
	cfg.Secret, cfg.PeerTLSCAFile = []byte("0123456789abcdef"), "ca.pem"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--peer-tls-cert-file") {
		t.Fatalf("peer TLS with a CA only: %v", err)
	}
}

// Keys are checked before anything is forwarded: none, a wrong one, and
// one over its rate are refused, each with its reason; a good one reaches
// the endpoint with the key's name; keys never reach the log.
func TestServerAPIAuth(t *testing.T) {
	file := keysFile(t, "# test keys\nbot "+botKey+"\nother "+otherKey+"\n")
	g, logs := apiGateway(t, file, func(c *Config) { c.APIRate, c.APIBurst = 1, 2 })
	h := g.routes()

	rec, msg := do(t, h, http.MethodPost, "/api/server/messages", "", `{}`)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(msg, "missing API key") || rec.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: %d %q %v", rec.Code, msg, rec.Header())
	}
	rec, msg = do(t, h, http.MethodPost, "/api/server/messages", botKey+"x", `{}`)
	if rec.Code != http.StatusUnauthorized || msg != "wrong API key" {
		t.Fatalf("wrong key: %d %q", rec.Code, msg)
	}
	req := httptest.NewRequest(http.MethodPost, "/api/server/messages", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Basic "+botKey)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("a key under another scheme: %d", rec.Code)
	}

	var names []string
	ep := g.api.auth(func(w http.ResponseWriter, r *http.Request, key string) {
		names = append(names, key)
		w.WriteHeader(http.StatusNoContent)
	})
	for i, key := range []string{botKey, botKey, otherKey} {
		if rec, msg := do(t, ep, http.MethodGet, "/", key, ""); rec.Code != http.StatusNoContent {
			t.Fatalf("request %d: %d %q", i, rec.Code, msg)
		}
	}
	if strings.Join(names, ",") != "bot,bot,other" {
		t.Fatalf("the endpoint got keys %v", names)
	}
	rec, msg = do(t, ep, http.MethodGet, "/", botKey, "")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" || !strings.Contains(msg, "key bot is over its rate") {
		t.Fatalf("over the burst: %d %q, Retry-After %q", rec.Code, msg, rec.Header().Get("Retry-After"))
	}

	if strings.Contains(logs.String(), botKey) || strings.Contains(logs.String(), otherKey) {
		t.Fatalf("a key is in the log:\n%s", logs.String())
	}
}

// Bodies are checked at the gateway: what is not the endpoint's JSON is
// refused before it goes anywhere. A reload that fails keeps the keys;
// one that works replaces them.
func TestServerAPIBodiesAndReload(t *testing.T) {
	file := keysFile(t, "bot "+botKey+"\nother "+otherKey+"\n")
	g, logs := apiGateway(t, file, nil)
	h := g.routes()
	ep := g.api.auth(func(w http.ResponseWriter, r *http.Request, key string) { w.WriteHeader(http.StatusNoContent) })
	for _, tc := range []struct{ method, path, body, want string }{
		{http.MethodPost, "/api/server/messages", `{"from":"bot","text":"hi","extra":1}`, `unknown field "extra"`},
		{http.MethodPost, "/api/server/messages", `{"from":"bot"}{}`, "data after the object"},
		{http.MethodPost, "/api/server/rooms", `[]`, "body must be a JSON object"},
		{http.MethodPost, "/api/server/users/bob/disconnect", `{"reason":1}`, "body must be a JSON object"},
		{http.MethodGet, "/api/server/online?limit=0", "", "limit must be 1 to 1000"},
		{http.MethodGet, "/api/server/online?limit=x", "", "limit must be 1 to 1000"},
	} {
		rec, msg := do(t, h, tc.method, tc.path, otherKey, tc.body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s %s: %d %q, want 400 %q", tc.method, tc.path, tc.body, rec.Code, msg, tc.want)
		}
	}
	if rec, _ := do(t, h, http.MethodGet, "/api/server/messages", otherKey, ""); rec.Code != http.StatusNotFound {
		t.Fatalf("a wrong method: %d, want 404", rec.Code)
	}

	// A reload that fails keeps the keys; one that works replaces them.
	if err := os.WriteFile(file, []byte("broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.ReloadAPIKeys(); err == nil {
		t.Fatal("a broken file reloaded")
	}
	if rec, _ := do(t, ep, http.MethodGet, "/", otherKey, ""); rec.Code != http.StatusNoContent {
		t.Fatalf("after a failed reload the old keys are refused: %d", rec.Code)
	}
	if err := os.WriteFile(file, []byte("other "+otherKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.ReloadAPIKeys(); err != nil {
		t.Fatal(err)
	}
	if rec, msg := do(t, ep, http.MethodGet, "/", botKey, ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("a key removed from the file: %d %q", rec.Code, msg)
	}
	for _, key := range []string{botKey, otherKey} {
		if strings.Contains(logs.String(), key) {
			t.Fatalf("key %q is in the log:\n%s", key, logs.String())
		}
	}
}
