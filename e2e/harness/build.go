package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// natsServerPkg is the nats-server main package; its version is the one
// go.mod requires.
const natsServerPkg = "github.com/nats-io/nats-server/v2"

// ModuleRoot is the directory of the go.mod the go command finds from the
// working directory: pusher's, from anywhere inside the repository.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the pusher module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// BuildPusher compiles the module's root package (pusher) to dir/pusher,
// without -race: it is the program under test, not the test.
func BuildPusher(ctx context.Context, dir string) (string, error) {
	return goBuild(ctx, dir, "pusher", ".")
}

// BuildNATSServer compiles nats-server, at the version go.mod requires, to
// dir/nats-server.
func BuildNATSServer(ctx context.Context, dir string) (string, error) {
	return goBuild(ctx, dir, "nats-server", natsServerPkg)
}

// goBuild runs `go build -o dir/name pkg` in the module root. When go.sum
// lacks part of pkg's build list (nats-server's main package needs more
// than the library pusher imports), it builds again with -mod=mod against
// copies of go.mod and go.sum, so the module's own files never change.
func goBuild(ctx context.Context, dir, name, pkg string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	build := func(extra ...string) ([]byte, error) {
		args := append([]string{"build"}, extra...)
		args = append(args, "-o", out, pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		return cmd.CombinedOutput()
	}
	msg, err := build()
	if err != nil && bytes.Contains(msg, []byte("go mod")) {
		modDir := filepath.Join(dir, name+"-modfile")
		if err := copyFiles(root, modDir, "go.mod", "go.sum"); err != nil {
			return "", err
		}
		msg, err = build("-mod=mod", "-modfile="+filepath.Join(modDir, "go.mod"))
	}
	if err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}
	return out, nil
}

// copyFiles copies names from src to dst, creating dst.
func copyFiles(src, dst string, names ...string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Builds compiles pusher and nats-server at most once each per process,
// into Dir, for test binaries whose every test needs the same two
// binaries. The owner (TestMain) creates Dir and removes it after the
// tests. Safe for concurrent use.
type Builds struct {
	Dir string

	mu     sync.Mutex
	pusher string // guarded by mu; built when not empty
	nats   string // guarded by mu
}

// Pusher returns the pusher binary, building it on the first call.
func (b *Builds) Pusher(ctx context.Context) (string, error) {
	return b.once(ctx, &b.pusher, BuildPusher)
}

// NATSServer returns the nats-server binary, building it on the first call.
func (b *Builds) NATSServer(ctx context.Context) (string, error) {
	return b.once(ctx, &b.nats, BuildNATSServer)
}

func (b *Builds) once(ctx context.Context, bin *string, build func(context.Context, string) (string, error)) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if *bin != "" {
		return *bin, nil
	}
	path, err := build(ctx, b.Dir)
	if err != nil {
		return "", err
	}
	*bin = path
	return path, nil
}

// PusherBin is Pusher for tests.
func (b *Builds) PusherBin(t testing.TB) string {
	t.Helper()
	bin, err := b.Pusher(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// NATSServerBin is NATSServer for tests.
func (b *Builds) NATSServerBin(t testing.TB) string {
	t.Helper()
	bin, err := b.NATSServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
