package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"chatcluster/internal/redisconn"
	"chatcluster/internal/testenv"
)

// With a certificate the gateway serves HTTPS: a client trusting its CA
// gets its API, a plain HTTP request is answered 400, and the certificate
// is not served to a client that does not trust the CA.
func TestGatewayServesHTTPS(t *testing.T) {
	ca := testenv.NewCA(t, "gateway")
	cert, key := ca.Issue(t, "gateway", "127.0.0.1")
	ns := testenv.Namespace(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", ""
	cfg.Redis, cfg.RedisPrefix, cfg.Mongo, cfg.MongoDB = redisconn.Config{Addr: testenv.Redis(t)}, ns+":", testenv.Mongo(t), ns
	cfg.TLSCertFile, cfg.TLSKeyFile = cert, key
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	if !strings.HasPrefix(g.URL(), "https://") {
		t.Fatalf("URL %s", g.URL())
	}

	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	resp, err := trusting.Get(g.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz over HTTPS: %s", resp.Status)
	}

	plain := &http.Client{Timeout: 10 * time.Second}
	resp, err = plain.Get("http://" + g.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
		t.Fatalf("plain HTTP to the HTTPS port: %s %q", resp.Status, body)
	}

	if _, err := plain.Get(g.URL() + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("HTTPS without trusting the CA: %v", err)
	}
	if err := g.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
}
