//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

// JavaScript the browser tests read the page with; the page's element ids
// are its test contract.
const (
	jsState  = `document.getElementById("state").textContent`
	jsClose  = `document.getElementById("close").textContent`
	jsNotice = `document.getElementById("notice").textContent`
)

// jsHasMessage is an expression: does a #messages li have exactly text?
func jsHasMessage(text string) string {
	lit, _ := json.Marshal(text) // a JSON string is a JavaScript string literal
	return fmt.Sprintf(`Array.from(document.querySelectorAll("#messages li")).some(li => li.textContent === %s)`, lit)
}

// openClient checks that pusher serves the client at / and opens it in a
// fresh headless Chromium with token in the URL.
func openClient(t *testing.T, p *harness.Pusher, token string) *browser {
	t.Helper()
	page := "http://" + p.HTTPAddr() + "/"
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, page, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s: the browser client is not served (serve.go mounts web.Handler() under --ui)",
			resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b := startBrowser(t)
	b.navigate(page + "?token=" + url.QueryEscape(token))
	return b
}

func TestBrowserClient(t *testing.T) {
	chromiumPath(t)                                                           // skip (or fail under CI) before starting anything
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t)}) // --ui is on by default
	nc, js := harness.Connect(t, p.NATSURL())
	b := openClient(t, p, harness.Token(t, "browser-user", time.Hour))

	// A token in the URL connects at once.
	b.waitTrue(10*time.Second, "state connected", jsState+` === "connected"`)

	harness.Publish(t, js, "push.browser-user", []byte("Hello from NATS"))
	b.waitTrue(10*time.Second, "Hello from NATS listed", jsHasMessage("Hello from NATS"))

	// Markup in a message is shown as text, never parsed.
	const xss = `<img src=x onerror=alert(1)>`
	harness.Publish(t, js, "push.browser-user", []byte(xss))
	b.waitTrue(10*time.Second, "the markup message listed as text", jsHasMessage(xss))
	if n := string(b.evalT(`document.querySelectorAll("#messages img").length`)); n != "0" {
		t.Fatalf("%s img elements in #messages: a message was parsed as HTML", n)
	}
	checkScreenshot(t, b)

	// A kick closes with 4001 and the page does not reconnect.
	if err := nc.Publish("pusher.kick.browser-user", nil); err != nil {
		t.Fatal(err)
	}
	b.waitTrue(10*time.Second, "closed 4001 kicked, disconnected",
		jsClose+` === "closed 4001 kicked" && `+jsState+` === "disconnected"`)
	p.Log().Wait(t, 10*time.Second, "ws.closed", map[string]any{"uid": "browser-user"})
	// The user is offline now: the next message is dead-lettered. A page
	// that reconnected would show "reconnecting", then get the message
	// replayed on connect.
	harness.Publish(t, js, "push.browser-user", []byte("after the kick"))
	p.Log().Wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": "browser-user", "reason": "offline"})
	b.staysTrue(1500*time.Millisecond, "disconnected, message after the kick not shown",
		jsState+` === "disconnected" && !`+jsHasMessage("after the kick"))

	for _, line := range b.console {
		if strings.Contains(line, "Content Security Policy") {
			t.Errorf("page console: %s", line)
		}
	}
}

// checkScreenshot takes a screenshot of the page, checks it is a PNG and
// copies it to $PUSHER_SCREENSHOT_DIR when set.
func checkScreenshot(t *testing.T, b *browser) {
	t.Helper()
	shot := filepath.Join(t.TempDir(), "browser.png")
	b.screenshot(shot)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 1000 {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if dir := os.Getenv("PUSHER_SCREENSHOT_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "browser.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrowserRejectsBadToken(t *testing.T) {
	chromiumPath(t)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t)})
	b := openClient(t, p, "garbage")
	b.waitTrue(15*time.Second, "cannot connect (check token)",
		jsNotice+` === "cannot connect (check token)" && `+jsState+` === "disconnected"`)
	// It gave up after three refused handshakes, not more. pusher's log
	// is buffered (flushed every second), so wait for the third line.
	harness.WaitFor(t, 5*time.Second, "3 auth.rejected lines", func() error {
		if n := len(p.Log().Find("auth.rejected", nil)); n < 3 {
			return fmt.Errorf("%d lines", n)
		}
		return nil
	})
	if n := len(p.Log().Find("auth.rejected", nil)); n != 3 {
		t.Fatalf("%d auth.rejected lines, want 3 attempts\n%s", n, p.Log())
	}
}
