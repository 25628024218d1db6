//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/e2e/harness"
)

// Bounds of the browser helpers. Every wait ends by one of these.
const (
	browserStartTimeout = 30 * time.Second // launch until DevTools lists the page
	cdpTimeout          = 20 * time.Second // one CDP command, or a page load
)

// browser is a headless Chromium driven over the Chrome DevTools Protocol,
// with just enough of CDP for the browser tests: navigate, eval,
// screenshot. It is used by one test goroutine; calls are synchronous, so
// no goroutine reads the CDP socket.
type browser struct {
	t    testing.TB
	conn *websocket.Conn // the page target's CDP endpoint
	id   int64           // last command id
	// events holds events read while waiting for a command's answer,
	// oldest first, at most maxEvents.
	events []cdpMessage
	// console holds the page's log entries (Log domain), for failures.
	console []string
}

const maxEvents = 256

type cdpMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *cdpError       `json:"error,omitempty"`
}

type cdpError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data"`
}

func (e *cdpError) Error() string {
	return fmt.Sprintf("cdp error %d: %s %s", e.Code, e.Message, e.Data)
}

// chromiumPath finds Debian's Chromium. Without one the test skips with
// how to install it, or fails under CI, which must provide it.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/usr/bin/chromium"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found (/usr/bin/chromium, chromium or chromium-browser on PATH): " +
			".ci/run must install the `chromium` Debian package (.ci/install-chromium)")
	}
	t.Skip("browser test needs Chromium, none found (/usr/bin/chromium, chromium or chromium-browser on PATH): " +
		"run `apt-get install chromium` (Debian's package) or `make deps` as root to run it")
	return ""
}

