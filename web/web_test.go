package web

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
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
	for _, want := range []string{"default-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "connect-src 'self' ws: wss:"} {
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
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Errorf("policy %q lacks %q", csp, want)
		}
	}
	for _, banned := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", " style=", "http://", "https://", " src="} {
		if strings.Contains(body, banned) {
			t.Errorf("page contains %q", banned)
		}
	}
}
