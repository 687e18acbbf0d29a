package web_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"chatcluster/internal/testenv"
	"chatcluster/web"
)

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestServesPagesAndFiles(t *testing.T) {
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "fallback", http.StatusTeapot)
	})
	srv := httptest.NewServer(web.New(notFound))
	defer srv.Close()

	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/static/chat/app.js">`},
		{"/status", "text/html; charset=utf-8", `<script type="module" src="/static/status/status.js">`},
		{"/support", "text/html; charset=utf-8", `<script type="module" src="/static/support/visitor.js">`},
		{"/static/support/visitor.js", "text/javascript; charset=utf-8", "import"},
		{"/static/chat/app.js", "text/javascript; charset=utf-8", "import"},
		{"/static/common/base.css", "text/css; charset=utf-8", ":root"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, srv.URL+tc.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			h := resp.Header
			if h.Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type %q, want %q", h.Get("Content-Type"), tc.ctype)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			if h.Get("Content-Security-Policy") != web.ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" ||
				h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("security headers missing: %v", h)
			}
			etag := h.Get("ETag")
			if etag == "" || h.Get("Cache-Control") != "no-cache" {
				t.Fatalf("ETag %q, Cache-Control %q", etag, h.Get("Cache-Control"))
			}
			again, body := get(t, srv.URL+tc.path, map[string]string{"If-None-Match": etag})
			if again.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("revalidation: %d with %d bytes, want 304 and none", again.StatusCode, len(body))
			}
		})
	}
	for _, p := range []string{"/static/nope.js", "/static/", "/status/", "/support/", "/index.html", "/static/index.html/"} {
		if resp, _ := get(t, srv.URL+p, nil); resp.StatusCode != http.StatusTeapot {
			t.Errorf("GET %s: %d, want the fallback", p, resp.StatusCode)
		}
	}
	resp, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("POST /: %d, want the fallback", resp.StatusCode)
	}
}

// staticFiles returns the files under static/, by path relative to it.
func staticFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	root := "static"
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Every script, style sheet and module import names a file that exists,
// so a renamed file cannot break a page silently.
func TestReferencesResolve(t *testing.T) {
	files := staticFiles(t)
	attr := regexp.MustCompile(`(?:src|href)="/static/([^"]+)"`)
	imp := regexp.MustCompile(`(?m)^\s*import\s[^'"]*['"]([^'"]+)['"]`)
	n := 0
	for name, body := range files {
		switch path.Ext(name) {
		case ".html":
			for _, m := range attr.FindAllStringSubmatch(body, -1) {
				n++
				if _, ok := files[m[1]]; !ok {
					t.Errorf("%s refers to /static/%s, which does not exist", name, m[1])
				}
			}
		case ".js":
			for _, m := range imp.FindAllStringSubmatch(body, -1) {
				n++
				target := path.Join(path.Dir(name), m[1])
				if _, ok := files[target]; !ok {
					t.Errorf("%s imports %s (%s), which does not exist", name, m[1], target)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("found only %d references; the patterns are out of date", n)
	}
}

// The scripts never turn data into markup: text goes into the page as text
// nodes (common/dom.js), and nothing is evaluated from strings.
func TestScriptsUseNoHTMLSinks(t *testing.T) {
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*['"]style['"]|\.srcdoc`)
	for name, body := range staticFiles(t) {
		if path.Ext(name) != ".js" {
			continue
		}
		for i, line := range strings.Split(body, "\n") {
			if sinks.MatchString(line) {
				t.Errorf("%s:%d: %s", name, i+1, strings.TrimSpace(line))
			}
		}
	}
}

// The gateway serves the pages at /, /status and /support with their security
// headers, and still answers unknown paths with its JSON 404.
func TestGatewayServesPages(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{})
	for _, p := range []string{"/", "/status", "/support", "/static/chat/app.js", "/static/status/status.js", "/static/support/visitor.js"} {
		resp, body := get(t, c.GatewayURL()+p, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" || body == "" {
			t.Errorf("GET %s: %d, CSP %q, %d bytes", p, resp.StatusCode, resp.Header.Get("Content-Security-Policy"), len(body))
		}
	}
	for _, p := range []string{"/api/nope", "/static/nope.js", "/statusx", "/support/x"} {
		resp, body := get(t, c.GatewayURL()+p, nil)
		var e struct {
			Error string `json:"error"`
		}
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
			t.Errorf("GET %s: %d %q, want 404 with a JSON error", p, resp.StatusCode, body)
		}
	}
	resp, body := get(t, c.GatewayURL()+"/api/cluster", nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || !strings.Contains(body, `"nodes"`) {
		t.Errorf("/api/cluster: %d %q", resp.StatusCode, body)
	}
}
