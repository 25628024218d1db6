package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the release this binary was built as, set at build time
// (make build VERSION=v1.2.3 passes -ldflags "-X main.version=v1.2.3").
// Unset, the module version the go command stamped is used: the tag with
// go install pkg@v1.2.3, a pseudo-version from git with go build in a
// clone, "(devel)" without either.
var version string

// buildInfo is what `pusher version` prints.
type buildInfo struct {
	version   string // version, or the stamped module version, or "(devel)"
	revision  string // the VCS commit, "-dirty" with local changes; "unknown" without VCS information (go run, go test)
	goVersion string
}

func readBuildInfo() buildInfo {
	b := buildInfo{version: "(devel)", revision: "unknown", goVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			b.version = info.Main.Version
		}
		dirty := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.revision = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && b.revision != "unknown" {
			b.revision += "-dirty"
		}
	}
	if version != "" {
		b.version = version
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
	fmt.Fprintf(env.stdout, "pusher %s\nrevision %s\n%s %s/%s\n", b.version, b.revision, b.goVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}
