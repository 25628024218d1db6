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
		"auth":               nil,
		"logging":            nil,
		"hub":                nil,
		"wire":               nil,
		"natsserver":         nil,
		"web":                nil,
		"consumer":           {"hub", "wire"},
		"ws":                 {"hub", "auth", "wire", "ws/internal/intake"},
		"ws/internal/intake": nil,
		"e2e/netfault":       nil,
		"cluster":            {"hub", "wire"},
		"api":                {"wire"},
		"server":             {"api", "auth", "cluster", "consumer", "hub", "natsserver", "web", "wire", "ws"},
		"bench":              {"auth", "consumer", "wire"}, // a program, like main: it mints tokens and reads the streams
	}
	var pkgs []string // every directory below the root with Go files
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || path == "." {
			return err
		}
		if name := d.Name(); strings.HasPrefix(name, ".") || name == "testdata" || path == "data" {
			return filepath.SkipDir
		}
		if files, _ := filepath.Glob(filepath.Join(path, "*.go")); len(files) > 0 {
			pkgs = append(pkgs, filepath.ToSlash(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range pkgs {
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
