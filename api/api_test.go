package api

import (
	"encoding/json"
	"testing"
)

var parseTests = []struct {
	name string
	give string
	ok   bool
}{
	{"ok", `{"uid":"123","message":"Hello"}`, true},
	{"empty message", `{"uid":"123","message":""}`, true},
	{"no message", `{"uid":"123"}`, false},
	{"null message", `{"uid":"123","message":null}`, false},
	{"escaped", `{"uid":"1\u00e9","message":"\n\"<b>\""}`, true},
	{"unknown field", `{"uid":"1","message":"m","x":1}`, false},
	{"number message", `{"uid":"1","message":5}`, false},
	{"two objects", `{"uid":"1","message":"a"}{"uid":"2","message":"b"}`, false},
	{"array", `[]`, false},
	{"truncated", `{"uid":"1"`, false},
	{"empty", ``, false},
}

func TestParsePush(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parsePush([]byte(tt.give))
			if (err == nil) != tt.ok {
				t.Fatalf("parsePush(%s) = %v, want ok=%v", tt.give, err, tt.ok)
			}
		})
	}
}

// FuzzParsePush: no panic, and an accepted body re-encodes to the same
// request (nothing was invented or dropped).
func FuzzParsePush(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.give))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parsePush(body)
		if err != nil {
			if err != errBadBody && err != errNoMessage {
				t.Fatalf("error %v leaks detail", err)
			}
			return
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parsePush(again)
		if err != nil || back != req {
			t.Fatalf("round trip %q -> %+v -> %+v (%v)", body, req, back, err)
		}
	})
}
