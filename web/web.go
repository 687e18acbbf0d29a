package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is sent with every page and file. Scripts, styles
// and images come only from the gateway itself; connections go to the
// gateway and to the chat nodes' WebSockets, which listen on other ports
// (and maybe other hosts), hence ws: and wss:.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// pages maps the page paths to their files under static/.
var pages = map[string]string{
	"/":        "index.html",
	"/status":  "status.html",
	"/support": "support.html",
}

// file is one embedded file, ready to serve.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// Handler serves the pages and their files. It is read-only after New and
// safe for concurrent use.
type Handler struct {
	files    map[string]*file // by URL path
	notFound http.Handler
}

// New returns a handler of the embedded files. Requests for anything else
// go to notFound (nil: http.NotFound).
func New(notFound http.Handler) *Handler {
	if notFound == nil {
		notFound = http.NotFoundHandler()
	}
	h := &Handler{files: map[string]*file{}, notFound: notFound}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded files: " + err.Error()) // the embed directive guarantees the folder
	}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		f := &file{name: name, body: body, ctype: contentType(name), etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		h.files["/static/"+name] = f
		return nil
	})
	if err != nil {
		panic("web: embedded files: " + err.Error())
	}
	for p, name := range pages {
		h.files[p] = h.files["/static/"+name]
	}
	return h
}

// ServeHTTP serves GET and HEAD of a page or file; anything else goes to
// the notFound handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := h.files[r.URL.Path]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		h.notFound.ServeHTTP(w, r)
		return
	}
	hd := w.Header()
	SecurityHeaders(hd)
	hd.Set("Content-Type", f.ctype)
	hd.Set("ETag", f.etag)
	// Always revalidate: a new binary serves new files under the same
	// names, and a 304 costs one round trip.
	hd.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

// SecurityHeaders sets the headers every page and file is sent with.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
}

// contentType is set explicitly rather than from the system's MIME table,
// which differs between machines (and nosniff makes it matter for scripts).
func contentType(name string) string {
	switch strings.ToLower(path.Ext(name)) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case ".json":
		return "application/json"
	}
	return "application/octet-stream"
}
