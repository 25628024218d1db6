package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/server"
)

// runMainEnv, set to 1, makes this test binary pusher itself (TestMain
// calls main): the README's examples run `pusher` through a wrapper that
// sets it, so they exercise main as built, with no separate build.
const runMainEnv = "PUSHER_TEST_RUN_MAIN"

// readmeAPIKey is PUSHER_API_KEY for the README's examples.
const readmeAPIKey = "readme-api-key"

// shellBlock is one ```sh block of the README.
type shellBlock struct {
	line int    // of its opening fence, 1-based
	text string // its lines
	skip string // why it is not run, from <!-- test: skip (why) --> above it
}

// readmeShellBlocks reads the sh, bash and shell blocks of a Markdown
// file, each with its skip marker. A marker without a reason, or one not
// directly above a shell block, is an error.
func readmeShellBlocks(path string) ([]shellBlock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var blocks []shellBlock
	var cur *shellBlock
	marker, markerLine := "", 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "<!-- test:"):
			reason, ok := strings.CutPrefix(line, "<!-- test: skip (")
			reason, ok2 := strings.CutSuffix(reason, ") -->")
			if !ok || !ok2 || strings.TrimSpace(reason) == "" {
				return nil, fmt.Errorf("%s:%d: marker %q: want <!-- test: skip (why) -->", path, n, line)
			}
			marker, markerLine = reason, n
			continue
		case strings.HasPrefix(line, "```"):
			lang := strings.Fields(strings.TrimPrefix(line, "```") + " ")
			isShell := len(lang) > 0 && (lang[0] == "sh" || lang[0] == "bash" || lang[0] == "shell")
			if marker != "" && !isShell {
				return nil, fmt.Errorf("%s:%d: skip marker above a block that is not sh", path, markerLine)
			}
			if isShell {
				cur = &shellBlock{line: n, skip: marker}
			} else {
				cur = nil
				for sc.Scan() { // skip over the other block
					n++
					if strings.HasPrefix(sc.Text(), "```") {
						break
					}
				}
			}
		}
		if marker != "" && markerLine != n {
			if cur == nil || cur.line != n {
				return nil, fmt.Errorf("%s:%d: skip marker not directly above a shell block", path, markerLine)
			}
			marker = ""
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: shell block never closed", path, cur.line)
	}
	return blocks, sc.Err()
}

// The README's shell examples work as written, against a running pusher
// with user 123 connected (the page of "Five minutes"): every ```sh block
// not marked <!-- test: skip (why) --> runs in its own bash -euo pipefail,
// with pusher and ./pusher at hand and the README's default addresses
// replaced by the test pusher's (README, Tests).
func TestREADMEShellExamples(t *testing.T) {
	blocks, err := readmeShellBlocks("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var run strings.Builder
	for _, b := range blocks {
		if b.skip == "" {
			run.WriteString(b.text)
		}
	}
	for _, must := range []string{"/v1/push", "pusher token ", "pusher pub ", "pusher online ", "pusher dlq list"} {
		if !strings.Contains(run.String(), must) {
			t.Errorf("no README example that runs has %q", must)
		}
	}

	p := startNode(t, func(c *server.Config) { c.APIKey = readmeAPIKey })
	page := harness.DialWS(t, p.httpAddr, "123")
	natsListen := strings.TrimPrefix(p.natsURL, "nats://")
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n%s=1 exec '%s' \"$@\"\n", runMainEnv, exe)
	if err := os.WriteFile(filepath.Join(dir, "pusher"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + dir,
		"PUSHER_NATS_LISTEN=" + natsListen,
		"PUSHER_HTTP_ADDR=" + p.httpAddr,
		"PUSHER_API_KEY=" + readmeAPIKey,
		"JWT_SECRET=" + testSecret,
	}
	addrs := strings.NewReplacer("127.0.0.1:8181", p.httpAddr, "127.0.0.1:4222", natsListen)

	ran := 0
	for _, b := range blocks {
		if b.skip != "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", addrs.Replace(b.text))
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("README.md:%d: %v\n%s--- output:\n%s", b.line, err, b.text, out)
			continue
		}
		t.Logf("README.md:%d ran:\n%s--- output:\n%s", b.line, b.text, out)
		ran++
	}
	if ran == 0 {
		t.Fatal("no README example ran")
	}
	// "Hello" appears on the page.
	if _, got := harness.Read(t, page, 5*time.Second); string(got) != "Hello" {
		t.Fatalf("the page got %q, want Hello", got)
	}
}

// The skip marker needs its reason and a shell block right below it.
func TestReadmeShellBlocksMarkers(t *testing.T) {
	tests := []struct {
		name, give string
		wantRun    []string // the blocks that run
		wantErr    string
	}{
		{name: "run and skip",
			give:    "```sh\na\n```\n<!-- test: skip (a server) -->\n```sh\nb\n```\n```bash\nc\n```\n```go\nd\n```\n",
			wantRun: []string{"a\n", "c\n"}},
		{name: "no reason", give: "<!-- test: skip () -->\n```sh\nb\n```\n", wantErr: "want <!-- test: skip (why) -->"},
		{name: "other marker", give: "<!-- test: only -->\n```sh\nb\n```\n", wantErr: "want <!-- test: skip (why) -->"},
		{name: "not above a block", give: "<!-- test: skip (x) -->\n\n```sh\nb\n```\n", wantErr: "not directly above"},
		{name: "above another language", give: "<!-- test: skip (x) -->\n```go\nb\n```\n", wantErr: "not sh"},
		{name: "unclosed", give: "```sh\na\n", wantErr: "never closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "README.md")
			if err := os.WriteFile(path, []byte(tt.give), 0o600); err != nil {
				t.Fatal(err)
			}
			blocks, err := readmeShellBlocks(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			var run []string
			for _, b := range blocks {
				if b.skip == "" {
					run = append(run, b.text)
				}
			}
			if err != nil || fmt.Sprint(run) != fmt.Sprint(tt.wantRun) {
				t.Fatalf("run %q, %v; want %q", run, err, tt.wantRun)
			}
		})
	}
}
