package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name       string
		giveMethod string
		givePath   string
		wantStatus int
		wantType   string
		wantError  string // JSON error body, if any
	}{
		{name: "page", giveMethod: http.MethodGet, givePath: "/", wantStatus: 200, wantType: "text/html; charset=utf-8"},
		{name: "page with token", giveMethod: http.MethodGet, givePath: "/?token=abc", wantStatus: 200, wantType: "text/html; charset=utf-8"},
		{name: "head", giveMethod: http.MethodHead, givePath: "/", wantStatus: 200, wantType: "text/html; charset=utf-8"},
		{name: "other path", giveMethod: http.MethodGet, givePath: "/nope", wantStatus: 404, wantType: "application/json", wantError: "not found"},
		{name: "index.html", giveMethod: http.MethodGet, givePath: "/index.html", wantStatus: 404, wantType: "application/json", wantError: "not found"},
		{name: "post", giveMethod: http.MethodPost, givePath: "/", wantStatus: 405, wantType: "application/json", wantError: "method not allowed"},
		{name: "delete", giveMethod: http.MethodDelete, givePath: "/", wantStatus: 405, wantType: "application/json", wantError: "method not allowed"},
	}
	h := Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.giveMethod, tt.givePath, nil))
			res := rec.Result()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if got := res.Header.Get("Content-Type"); got != tt.wantType {
				t.Errorf("Content-Type %q, want %q", got, tt.wantType)
			}
			for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"} {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			body := rec.Body.String()
			switch {
			case tt.wantError != "":
				var e map[string]string
				if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] != tt.wantError {
					t.Errorf("body %q, want {\"error\":%q}", body, tt.wantError)
				}
				if tt.wantStatus == 405 && res.Header.Get("Allow") != "GET, HEAD" {
					t.Errorf("Allow %q", res.Header.Get("Allow"))
				}
			case tt.giveMethod == http.MethodHead:
				if body != "" {
					t.Errorf("HEAD body %d bytes", len(body))
				}
			default:
				if body != string(page) {
					t.Error("body is not the embedded page")
				}
				if res.Header.Get("Content-Security-Policy") == "" {
					t.Error("no Content-Security-Policy")
				}
			}
		})
	}
}

// TestPolicyAllowsExactlyThePageInlineCode recomputes the hashes from the
// served page, so a page edit that breaks the policy fails here rather
// than silently in a browser.
func TestPolicyAllowsExactlyThePageInlineCode(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body := rec.Body.String()
	csp := rec.Result().Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "connect-src 'self' ws: wss:", "script-src 'self' "} {
		if !strings.Contains(csp, want) {
			t.Errorf("policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("policy %q allows unsafe sources", csp)
	}
	for _, tag := range []string{"script", "style"} {
		re := regexp.MustCompile(`(?s)<` + tag + `\b[^>]*>(.*?)</` + tag + `>`)
		m := re.FindAllStringSubmatch(body, -1)
		if len(m) != 1 {
			t.Fatalf("page has %d <%s> elements, want exactly one (the policy hashes one)", len(m), tag)
		}
		sum := sha256.Sum256([]byte(m[0][1]))
		want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if d := directive(csp, tag+"-src"); !strings.Contains(d, want) {
			t.Errorf("policy's %s-src %q lacks %q", tag, d, want)
		}
	}
	for _, banned := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", " style=", "http://", "https://", " src="} {
		if strings.Contains(body, banned) {
			t.Errorf("page contains %q", banned)
		}
	}
}

// directive returns the sources of the policy's directive name.
func directive(csp, name string) string {
	for _, d := range strings.Split(csp, ";") {
		if f := strings.Fields(d); len(f) > 0 && f[0] == name {
			return strings.Join(f[1:], " ")
		}
	}
	return ""
}

// TestPageImportsTheClient: the page's one script is a module that
// imports the client from ClientPath, which the policy's 'self' allows.
func TestPageImportsTheClient(t *testing.T) {
	m := regexp.MustCompile(`(?s)<script type="module">(.*?)</script>`).FindStringSubmatch(string(page))
	if m == nil {
		t.Fatal(`page has no <script type="module">`)
	}
	if !strings.Contains(m[1], `from "`+ClientPath+`"`) {
		t.Errorf("the page's module does not import %s", ClientPath)
	}
}

