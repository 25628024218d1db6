package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Bounds of the browser helpers. Every wait ends by one of these.
const (
	browserStartTimeout = 30 * time.Second // launch until DevTools listens
	cdpTimeout          = 20 * time.Second // one CDP command, or a page load
	browserExitTimeout  = 15 * time.Second // kill until the process is reaped
	pollInterval        = 25 * time.Millisecond
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
		"run `apt-get install chromium` (Debian's package) to run it")
	return ""
}

// startBrowser launches a headless Chromium with a fresh profile and
// connects to its blank page. t.Cleanup closes the connection, kills the
// browser's process group and waits for it.
func startBrowser(t testing.TB) *browser {
	t.Helper()
	bin := chromiumPath(t)
	profile := t.TempDir() // removed after the kill below: cleanups run last-in first-out
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-extensions",
		"--window-size=900,700",
		"--user-data-dir="+profile, "--remote-debugging-port=0", "about:blank")
	// Its own process group, so the kill reaches the renderer and zygote
	// processes too and none outlives the test holding the profile.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Chromium's singleton socket directory goes to TMPDIR; a killed
	// browser leaves it behind, so give it one that the test removes.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	stderr := &devtoolsWriter{url: make(chan string, 1)}
	cmd.Stderr = stderr
	// Children inherit stderr; bound the wait for them to let go of it.
	cmd.WaitDelay = browserExitTimeout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL) // the group led by the browser we started
		select {
		case <-exited:
		case <-time.After(browserExitTimeout + 5*time.Second):
			t.Errorf("chromium (pid %d) not reaped within %s", pid, browserExitTimeout+5*time.Second)
		}
	})

	var browserURL string
	select {
	case browserURL = <-stderr.url:
	case <-exited:
		t.Fatalf("chromium exited before DevTools listened: %v\n%s", waitErr, stderr.String())
	case <-time.After(browserStartTimeout):
		t.Fatalf("chromium: no DevTools endpoint within %s\n%s", browserStartTimeout, stderr.String())
	}
	u, err := url.Parse(browserURL)
	if err != nil {
		t.Fatalf("DevTools URL %q: %v", browserURL, err)
	}
	pageURL := pageTarget(t, u.Host)

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

// pageTarget polls the debugging port's /json/list until the blank page
// Chromium opened is listed and returns its CDP WebSocket URL.
func pageTarget(t testing.TB, hostport string) string {
	t.Helper()
	client := &http.Client{Timeout: cdpTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(browserStartTimeout)
	for {
		var targets []struct {
			Type string `json:"type"`
			URL  string `json:"url"`
			WS   string `json:"webSocketDebuggerUrl"`
		}
		resp, err := client.Get("http://" + hostport + "/json/list")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				return tg.WS
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page target at %s within %s (last error %v, targets %+v)", hostport, browserStartTimeout, err, targets)
		}
		time.Sleep(pollInterval)
	}
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
// its value as JSON (null for undefined). A thrown exception fails the test.
func (b *browser) eval(js string) json.RawMessage {
	b.t.Helper()
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
	if err := b.call("Runtime.evaluate", map[string]any{"expression": js, "returnByValue": true}, &res); err != nil {
		b.t.Fatal(err)
	}
	if e := res.ExceptionDetails; e != nil {
		b.t.Fatalf("eval %s: %s %s", js, e.Text, e.Exception.Description)
	}
	if len(res.Result.Value) == 0 {
		return json.RawMessage("null")
	}
	return res.Result.Value
}

// evalString evaluates js, which must yield a string (or null: "").
func (b *browser) evalString(js string) string {
	b.t.Helper()
	var s *string
	if err := json.Unmarshal(b.eval(js), &s); err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	if s == nil {
		return ""
	}
	return *s
}

// evalBool evaluates js, which must yield a boolean.
func (b *browser) evalBool(js string) bool {
	b.t.Helper()
	var v bool
	if err := json.Unmarshal(b.eval(js), &v); err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

// waitTrue polls js every pollInterval until it yields true, failing the
// test with what, the page text and its console after timeout.
func (b *browser) waitTrue(timeout time.Duration, what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for !b.evalBool(js) {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %s waiting for %s\npage: %s\nconsole: %q",
				timeout, what, b.evalString("document.body && document.body.innerText"), b.console)
		}
		time.Sleep(pollInterval)
	}
}

// staysTrue polls js for d and fails the test the first time it is false.
func (b *browser) staysTrue(d time.Duration, what, js string) {
	b.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(pollInterval) {
		if !b.evalBool(js) {
			b.t.Fatalf("%s no longer holds\npage: %s", what, b.evalString("document.body.innerText"))
		}
	}
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

// devtoolsWriter is Chromium's stderr: it hands the first
// "DevTools listening on ws://..." URL to url and keeps the output's tail
// for failure messages.
type devtoolsWriter struct {
	url chan string // capacity 1, written once

	mu   sync.Mutex
	tail []byte // the last maxStderr bytes; guarded by mu
	line []byte // the unfinished line; guarded by mu
	sent bool   // guarded by mu
}

const maxStderr = 16 << 10

func (w *devtoolsWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, p...)
	if len(w.tail) > maxStderr {
		w.tail = w.tail[len(w.tail)-maxStderr:]
	}
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		l := strings.TrimSpace(string(w.line[:i]))
		w.line = w.line[i+1:]
		if rest, ok := strings.CutPrefix(l, "DevTools listening on "); ok && !w.sent {
			w.sent = true
			w.url <- rest
		}
	}
	if len(w.line) > maxStderr {
		w.line = w.line[:0]
	}
	return len(p), nil
}

func (w *devtoolsWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.tail)
}
