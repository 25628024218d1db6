package server

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Build says which binary runs: what pusher.ready logs and
// pusher_build_info exports.
type Build struct {
	// Version is the main module's version as the go command stamped it:
	// a tag (v1.4.0), a pseudo-version from the VCS, or "(devel)".
	Version string
	// Revision is the VCS commit, with "-dirty" when the tree had local
	// changes; "unknown" when the binary was built without VCS
	// information (go run, go test, -buildvcs=false).
	Revision string
	// GoVersion is the toolchain that built it (go1.26.8).
	GoVersion string
}

// ReadBuild reads the running binary's build information.
func ReadBuild() Build {
	b := Build{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if info.Main.Version != "" {
		b.Version = info.Main.Version
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && b.Revision != "unknown" {
		b.Revision += "-dirty"
	}
	return b
}

// buildInfoGauge is pusher_build_info: always 1, its labels say which
// binary runs, so a dashboard can show a rollout and join it to the
// other series.
func buildInfoGauge(b Build) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pusher_build_info",
		Help: "Always 1; the labels name the running binary's version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion,
		},
	})
	g.Set(1)
	return g
}
