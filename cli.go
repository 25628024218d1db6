package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/wire"
)

// clientTimeout bounds each client subcommand's NATS round trips.
const clientTimeout = 10 * time.Second

func runToken(_ context.Context, env *environ, args []string) error {
	f := newFlagSet("token", "pusher token --uid U [--ttl 24h]", env)
	uid := f.String("uid", "PUSHER_TOKEN_UID", "", "user id the token is for (required)")
	ttl := f.Duration("ttl", "PUSHER_TOKEN_TTL", 24*time.Hour, "token lifetime")
	secret := f.Secret("jwt-secret", "JWT_SECRET", "HS256 secret to sign with")
	if err := f.parse(args); err != nil {
		return err
	}
	if *uid == "" && len(f.args()) == 1 {
		*uid = f.args()[0]
	} else if len(f.args()) > 0 {
		return usagef("token takes --uid U, got extra arguments %q", f.args())
	}
	if *uid == "" {
		return usagef("--uid is required")
	}
	if err := wire.ValidUID(*uid); err != nil {
		return usageError{err}
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive")
	}
	key := *secret
	if key == "" {
		key = auth.DevSecret
		fmt.Fprintln(env.stderr, "pusher: warning: JWT_SECRET is not set; signing with the public development secret (accepted only by a pusher with embedded NATS and no JWT_SECRET)")
	}
	tok, err := auth.Sign([]byte(key), *uid, *ttl, time.Now())
	if err != nil {
		return fmt.Errorf("sign token: %w", err)
	}
	fmt.Fprintln(env.stdout, tok)
	return nil
}

func runPub(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("pub", "pusher pub [--ttl D] [--offline drop|store] [--id ID] U MESSAGE", env)
	nf := addClientNATSFlags(f)
	msgID := f.String("id", "", "", "Nats-Msg-Id for de-duplication within 2 minutes")
	ttl := f.String("ttl", "", "", "Pusher-TTL: drop the message once it is this old (a duration, or seconds)")
	offline := f.String("offline", "", "", "Pusher-Offline: drop (when the user is offline) or store (the default)")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) != 2 {
		return usagef("pub wants a uid and a message, got %d arguments", len(f.args()))
	}
	uid, message := f.args()[0], f.args()[1]
	if err := wire.ValidUID(uid); err != nil {
		return usageError{err}
	}
	msg := nats.NewMsg(wire.PushSubject(uid))
	msg.Data = []byte(message)
	// pusher would ignore a malformed policy with a warning; here the
	// person typing it can fix it.
	if *ttl != "" {
		if _, err := wire.ParseTTL(*ttl); err != nil {
			return usageError{err}
		}
		msg.Header.Set(wire.HeaderTTL, *ttl)
	}
	if *offline != "" {
		if _, err := wire.ParseOffline(*offline); err != nil {
			return usageError{err}
		}
		msg.Header.Set(wire.HeaderOffline, *offline)
	}
	nc, err := nf.connectClient()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	var opts []jetstream.PublishOpt
	if *msgID != "" {
		opts = append(opts, jetstream.WithMsgID(*msgID))
	}
	ack, err := js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", wire.PushSubject(uid), err)
	}
	fmt.Fprintf(env.stdout, "published %s seq %d\n", wire.PushSubject(uid), ack.Sequence)
	return nil
}

func runKick(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("kick", "pusher kick U", env)
	nf := addClientNATSFlags(f)
	uid, nc, err := uidCommand(f, nf, args)
	if err != nil {
		return err
	}
	defer nc.Close()
	answers, err := gather[wire.KickAnswer](ctx, nc, wire.KickSubject(uid))
	if err != nil {
		return fmt.Errorf("kick %s: %w", uid, err)
	}
	closed, nodes := 0, 0
	for _, a := range answers {
		if a.Closed > 0 {
			closed += a.Closed
			nodes++
		}
	}
	if closed == 0 {
		// Not a failure: whoever is to be logged out is.
		answered := "no pusher node answered"
		if len(answers) > 0 {
			answered = count(len(answers), "node") + " answered"
		}
		fmt.Fprintf(env.stdout, "no connection of %s on any node (%s)\n", uid, answered)
		return nil
	}
	fmt.Fprintf(env.stdout, "closed %s of %s on %s\n", count(closed, "connection"), uid, count(nodes, "node"))
	for _, a := range answers {
		if a.Closed > 0 {
			fmt.Fprintf(env.stdout, "  %s\t%d\n", a.Node, a.Closed)
		}
	}
	return nil
}

// count is n and noun, plural unless n is 1: "1 node", "3 nodes".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// uidCommand is the start of a command that takes one uid and asks the
// nodes about it (kick, online): parse f, check the uid, connect.
func uidCommand(f *flagSet, nf *natsFlags, args []string) (string, *nats.Conn, error) {
	if err := f.parse(args); err != nil {
		return "", nil, err
	}
	if len(f.args()) != 1 {
		return "", nil, usagef("%s wants one uid", f.name)
	}
	uid := f.args()[0]
	if err := wire.ValidUID(uid); err != nil {
		return "", nil, usageError{err}
	}
	nc, err := nf.connectClient()
	return uid, nc, err
}
