package main

import (
	"bytes"
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
//
// Its parse reads flags anywhere among the arguments (`pub U MESSAGE
// --ttl 5m` is `pub --ttl 5m U MESSAGE`), and `--` ends the flags. A
// mistake is one usage error naming the flag and what it wants; usage is
// printed only for --help.
type flagSet struct {
	fs       *flag.FlagSet
	name     string // the command, as in "pusher NAME --help"
	synopsis string
	getenv   func(string) string
	stdout   io.Writer
	errs     []error  // bad environment values, reported by parse
	pos      []string // the positional arguments, set by parse
}

func newFlagSet(name, synopsis string, env *environ) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // parse prints usage itself, once, and only for --help
	return &flagSet{fs: fs, name: name, synopsis: synopsis, getenv: env.getenv, stdout: env.stdout}
}

// printUsage writes the synopsis and every flag, spelled --name as the
// README and the errors spell them.
func (f *flagSet) printUsage() {
	fmt.Fprintf(f.stdout, "Usage: %s\n", f.synopsis)
	var defaults bytes.Buffer
	f.fs.SetOutput(&defaults)
	f.fs.PrintDefaults()
	f.fs.SetOutput(io.Discard)
	if defaults.Len() == 0 {
		return
	}
	fmt.Fprintln(f.stdout, "\nFlags (each also set by the environment variable shown):")
	for line := range strings.Lines(defaults.String()) {
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			line = "  --" + rest
		}
		fmt.Fprint(f.stdout, line)
	}
}

// parse reads args: flags wherever they stand, the rest positional (see
// args). --help prints usage and returns errHelp; anything wrong is a
// usage error of this command.
func (f *flagSet) parse(args []string) error {
	if err := f.parseArgs(args); err != nil {
		if errors.Is(err, errHelp) {
			f.printUsage()
			return errHelp
		}
		return inCommand(f.name, usageError{err})
	}
	if len(f.errs) > 0 {
		msgs := make([]string, len(f.errs))
		for i, err := range f.errs {
			msgs[i] = err.Error()
		}
		return inCommand(f.name, usageError{errors.New(strings.Join(msgs, "; "))})
	}
	return nil
}

func (f *flagSet) parseArgs(args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			f.pos = append(f.pos, args[i+1:]...)
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			f.pos = append(f.pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if name == "h" || name == "help" {
			return errHelp
		}
		fl := f.fs.Lookup(name)
		if name == "" || fl == nil {
			if len(f.pos) > 0 {
				return fmt.Errorf("unknown flag %s; to pass it as an argument, put -- before it", a)
			}
			return fmt.Errorf("unknown flag %s", a)
		}
		switch {
		case hasValue:
		case isBoolFlag(fl):
			value = "true"
		case i+1 < len(args):
			i++
			value = args[i]
		default:
			return fmt.Errorf("--%s wants %s", name, valueHint(fl))
		}
		if err := f.fs.Set(name, value); err != nil {
			return fmt.Errorf("--%s wants %s, got %q", name, valueHint(fl), value)
		}
	}
	return nil
}

// args are the positional arguments parse found.
func (f *flagSet) args() []string { return f.pos }

func isBoolFlag(fl *flag.Flag) bool {
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// valueHint says what a flag's value must look like, from its type.
func valueHint(fl *flag.Flag) string {
	var v any
	if g, ok := fl.Value.(flag.Getter); ok {
		v = g.Get()
	}
	switch v.(type) {
	case time.Duration:
		return "a duration such as 5m"
	case int:
		return "an integer such as 5"
	case bool:
		return "true or false"
	}
	return "a value"
}

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
	if envName == "" {
		return "", false
	}
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
