// Package web serves pusher's browser test client, a single dependency-free page.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // index.html
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
)

// page is the whole client: markup, one inline <style> and one inline
// <script>, no external resources.
//
//go:embed index.html
var page []byte

// Handler returns the handler serving the test client page at exactly "/"
// to GET and HEAD. Any other path answers 404 and any other method 405,
// both with a JSON body {"error": "..."}, so it can be mounted as the
// mux's catch-all "/". The page may only run its own inline script and
// style (their SHA-256 hashes, computed here from the embedded page, go
// into the Content-Security-Policy) and connect back to its own host's
// WebSocket. The handler is safe for concurrent use.
func Handler() http.Handler {
	return &handler{csp: contentSecurityPolicy(page)}
}

type handler struct {
	csp string // fixed for the embedded page
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	if r.URL.Path != "/" {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(page)))
	hd.Set("Content-Security-Policy", h.csp)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(page)
	}
}

// contentSecurityPolicy allows nothing but the page's own inline script
// and style and WebSockets (and 'self') for connections. ws: and wss: are
// listed because browsers before CSP 3 do not match WebSockets to 'self'.
func contentSecurityPolicy(doc []byte) string {
	return "default-src 'none'" +
		"; script-src " + inlineHash(doc, "script") +
		"; style-src " + inlineHash(doc, "style") +
		"; connect-src 'self' ws: wss:" +
		"; img-src 'self' data:" +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// inlineHash returns the CSP source for the content of doc's first
// <tag>...</tag> element, or 'none' if doc has no such element (the page
// then fails loudly in the browser, and web's tests catch it first).
func inlineHash(doc []byte, tag string) string {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	i := bytes.Index(doc, open)
	if i < 0 {
		return "'none'"
	}
	body := doc[i+len(open):]
	j := bytes.Index(body, end)
	if j < 0 {
		return "'none'"
	}
	sum := sha256.Sum256(body[:j])
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// writeError answers with status and a JSON body {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}
