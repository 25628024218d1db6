package main

import (
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDeps keeps dependencies flowing one way: main wires everything;
// consumer -> hub <- ws; auth and logging are leaves. A package may import
// only the project packages listed for it (non-test files).
func TestDeps(t *testing.T) {
	const module = "github.com/pusher-io/pusher/"
	allowed := map[string][]string{
		"auth":       nil,
		"logging":    nil,
		"hub":        nil,
		"wire":       nil,
		"natsserver": nil,
		"web":        nil,
		"consumer":   {"hub", "wire"},
		"ws":         {"hub", "auth", "wire"},
		"cluster":    {"hub", "wire"},
		"api":        {"wire"},
		"server":     {"api", "auth", "cluster", "consumer", "hub", "natsserver", "web", "wire", "ws"},
		"bench":      {"auth", "consumer", "wire"}, // a program, like main: it mints tokens and reads the streams
	}
	dirs, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "data" {
			continue
		}
		pkg := d.Name()
		files, _ := filepath.Glob(filepath.Join(pkg, "*.go"))
		if len(files) == 0 {
			continue
		}
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
