//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/pusher-io/pusher/e2e/harness"
)

// bins builds pusher and nats-server once for every test in the package.
var bins *harness.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pusher-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins = &harness.Builds{Dir: dir}
	code := m.Run()
	_ = os.RemoveAll(dir)
	// Every client, publisher and process waiter must be gone by now;
	// what the tests' cleanups left running is a leak.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// uidRange is prefix0 .. prefix(n-1).
func uidRange(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// faultEnv is the environment of the fault tests' pushers: quick
// redelivery after a crash, no per-message log line, no browser page,
// plus extra on top.
func faultEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"PUSHER_ACK_WAIT":      "2s",
		"PUSHER_BACKOFF":       "100ms,200ms",
		"PUSHER_LOG_DELIVERED": "false",
		"PUSHER_UI":            "false",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}