func TestInlineHash(t *testing.T) {
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	tests := []struct {
		name string
		give string
		want string
	}{
		{name: "plain", give: "<script>a()</script>", want: hash("a()")},
		{name: "module", give: `<script type="module">a()</script>`, want: hash("a()")},
		{name: "first of two", give: "<script>a()</script><script>b()</script>", want: hash("a()")},
		{name: "longer tag name first", give: "<scripts>x</scripts><script>a()</script>", want: hash("a()")},
		{name: "none", give: "<p>no script</p>", want: "'none'"},
		{name: "unclosed", give: "<script>a()", want: "'none'"},
		{name: "unended tag", give: "<script type=", want: "'none'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inlineHash([]byte(tt.give), "script"); got != tt.want {
				t.Errorf("inlineHash(%q) = %s, want %s", tt.give, got, tt.want)
			}
		})
	}
}

func TestClientHandler(t *testing.T) {
	sum := sha256.Sum256(client)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:]) + `"`
	tests := []struct {
		name        string
		giveHandler http.Handler
		giveMethod  string
		giveHeader  map[string]string
		wantStatus  int
		wantBody    bool // the client in the body
	}{
		{name: "get", giveHandler: ClientHandler(), giveMethod: http.MethodGet, wantStatus: 200, wantBody: true},
		{name: "head", giveHandler: ClientHandler(), giveMethod: http.MethodHead, wantStatus: 200},
		{name: "cached", giveHandler: ClientHandler(), giveMethod: http.MethodGet, giveHeader: map[string]string{"If-None-Match": etag}, wantStatus: 304},
		{name: "cached among others", giveHandler: ClientHandler(), giveMethod: http.MethodGet, giveHeader: map[string]string{"If-None-Match": `"old", ` + etag}, wantStatus: 304},
		{name: "cached head", giveHandler: ClientHandler(), giveMethod: http.MethodHead, giveHeader: map[string]string{"If-None-Match": etag}, wantStatus: 304},
		{name: "stale", giveHandler: ClientHandler(), giveMethod: http.MethodGet, giveHeader: map[string]string{"If-None-Match": `"old"`}, wantStatus: 200, wantBody: true},
		{name: "weak match", giveHandler: ClientHandler(), giveMethod: http.MethodGet, giveHeader: map[string]string{"If-None-Match": "W/" + etag}, wantStatus: 304},
		{name: "post", giveHandler: ClientHandler(), giveMethod: http.MethodPost, wantStatus: 405},
		{name: "page handler get", giveHandler: Handler(), giveMethod: http.MethodGet, wantStatus: 200, wantBody: true},
		{name: "page handler cached", giveHandler: Handler(), giveMethod: http.MethodGet, giveHeader: map[string]string{"If-None-Match": etag}, wantStatus: 304},
		{name: "page handler put", giveHandler: Handler(), giveMethod: http.MethodPut, wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.giveMethod, ClientPath, nil)
			for k, v := range tt.giveHeader {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			tt.giveHandler.ServeHTTP(rec, req)
			res := rec.Result()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			body := rec.Body.String()
			if tt.wantStatus == 405 {
				var e map[string]string
				if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] != "method not allowed" {
					t.Errorf("body %q", body)
				}
				if got := res.Header.Get("Allow"); got != "GET, HEAD" {
					t.Errorf("Allow %q", got)
				}
				return
			}
			want := map[string]string{"ETag": etag, "Cache-Control": "no-cache", "Last-Modified": ""}
			if tt.wantStatus == 200 {
				want["Content-Type"] = "text/javascript; charset=utf-8"
				want["Content-Length"] = strconv.Itoa(len(client))
			}
			for k, v := range want {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if tt.wantBody && body != string(client) {
				t.Errorf("body is not the embedded client (%d bytes)", len(body))
			}
			if !tt.wantBody && body != "" {
				t.Errorf("body of %d bytes, want none", len(body))
			}
		})
	}
}

// TestClientVersionIsThePackages: the served client's VERSION is the npm
// package's version, so a bug report names one thing.
func TestClientVersionIsThePackages(t *testing.T) {
	pkgJSON, err := os.ReadFile("client/package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(pkgJSON, &pkg); err != nil {
		t.Fatal(err)
	}
	if want := `export const VERSION = "` + pkg.Version + `";`; !bytes.Contains(client, []byte(want)) {
		t.Errorf("client lacks %s (package.json's version)", want)
	}
}