// startBrowser launches a headless Chromium with a fresh profile, its
// DevTools endpoint on a port reserved for it, and connects to its blank
// page. t.Cleanup closes the connection, kills the browser's process group
// and waits for it.
func startBrowser(t testing.TB) *browser {
	t.Helper()
	bin := chromiumPath(t)
	// Removed after the kill below: cleanups run last-in first-out.
	profile, tmp := t.TempDir(), t.TempDir()
	devtools := harness.Addrs(t, 1)[0]
	host, port, err := net.SplitHostPort(devtools)
	if err != nil {
		t.Fatal(err)
	}
	proc := harness.StartProc(t, harness.ProcConfig{
		Name: "chromium", Bin: bin,
		Args: []string{
			"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
			"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
			"--disable-component-update", "--disable-sync", "--disable-extensions",
			"--window-size=900,700",
			"--user-data-dir=" + profile,
			"--remote-debugging-address=" + host, "--remote-debugging-port=" + port,
			"about:blank",
		},
		// Chromium's singleton socket directory goes to TMPDIR; a killed
		// browser leaves it behind, so give it one that the test removes.
		Env: map[string]string{"TMPDIR": tmp},
		// Its own process group, so the kill reaches the renderer and
		// zygote processes too and none outlives the test holding the
		// profile.
		Group: true,
	})
	pageURL := pageTarget(t, proc, devtools)

	d := websocket.Dialer{HandshakeTimeout: cdpTimeout}
	conn, resp, err := d.Dial(pageURL, nil)
	if err != nil {
		t.Fatalf("connect to page %s: %v (resp %v)", pageURL, err, resp)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b := &browser{t: t, conn: conn}
	for _, domain := range []string{"Page.enable", "Log.enable"} {
		if err := b.call(domain, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// pageTarget waits until the DevTools endpoint at hostport lists the blank
// page Chromium opened, and returns its CDP WebSocket URL.
func pageTarget(t testing.TB, proc *harness.Proc, hostport string) string {
	t.Helper()
	var pageURL string
	harness.WaitFor(t, browserStartTimeout, "Chromium's page target at "+hostport, func() error {
		if err := proc.Alive(); err != nil {
			return harness.Abort(err)
		}
		status, body, err := harness.HTTPGet(context.Background(), "http://"+hostport+"/json/list")
		if err != nil {
			return err
		}
		var targets []struct {
			Type string `json:"type"`
			WS   string `json:"webSocketDebuggerUrl"`
		}
		if err := json.Unmarshal([]byte(body), &targets); err != nil {
			return fmt.Errorf("/json/list %d: %w", status, err)
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				pageURL = tg.WS
				return nil
			}
		}
		return fmt.Errorf("no page target yet (%+v)", targets)
	})
	return pageURL
}

// call sends one command and waits for its answer, decoding the result
// into result if it is not nil. Events read meanwhile are kept.
func (b *browser) call(method string, params, result any) error {
	b.id++
	id := b.id
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	_ = b.conn.SetWriteDeadline(time.Now().Add(cdpTimeout))
	if err := b.conn.WriteJSON(msg); err != nil {
		return fmt.Errorf("send %s: %w", method, err)
	}
	deadline := time.Now().Add(cdpTimeout)
	for {
		m, err := b.read(deadline)
		if err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		if m.ID != id {
			b.keep(m)
			continue
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %w", method, m.Error)
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(m.Result, result); err != nil {
			return fmt.Errorf("%s result: %w", method, err)
		}
		return nil
	}
}

func (b *browser) read(deadline time.Time) (cdpMessage, error) {
	_ = b.conn.SetReadDeadline(deadline)
	var m cdpMessage
	_, data, err := b.conn.ReadMessage()
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(data, &m)
}

// keep records an event that arrived while waiting for something else.
func (b *browser) keep(m cdpMessage) {
	if m.Method == "" {
		return // an answer to a command nobody waits for any more
	}
	if m.Method == "Log.entryAdded" {
		var e struct {
			Entry struct {
				Source string `json:"source"`
				Level  string `json:"level"`
				Text   string `json:"text"`
			} `json:"entry"`
		}
		if json.Unmarshal(m.Params, &e) == nil {
			b.console = append(b.console, e.Entry.Level+" "+e.Entry.Source+": "+e.Entry.Text)
		}
		return
	}
	if len(b.events) == maxEvents {
		b.events = b.events[1:]
	}
	b.events = append(b.events, m)
}

// waitEvent returns the first kept or coming event named method.
func (b *browser) waitEvent(method string, timeout time.Duration) (cdpMessage, error) {
	for i, m := range b.events {
		if m.Method == method {
			b.events = append(b.events[:i], b.events[i+1:]...)
			return m, nil
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		m, err := b.read(deadline)
		if err != nil {
			return m, fmt.Errorf("wait for %s: %w", method, err)
		}
		if m.Method == method {
			return m, nil
		}
		b.keep(m)
	}
}

// navigate opens target in the page and waits for its load event.
func (b *browser) navigate(target string) {
	b.t.Helper()
	b.events = b.events[:0] // a load event seen before is not this one's
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := b.call("Page.navigate", map[string]any{"url": target}, &res); err != nil {
		b.t.Fatal(err)
	}
	if res.ErrorText != "" {
		b.t.Fatalf("navigate to %s: %s", target, res.ErrorText)
	}
	if _, err := b.waitEvent("Page.loadEventFired", cdpTimeout); err != nil {
		b.t.Fatal(err)
	}
}

// eval evaluates the JavaScript expression js in the page and returns
// its value as JSON (null for undefined); a thrown exception is an error.
func (b *browser) eval(js string) (json.RawMessage, error) { return b.evaluate(js, false) }

// evaluate is Runtime.evaluate of js, awaiting the promise it yields when
// await is set.
func (b *browser) evaluate(js string, await bool) (json.RawMessage, error) {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	params := map[string]any{"expression": js, "returnByValue": true, "awaitPromise": await}
	if err := b.call("Runtime.evaluate", params, &res); err != nil {
		return nil, err
	}
	if e := res.ExceptionDetails; e != nil {
		return nil, fmt.Errorf("eval %s: %s %s", js, e.Text, e.Exception.Description)
	}
	if len(res.Result.Value) == 0 {
		return json.RawMessage("null"), nil
	}
	return res.Result.Value, nil
}

// evalT is eval for the test: an error fails it.
func (b *browser) evalT(js string) json.RawMessage {
	b.t.Helper()
	v, err := b.eval(js)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

// isTrue returns a condition: js yields true. Its error says what the
// page shows otherwise; a failing evaluation aborts the wait.
func (b *browser) isTrue(js string) func() error {
	return b.condition(js, "document.body && document.body.innerText", nil)
}

// condition returns a wait condition: js yields true. before, when not
// nil, runs first on each poll; when js is false the error shows what
// summary (more JS) yields and the page's console. A failing evaluation,
// or before, aborts the wait.
func (b *browser) condition(js, summary string, before func() error) func() error {
	return func() error {
		if before != nil {
			if err := before(); err != nil {
				return harness.Abort(err)
			}
		}
		v, err := b.eval(js)
		var ok bool
		if err == nil {
			err = json.Unmarshal(v, &ok)
		}
		if err != nil {
			return harness.Abort(err)
		}
		if !ok {
			seen, _ := b.eval(summary)
			return fmt.Errorf("false; page: %s; console: %q", seen, b.console)
		}
		return nil
	}
}

// waitTrue waits until js yields true.
func (b *browser) waitTrue(timeout time.Duration, what, js string) {
	b.t.Helper()
	harness.WaitFor(b.t, timeout, what, b.isTrue(js))
}

// staysTrue checks that js yields true throughout d.
func (b *browser) staysTrue(d time.Duration, what, js string) {
	b.t.Helper()
	harness.Holds(b.t, d, what, b.isTrue(js))
}

// screenshot writes a PNG of the page's viewport to path.
func (b *browser) screenshot(path string) {
	b.t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	if err := b.call("Page.captureScreenshot", map[string]any{"format": "png"}, &res); err != nil {
		b.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		b.t.Fatalf("screenshot data: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
