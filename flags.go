package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// errHelp is returned after --help printed usage; it exits 0.
var errHelp = flag.ErrHelp

// flagSet is a flag.FlagSet whose flags default to an environment
// variable, so every option has both, and --help names both.
type flagSet struct {
	fs     *flag.FlagSet
	getenv func(string) string
	errs   []error // bad environment values, reported by parse
}

func newFlagSet(name, synopsis string, env *environ) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &flagSet{fs: fs, getenv: env.getenv}
	fs.Usage = func() {
		w := env.stdout
		fmt.Fprintf(w, "Usage: %s\n\nFlags (each also set by the environment variable shown):\n", synopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return f
}

// parse parses args; --help prints usage and returns errHelp, anything
// else wrong is a usage error.
func (f *flagSet) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.fs.Usage()
			return errHelp
		}
		return usageError{err}
	}
	if len(f.errs) > 0 {
		return usageError{errors.Join(f.errs...)}
	}
	return nil
}

func (f *flagSet) args() []string { return f.fs.Args() }

func (f *flagSet) lookup(envName, def string) string {
	if envName == "" {
		return def
	}
	if v, ok := f.nonEmpty(envName); ok {
		return v
	}
	return def
}

func (f *flagSet) nonEmpty(envName string) (string, bool) {
	v := strings.TrimSpace(f.getenv(envName))
	return v, v != ""
}

func envNote(envName string) string {
	if envName == "" {
		return ""
	}
	return " [$" + envName + "]"
}

func (f *flagSet) String(name, envName, def, usage string) *string {
	return f.fs.String(name, f.lookup(envName, def), usage+envNote(envName))
}

// Secret is String whose value --help never prints.
func (f *flagSet) Secret(name, envName, usage string) *string {
	p := new(string)
	*p = f.lookup(envName, "")
	f.fs.Var((*secretValue)(p), name, usage+envNote(envName))
	return p
}

type secretValue string

func (s *secretValue) String() string     { return "" }
func (s *secretValue) Set(v string) error { *s = secretValue(v); return nil }

func (f *flagSet) Int(name, envName string, def int, usage string) *int {
	if v, ok := f.nonEmpty(envName); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: not an integer", envName, v))
		} else {
			def = n
		}
	}
	return f.fs.Int(name, def, usage+envNote(envName))
}

func (f *flagSet) Bool(name, envName string, def bool, usage string) *bool {
	if v, ok := f.nonEmpty(envName); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: not a boolean", envName, v))
		} else {
			def = b
		}
	}
	return f.fs.Bool(name, def, usage+envNote(envName))
}

func (f *flagSet) Duration(name, envName string, def time.Duration, usage string) *time.Duration {
	if v, ok := f.nonEmpty(envName); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: not a duration", envName, v))
		} else {
			def = d
		}
	}
	return f.fs.Duration(name, def, usage+envNote(envName))
}

// List is a comma-separated list flag.
func (f *flagSet) List(name, envName, def, usage string) *string {
	return f.String(name, envName, def, usage+" (comma-separated)")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, p := range splitList(s) {
		d, err := time.ParseDuration(p)
		if err != nil {
			return nil, fmt.Errorf("duration %q: %w", p, err)
		}
		out = append(out, d)
	}
	return out, nil
}
