package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/wire"
)

// gatherWindow is how long a request to every node (pusher online,
// pusher kick) waits for more answers after the first: NATS does not say
// how many nodes a request reached, so the answers that come within it
// are the nodes'.
const gatherWindow = 300 * time.Millisecond

// errOffline is `pusher online`'s answer for a user no node holds: exit 1.
var errOffline = errors.New("offline")

func runOnline(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("online", "pusher online [--json] U", env)
	nf := addClientNATSFlags(f)
	asJSON := f.Bool("json", "", false, "print each node's answer as a JSON line")
	uid, nc, err := uidCommand(f, nf, args)
	if err != nil {
		return err
	}
	defer nc.Close()
	answers, err := gather[wire.OnlineAnswer](ctx, nc, wire.OnlineSubject(uid))
	if err != nil {
		return err
	}
	if len(answers) == 0 {
		return fmt.Errorf("%s is %w", uid, errOffline)
	}
	total := 0
	for _, a := range answers {
		total += a.Conns
		if *asJSON {
			b, _ := json.Marshal(a)
			fmt.Fprintln(env.stdout, string(b))
		}
	}
	if !*asJSON {
		fmt.Fprintf(env.stdout, "%s is online: %s on %s\n", uid, count(total, "connection"), count(len(answers), "node"))
		for _, a := range answers {
			fmt.Fprintf(env.stdout, "  %s\t%d\n", a.Node, a.Conns)
		}
	}
	return nil
}

// isOnline asks pusher.online.<uid> and takes the first answer: some node
// holds uid. NATS's "no responders" means none does.
func isOnline(ctx context.Context, nc *nats.Conn, uid string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	_, err := nc.RequestWithContext(ctx, wire.OnlineSubject(uid), nil)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, nats.ErrNoResponders):
		return false, nil
	}
	return false, fmt.Errorf("ask %s: %w", wire.OnlineSubject(uid), err)
}

// gather sends one request on subject to every node listening and
// decodes each answer as a T: none when NATS answers "no responders";
// after the first, those that come within gatherWindow.
func gather[T any](ctx context.Context, nc *nats.Conn, subject string) ([]T, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("ask %s: %w", subject, err)
	}
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	var answers []T
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, nil // nobody listens
		}
		if err != nil {
			if len(answers) > 0 && errors.Is(err, context.DeadlineExceeded) {
				return answers, nil // the gathering window closed
			}
			return nil, fmt.Errorf("no answer on %s: %w", subject, err)
		}
		var a T
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			return nil, fmt.Errorf("answer %q on %s: %w", msg.Data, subject, err)
		}
		answers = append(answers, a)
		if len(answers) == 1 {
			var stop context.CancelFunc
			ctx, stop = context.WithTimeout(ctx, gatherWindow)
			defer stop()
		}
	}
}
