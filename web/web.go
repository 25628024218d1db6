// Package web serves pusher's browser side: the official client module
// (/pusher.js) and the test page (/) that uses it.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // index.html, client/pusher.js
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// page is the test page: markup, one inline <style> and one inline module
// <script> that imports ClientPath, nothing else.
//
//go:embed index.html
var page []byte

// client is the official pusher.v1 client, an ES module served as is: the
// file reviewed, unit-tested and packaged for npm is the file browsers get.
//
//go:embed client/pusher.js
var client []byte

// ClientPath is where pusher serves the client module, and where the test
// page imports it from.
const ClientPath = "/pusher.js"

// Handler returns the handler serving the test page at exactly "/" to GET
// and HEAD, and the client module it imports at ClientPath (as
// ClientHandler does), so the page works wherever Handler is mounted.
// Any other path answers 404 and any other method 405, both with a JSON
// body {"error": "..."}, so it can be mounted as the mux's catch-all "/".
// The page may only run its own inline script and style (their SHA-256
// hashes, computed here from the embedded page, go into the
// Content-Security-Policy) and scripts from its own origin (the client),
// and connect back to its own host's WebSocket. The handler is safe for
// concurrent use.
func Handler() http.Handler {
	return &handler{csp: contentSecurityPolicy(page), client: ClientHandler()}
}

type handler struct {
	csp    string       // fixed for the embedded page
	client http.Handler // ClientPath
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == ClientPath {
		h.client.ServeHTTP(w, r)
		return
	}
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

// ClientHandler returns the handler serving the client module to GET and
// HEAD, on whatever path it is mounted (pusher mounts it at ClientPath
// whether or not the test page is on). Other methods answer 405 with a
// JSON body. The response is text/javascript with a strong ETag (the
// content's SHA-256), so If-None-Match answers 304, and Cache-Control
// no-cache: the URL carries no version, so a browser revalidates on every
// page load (one conditional request, no body) and never runs a client
// older than the pusher serving it. The handler is safe for concurrent use.
func ClientHandler() http.Handler {
	sum := sha256.Sum256(client)
	return &clientHandler{etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:]) + `"`}
}

type clientHandler struct {
	etag string // of the embedded client
}

func (h *clientHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	hd.Set("Content-Type", "text/javascript; charset=utf-8")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", h.etag)
	// ServeContent answers If-None-Match (304), HEAD and ranges; the zero
	// time leaves Last-Modified out: the ETag is the validator.
	http.ServeContent(w, r, "pusher.js", time.Time{}, bytes.NewReader(client))
}

// contentSecurityPolicy allows nothing but the page's own inline script
// and style, scripts from its own origin (the client module it imports),
// and WebSockets (and 'self') for connections. ws: and wss: are listed
// because browsers before CSP 3 do not match WebSockets to 'self'.
func contentSecurityPolicy(doc []byte) string {
	return "default-src 'none'" +
		"; script-src 'self' " + inlineHash(doc, "script") +
		"; style-src " + inlineHash(doc, "style") +
		"; connect-src 'self' ws: wss:" +
		"; img-src 'self' data:" +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// inlineHash returns the CSP source for the content of doc's first
// <tag>...</tag> element (attributes allowed: <script type="module">), or
// 'none' if doc has no such element (the page then fails loudly in the
// browser, and web's tests catch it first).
func inlineHash(doc []byte, tag string) string {
	open, end := []byte("<"+tag), []byte("</"+tag+">")
	rest := doc
	for {
		i := bytes.Index(rest, open)
		if i < 0 {
			return "'none'"
		}
		rest = rest[i+len(open):]
		if !isTagEnd(rest) {
			continue // <scripts>, not <script>
		}
		k := bytes.IndexByte(rest, '>')
		if k < 0 {
			return "'none'"
		}
		body := rest[k+1:]
		j := bytes.Index(body, end)
		if j < 0 {
			return "'none'"
		}
		sum := sha256.Sum256(body[:j])
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
}

// isTagEnd reports whether rest, what follows "<tag" in a document, ends
// the tag name: "<script>" and "<script type=...>", not "<scripts>".
func isTagEnd(rest []byte) bool {
	return len(rest) > 0 && (rest[0] == '>' || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n')
}

// writeError answers with status and a JSON body {"error": msg}, not
// HTML-escaped.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Error string `json:"error"`
	}{msg})
}
