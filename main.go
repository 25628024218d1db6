// Command pusher delivers messages published to NATS JetStream on push.<uid>
// to that user's authenticated WebSocket connections.
//
// main only wires: it reads flags and environment, builds each package's
// collaborators in order and passes them in. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError marks a mistake in how pusher was called (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// commandError names the command a usage error came from, so that its
// message points to that command's --help.
type commandError struct {
	cmd string
	err error
}

func (e commandError) Error() string { return e.err.Error() }
func (e commandError) Unwrap() error { return e.err }

// inCommand names cmd in a usage error that names no command yet (the
// innermost, most precise name stays); other errors pass unchanged.
func inCommand(cmd string, err error) error {
	var ue usageError
	var ce commandError
	if !errors.As(err, &ue) || errors.As(err, &ce) {
		return err
	}
	return commandError{cmd: cmd, err: err}
}

// exitCode maps run's error to the exit status, printing one line to stderr:
// 0 ok (and --help), 1 failure, 2 usage.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		help := "pusher --help"
		if ce := (commandError{}); errors.As(err, &ce) {
			help = "pusher " + ce.cmd + " --help"
		}
		fmt.Fprintf(stderr, "pusher: %v (see %s)\n", err, help)
		return 2
	default:
		fmt.Fprintf(stderr, "pusher: %v\n", err)
		return 1
	}
}

// command is one subcommand: its name, a line for the overview, and its
// runner, which owns its flag set.
type command struct {
	name, summary string
	run           func(ctx context.Context, env *environ, args []string) error
}

// environ is what every subcommand gets from the outside world.
type environ struct {
	getenv         func(string) string
	stdin          io.Reader
	interactive    bool // stdin is a terminal, so a command may ask a question
	stdout, stderr io.Writer
}

func commands() []command {
	return []command{
		{"serve", "run the push server (the default)", runServe},
		{"token", "print a development JWT signed with JWT_SECRET", runToken},
		{"pub", "publish a message to a user through JetStream", runPub},
		{"dlq", "list, replay or delete dead letters (dlq list | replay | delete)", runDLQ},
		{"kick", "close every connection of a user, on every node", runKick},
		{"online", "is a user connected? the nodes holding them (exit 1 when offline)", runOnline},
		{"version", "print the version, the source revision and the Go version", runVersion},
	}
}

// run is pusher minus the process: it is what tests call.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	env := &environ{getenv: getenv, stdin: stdin, interactive: isTerminal(stdin), stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		return runServe(ctx, env, nil)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printOverview(stdout)
		return errHelp
	case "help": // pusher help COMMAND is pusher COMMAND --help
		if len(args) == 1 {
			printOverview(stdout)
			return errHelp
		}
		args = []string{args[1], "--help"}
	case "-version", "--version":
		return runVersion(ctx, env, args[1:])
	}
	if len(args[0]) > 0 && args[0][0] == '-' {
		return inCommand("serve", runServe(ctx, env, args)) // flags only: serve
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return inCommand(c.name, c.run(ctx, env, args[1:]))
		}
	}
	return usagef("unknown command %q", args[0])
}

// isTerminal reports whether r is a terminal, where a person can answer a
// question: a file that is one (not /dev/null, a pipe or a file), or a
// reader that says it is (tests).
func isTerminal(r io.Reader) bool {
	switch r := r.(type) {
	case *os.File:
		return fileIsTerminal(r)
	case interface{ IsTerminal() bool }:
		return r.IsTerminal()
	}
	return false
}

func printOverview(w io.Writer) {
	fmt.Fprintln(w, "pusher: NATS JetStream to WebSocket push worker")
	fmt.Fprintln(w, "\nUsage: pusher [command] [flags]   (no command: serve)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag has an environment variable; 'pusher COMMAND --help' lists both.")
	fmt.Fprintln(w, "Flags may follow the arguments; -- ends the flags.")
	fmt.Fprintln(w, "Exit status: 0 ok, 1 failure, 2 usage.")
}
