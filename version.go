package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/pusher-io/pusher/server"
)

// version is the release this binary was built as, set at build time
// (make build VERSION=v1.2.3 passes -ldflags "-X main.version=v1.2.3").
// Unset, the module version the go command stamped is used: the tag with
// go install pkg@v1.2.3, a pseudo-version from git with go build in a
// clone, "(devel)" without either.
var version string

// readBuildInfo is what `pusher version` prints: the build the server
// reports (server.ReadBuild), with version applied last.
func readBuildInfo() server.Build {
	b := server.ReadBuild()
	if version != "" {
		b.Version = version
	}
	return b
}

func runVersion(_ context.Context, env *environ, args []string) error {
	f := newFlagSet("version", "pusher version   (or pusher --version)", env)
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) > 0 {
		return usagef("version takes no arguments, got %q", f.args())
	}
	b := readBuildInfo()
	fmt.Fprintf(env.stdout, "pusher %s\nrevision %s\n%s %s/%s\n", b.Version, b.Revision, b.GoVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}
