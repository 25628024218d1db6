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

// onlineGather is how long `pusher online` waits for more nodes after the
// first answer: NATS does not say how many nodes a request reached, so
// the answers that come within it are the nodes holding the user.
const onlineGather = 300 * time.Millisecond

// errOffline is `pusher online`'s answer for a user no node holds: exit 1.
var errOffline = errors.New("offline")

func runOnline(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("online", "pusher online U [--json]", env)
	nf := addNATSFlags(f, "NATS server URLs", defaultNATSURL)
	asJSON := f.Bool("json", "", false, "print each node's answer as a JSON line")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) != 1 {
		return usagef("online wants one uid")
	}
	uid := f.args()[0]
	if err := wire.ValidUID(uid); err != nil {
		return usageError{err}
	}
	nc, err := nf.connectClient()
	if err != nil {
		return err
	}
	defer nc.Close()
	answers, err := askOnline(ctx, nc, uid)
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
		fmt.Fprintf(env.stdout, "%s is online: %d connections on %d nodes\n", uid, total, len(answers))
		for _, a := range answers {
			fmt.Fprintf(env.stdout, "  %s\t%d\n", a.Node, a.Conns)
		}
	}
	return nil
}

// askOnline sends one pusher.online.<uid> request and gathers the
// answers: none when NATS answers "no responders" (no node holds uid).
func askOnline(ctx context.Context, nc *nats.Conn, uid string) ([]wire.OnlineAnswer, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(wire.OnlineSubject(uid), inbox, nil); err != nil {
		return nil, fmt.Errorf("ask %s: %w", wire.OnlineSubject(uid), err)
	}
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	var answers []wire.OnlineAnswer
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, nil // no node holds uid
		}
		if err != nil {
			if len(answers) > 0 && errors.Is(err, context.DeadlineExceeded) {
				return answers, nil // the gathering window closed
			}
			return nil, fmt.Errorf("no answer on %s: %w", wire.OnlineSubject(uid), err)
		}
		var a wire.OnlineAnswer
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			return nil, fmt.Errorf("answer %q on %s: %w", msg.Data, wire.OnlineSubject(uid), err)
		}
		answers = append(answers, a)
		if len(answers) == 1 {
			var stop context.CancelFunc
			ctx, stop = context.WithTimeout(ctx, onlineGather)
			defer stop()
		}
	}
}
