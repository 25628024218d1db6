package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/consumer"
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
	f := newFlagSet("pub", "pub U MESSAGE", env)
	nf := addNATSFlags(f, "NATS server URLs", defaultNATSURL)
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

func runKick(_ context.Context, env *environ, args []string) error {
	f := newFlagSet("kick", "pusher kick U", env)
	nf := addNATSFlags(f, "NATS server URLs", defaultNATSURL)
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) != 1 {
		return usagef("kick wants one uid")
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
	if err := nc.Publish(wire.KickSubject(uid), nil); err != nil {
		return fmt.Errorf("publish kick: %w", err)
	}
	if err := nc.FlushTimeout(clientTimeout); err != nil {
		return fmt.Errorf("flush kick: %w", err)
	}
	fmt.Fprintf(env.stdout, "kick sent for %s\n", uid)
	return nil
}

func runDLQ(ctx context.Context, env *environ, args []string) error {
	if len(args) == 0 {
		return usagef("dlq wants a subcommand: list or replay")
	}
	switch args[0] {
	case "list":
		return runDLQList(ctx, env, args[1:])
	case "replay":
		return runDLQReplay(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.stdout, "Usage: pusher dlq list [--uid U] [--json] | pusher dlq replay [--uid U] [--all]")
		return errHelp
	}
	return usagef("unknown dlq subcommand %q", args[0])
}

// dlqClient connects and returns the DLQ reader; close the conn when done.
func dlqClient(nf *natsFlags) (*nats.Conn, *consumer.DLQ, error) {
	nc, err := nf.connectClient()
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, consumer.NewDLQ(js), nil
}

func optionalUID(uid string) error {
	if uid == "" {
		return nil
	}
	if err := wire.ValidUID(uid); err != nil {
		return usageError{err}
	}
	return nil
}

// previewLen is how much of a payload the table shows.
const previewLen = 40

func runDLQList(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("dlq list", "pusher dlq list [--uid U] [--json]", env)
	nf := addNATSFlags(f, "NATS server URLs", defaultNATSURL)
	uid := f.String("uid", "", "", "only this user's dead letters")
	asJSON := f.Bool("json", "", false, "one JSON object per line instead of a table")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) > 0 {
		return usagef("dlq list takes no arguments, got %q", f.args())
	}
	if err := optionalUID(*uid); err != nil {
		return err
	}
	nc, dlq, err := dlqClient(nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	enc := json.NewEncoder(env.stdout)
	if !*asJSON {
		fmt.Fprintln(tw, "SEQ\tUID\tREASON\tDELIVERIES\tFAILED AT\tSIZE\tPREVIEW")
	}
	n := 0
	err = dlq.Each(ctx, *uid, func(dl consumer.DeadLetter, perr error) error {
		n++
		if *asJSON {
			return enc.Encode(deadLetterJSON(dl, perr))
		}
		reason := dl.Reason
		if perr != nil {
			reason = "MALFORMED"
		}
		failed := "-"
		if !dl.FailedAt.IsZero() {
			failed = dl.FailedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%s\n", dl.Seq, dl.UID, reason, dl.Deliveries, failed, len(dl.Data), preview(dl.Data))
		return nil
	})
	if !*asJSON {
		_ = tw.Flush()
		fmt.Fprintf(env.stderr, "%d dead letters\n", n)
	}
	if err != nil {
		return fmt.Errorf("list dead letters: %w", err)
	}
	return nil
}

type deadLetterLine struct {
	Seq             uint64    `json:"seq"`
	UID             string    `json:"uid"`
	Reason          string    `json:"reason"`
	Deliveries      int       `json:"deliveries"`
	FailedAt        time.Time `json:"failed_at"`
	OriginalSubject string    `json:"original_subject"`
	OriginalSeq     uint64    `json:"original_seq"`
	Size            int       `json:"size"`
	Data            string    `json:"data,omitempty"`        // the payload when it is UTF-8 text
	DataBase64      []byte    `json:"data_base64,omitempty"` // otherwise
	Error           string    `json:"error,omitempty"`       // set for malformed dead letters
}

func deadLetterJSON(dl consumer.DeadLetter, perr error) deadLetterLine {
	l := deadLetterLine{
		Seq: dl.Seq, UID: dl.UID, Reason: dl.Reason, Deliveries: dl.Deliveries, FailedAt: dl.FailedAt,
		OriginalSubject: dl.OriginalSubject, OriginalSeq: dl.OriginalSeq, Size: len(dl.Data),
	}
	if utf8.Valid(dl.Data) {
		l.Data = string(dl.Data)
	} else {
		l.DataBase64 = dl.Data
	}
	if perr != nil {
		l.Error = perr.Error()
	}
	return l
}

// preview is a one-line, bounded rendering of a payload for the table.
func preview(data []byte) string {
	if !utf8.Valid(data) {
		return fmt.Sprintf("<%d bytes binary>", len(data))
	}
	s := strings.Join(strings.Fields(string(data)), " ")
	if utf8.RuneCountInString(s) > previewLen {
		r := []rune(s)
		s = string(r[:previewLen]) + "…"
	}
	return strconv.Quote(s)
}

func runDLQReplay(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("dlq replay", "pusher dlq replay [--uid U] [--all]", env)
	nf := addNATSFlags(f, "NATS server URLs", defaultNATSURL)
	uid := f.String("uid", "", "", "replay this user's dead letters")
	all := f.Bool("all", "", false, "replay every user's dead letters")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) > 0 {
		return usagef("dlq replay takes no arguments, got %q", f.args())
	}
	if (*uid == "") == !*all {
		if *all {
			return usagef("give --uid U or --all, not both")
		}
		return usagef("give --uid U, or --all to replay every user's dead letters")
	}
	if err := optionalUID(*uid); err != nil {
		return err
	}
	nc, dlq, err := dlqClient(nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	progress := func(n int) {
		if n%1000 == 0 {
			fmt.Fprintf(env.stderr, "replayed %d...\n", n)
		}
	}
	res, err := dlq.Replay(ctx, *uid, consumer.AllReplayable, progress, nil)
	fmt.Fprintf(env.stdout, "replayed %d dead letters", res.Replayed)
	if res.Expired > 0 {
		fmt.Fprintf(env.stdout, ", removed %d past their Pusher-TTL", res.Expired)
	}
	if res.Skipped > 0 {
		fmt.Fprintf(env.stdout, ", skipped %d malformed", res.Skipped)
	}
	fmt.Fprintln(env.stdout)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("replay: no %s stream; has pusher run against this NATS? %w", wire.DLQStreamName, err)
		}
		return fmt.Errorf("replay: %w", err)
	}
	return nil
}
