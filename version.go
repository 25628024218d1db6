package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the release this binary was built as, set at build time
// (make build VERSION=v1.2.3 passes -ldflags "-X main.version=v1.2.3").
// Unset, the module version Go recorded is used: the tag with go install
// pkg@v1.2.3, a pseudo-version from git with go build.
var version string

// buildInfo is what `pusher version` prints.
type buildInfo struct {
	version, revision, goVersion string
	modified                     bool
}

func readBuildInfo() buildInfo {
	b := buildInfo{version: version, revision: "unknown", goVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
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
	if b.version == "" {
		b.version = "devel"
	}
	modified := ""
	if b.modified {
		modified = " (modified)"
	}
	fmt.Fprintf(env.stdout, "pusher %s\nrevision %s%s\n%s %s/%s\n", b.version, b.revision, modified, b.goVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}
