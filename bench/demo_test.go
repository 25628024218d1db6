package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDemoLinesCountsFromAnOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.log")
	before := "send message: {\"uid\":\"b0\",\"message\":\"old\"}\n"
	after := "send message: {\"uid\":\"b1\",\"message\":\"a\"}\n" +
		"send message: {\"uid\":\"b2\",\"message\":\"b\"}\n" +
		"send message: {\"uid\":\"b2\",\"message\":\"b\"}, error: write: broken pipe\n" +
		"2026/11/30 12:00:00 connection close:  1006 \n"
	if err := os.WriteFile(path, []byte(before+after), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := (&demoProc{logPath: path}).readLines(int64(len(before)))
	if err != nil {
		t.Fatal(err)
	}
	if l.sent != 2 || l.failed != 1 || l.other != 1 {
		t.Errorf("%s; want send=2 failed=1 other=1", l)
	}
}
