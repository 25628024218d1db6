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
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError marks a mistake in how pusher was called (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitCode maps run's error to the exit status, printing one line to stderr:
// 0 ok (and --help), 1 failure, 2 usage.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pusher: %v (see pusher --help)\n", err)
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
	stdout, stderr io.Writer
}

func commands() []command {
	return []command{
		{"serve", "run the push server (the default)", runServe},
		{"token", "print a development JWT signed with JWT_SECRET", runToken},
		{"pub", "publish a message to a user through JetStream", runPub},
		{"dlq", "list or replay dead letters (dlq list | dlq replay)", runDLQ},
		{"kick", "close every connection of a user, on every node", runKick},
		{"online", "is a user connected? the nodes holding them (exit 1 when offline)", runOnline},
	}
}

// run is pusher minus the process: it is what tests call.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	env := &environ{getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		return runServe(ctx, env, nil)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printOverview(stdout)
		return errHelp
	}
	if len(args[0]) > 0 && args[0][0] == '-' {
		return runServe(ctx, env, args) // flags only: serve
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, env, args[1:])
		}
	}
	return usagef("unknown command %q", args[0])
}

func printOverview(w io.Writer) {
	fmt.Fprintln(w, "pusher: NATS JetStream to WebSocket push worker")
	fmt.Fprintln(w, "\nUsage: pusher [command] [flags]   (no command: serve)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag has an environment variable; 'pusher COMMAND --help' lists both.")
	fmt.Fprintln(w, "Exit status: 0 ok, 1 failure, 2 usage.")
}
