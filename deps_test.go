package main

import (
	"go/parser"
	gotoken "go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDeps keeps dependencies flowing one way: main wires everything;
// consumer -> hub <- ws; auth and logging are leaves. A package may import
// only the project packages listed for it (non-test files). Every package
// directory, nested ones too, must have a row.
func TestDeps(t *testing.T) {
	const module = "github.com/pusher-io/pusher/"
	allowed := map[string][]string{
		"auth":               nil,
		"logging":            nil,
		"hub":                nil,
		"wire":               nil,
		"natsserver":         nil,
		"web":                nil,
		"consumer":           {"hub", "logging", "wire"},
		"ws":                 {"hub", "auth", "logging", "wire", "ws/internal/intake"},
		"ws/internal/intake": nil,
		"e2e/netfault":       nil,
		"server":             {"api", "auth", "cluster", "consumer", "hub", "logging", "natsserver", "presence", "web", "wire", "ws"},
		"presence":           {"wire"},
		"cluster":            {"hub", "wire"},
		"api":                {"wire"},
		// A program, like main: it mints tokens, reads the streams, and
		// runs pusher through the e2e harness.
		"bench": {"auth", "consumer", "wire", "e2e/harness"},
		"e2e":   nil, // its tests are black-box: only the harness, behind a build tag
		// The black box's outside: contract names, dead letters, tokens.
		"e2e/harness": {"wire", "consumer", "auth"},
	}
	for _, pkg := range packageDirs(t) {
		files, _ := filepath.Glob(filepath.Join(pkg, "*.go"))
		ok, known := allowed[pkg]
		if !known {
			t.Errorf("package %s is not in TestDeps' table: decide what it may import", pkg)
			continue
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(gotoken.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				dep, isProject := strings.CutPrefix(path, module)
				if isProject && !slices.Contains(ok, dep) {
					t.Errorf("%s imports %s; %s may import only %v", f, dep, pkg, ok)
				}
			}
		}
	}
}

// packageDirs lists the module's package directories below the root
// (slash-separated, "e2e/harness"): those holding .go files, leaving out
// hidden directories, testdata and the default data dir.
func packageDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() || path == "." {
			return nil
		}
		if name := d.Name(); strings.HasPrefix(name, ".") || name == "testdata" || (path == "data" && name == "data") {
			return filepath.SkipDir
		}
		if files, _ := filepath.Glob(filepath.Join(path, "*.go")); len(files) > 0 {
			dirs = append(dirs, filepath.ToSlash(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no package directories found: run from the module root")
	}
	return dirs
}
