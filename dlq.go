package main

import (
	"bufio"
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

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

const dlqUsage = `Usage:
  pusher dlq list [--uid U] [--json]
  pusher dlq replay (--uid U | --all) [--force]
  pusher dlq delete (--seq N | --uid U) [--older-than D] [--yes]

'pusher dlq SUBCOMMAND --help' lists each one's flags.`

func runDLQ(ctx context.Context, env *environ, args []string) error {
	if len(args) == 0 {
		return usagef("dlq wants a subcommand: list, replay or delete")
	}
	switch args[0] {
	case "list":
		return inCommand("dlq list", runDLQList(ctx, env, args[1:]))
	case "replay":
		return inCommand("dlq replay", runDLQReplay(ctx, env, args[1:]))
	case "delete":
		return inCommand("dlq delete", runDLQDelete(ctx, env, args[1:]))
	case "-h", "--help", "help":
		fmt.Fprintln(env.stdout, dlqUsage)
		return errHelp
	}
	return usagef("unknown dlq subcommand %q", args[0])
}

// dlqClient checks uid (a usage error; "" is none), then connects and
// returns the DLQ reader; close the conn when done.
func dlqClient(nf *natsFlags, uid string) (*nats.Conn, *consumer.DLQ, error) {
	if err := optionalUID(uid); err != nil {
		return nil, nil, err
	}
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

// noDLQ explains a missing PUSH_DLQ stream.
func noDLQ(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no %s stream; has pusher run against this NATS? %w", wire.DLQStreamName, err)
	}
	return err
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
	nf := addClientNATSFlags(f)
	uid := f.String("uid", "", "", "only this user's dead letters")
	asJSON := f.Bool("json", "", false, "one JSON object per line instead of a table")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) > 0 {
		return usagef("dlq list takes no arguments, got %q", f.args())
	}
	nc, dlq, err := dlqClient(nf, *uid)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	enc := json.NewEncoder(env.stdout)
	enc.SetEscapeHTML(false)
	if !*asJSON {
		fmt.Fprintln(tw, "SEQ\tORIGINAL SEQ\tUID\tREASON\tDELIVERIES\tFAILED AT\tSIZE\tPREVIEW")
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
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%s\t%d\t%s\n", dl.Seq, dl.OriginalSeq, dl.UID, reason, dl.Deliveries, failed, len(dl.Data), preview(dl.Data))
		return nil
	})
	if !*asJSON {
		_ = tw.Flush()
		fmt.Fprintln(env.stderr, count(n, "dead letter"))
	}
	if err != nil {
		return fmt.Errorf("list dead letters: %w", noDLQ(err))
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
	f := newFlagSet("dlq replay", "pusher dlq replay (--uid U | --all) [--force]", env)
	nf := addClientNATSFlags(f)
	uid := f.String("uid", "", "", "replay this user's dead letters")
	all := f.Bool("all", "", false, "replay the dead letters of every user who is online")
	force := f.Bool("force", "", false, "replay to users who are offline too (their messages are dead-lettered again, deliveries counted from 1)")
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
		return usagef("give --uid U, or --all to replay every online user's dead letters")
	}
	nc, dlq, err := dlqClient(nf, *uid)
	if err != nil {
		return err
	}
	defer nc.Close()
	r := &replayRun{nc: nc, force: *force, online: map[string]bool{}, offline: map[string]int{}}
	res, err := r.run(ctx, dlq, *uid, func(n int) {
		if n%1000 == 0 {
			fmt.Fprintf(env.stderr, "replayed %d...\n", n)
		}
	})
	fmt.Fprintln(env.stdout, r.report(res))
	if err != nil {
		return fmt.Errorf("replay: %w", noDLQ(err))
	}
	if left := r.left(); *uid != "" && left > 0 {
		return fmt.Errorf("%s is offline: %s left in %s (--force replays anyway)", *uid, count(left, "dead letter"), wire.DLQStreamName)
	}
	return nil
}

// replayRun is one `pusher dlq replay`: it replays only to users who are
// online, unless forced, since a replay to someone offline is only
// dead-lettered again, its delivery count reset. It asks each user's
// presence once (pusher.online.<uid>).
type replayRun struct {
	nc      *nats.Conn
	force   bool
	online  map[string]bool // uid → its answer
	offline map[string]int  // uid → dead letters left in place as uid is offline
	askErr  error           // asking failed: the walk was stopped
}

func (r *replayRun) run(ctx context.Context, dlq *consumer.DLQ, uid string, progress func(int)) (consumer.ReplayResult, error) {
	walk, stop := context.WithCancel(ctx)
	defer stop()
	keep := func(dl consumer.DeadLetter) bool {
		if r.force || dl.Expired(time.Now()) {
			return true // an expired one is removed, not republished
		}
		on, asked := r.online[dl.UID]
		if !asked {
			var err error
			if on, err = isOnline(ctx, r.nc, dl.UID); err != nil {
				r.askErr = err
				stop()
				return false
			}
			r.online[dl.UID] = on
		}
		if !on {
			r.offline[dl.UID]++
		}
		return on
	}
	res, err := dlq.Replay(walk, uid, keep, progress, nil)
	if r.askErr != nil {
		return res, fmt.Errorf("stopped, the rest left in place: %w", r.askErr)
	}
	return res, err
}

// left counts the dead letters left in place because their user is offline.
func (r *replayRun) left() int {
	n := 0
	for _, c := range r.offline {
		n += c
	}
	return n
}

// report is the one line saying what the replay did and what it left.
func (r *replayRun) report(res consumer.ReplayResult) string {
	var b strings.Builder
	b.WriteString("replayed " + count(res.Replayed, "dead letter"))
	if res.Racing > 0 {
		fmt.Fprintf(&b, ", left %d to another replay of the same user in progress", res.Racing)
	}
	if res.Expired > 0 {
		fmt.Fprintf(&b, ", removed %d past their Pusher-TTL", res.Expired)
	}
	if res.Skipped > 0 {
		fmt.Fprintf(&b, ", skipped %d malformed", res.Skipped)
	}
	if res.BadSubject > 0 {
		fmt.Fprintf(&b, ", skipped %d bad_subject (they name no user)", res.BadSubject)
	}
	if left := r.left(); left > 0 {
		fmt.Fprintf(&b, ", left %s of %s in place", count(left, "dead letter"), count(len(r.offline), "offline user"))
	}
	return b.String()
}

func runDLQDelete(ctx context.Context, env *environ, args []string) error {
	f := newFlagSet("dlq delete", "pusher dlq delete (--seq N | --uid U) [--older-than D] [--yes]", env)
	nf := addClientNATSFlags(f)
	seq := f.Int("seq", "", 0, "delete the dead letter with this PUSH_DLQ sequence (the SEQ column of dlq list)")
	uid := f.String("uid", "", "", "delete this user's dead letters (_bad_subject: those naming no valid user)")
	olderThan := f.Duration("older-than", "", 0, "with --uid: only those stored longer ago than this")
	yes := f.Bool("yes", "", false, "delete without asking")
	if err := f.parse(args); err != nil {
		return err
	}
	switch {
	case len(f.args()) > 0:
		return usagef("dlq delete takes no arguments, got %q", f.args())
	case (*seq != 0) == (*uid != ""):
		return usagef("give --seq N or --uid U")
	case *seq < 0:
		return usagef("--seq %d: a PUSH_DLQ sequence is positive", *seq)
	case *olderThan < 0 || *olderThan > 0 && *uid == "":
		return usagef("--older-than takes a positive duration, with --uid")
	case !*yes && !env.interactive:
		return usagef("stdin is not a terminal to confirm on: add --yes to delete without asking")
	}
	nc, dlq, err := dlqClient(nf, *uid)
	if err != nil {
		return err
	}
	defer nc.Close()
	var seqs []uint64
	var what string
	if *seq != 0 {
		seqs, what, err = deadLetterAt(ctx, dlq, uint64(*seq))
	} else {
		seqs, what, err = deadLettersOf(ctx, dlq, *uid, *olderThan)
	}
	if err != nil {
		return noDLQ(err)
	}
	if len(seqs) == 0 {
		fmt.Fprintf(env.stdout, "no %s: nothing to delete\n", what)
		return nil
	}
	if !*yes {
		ok, err := confirm(ctx, env, "delete "+what+"? [y/N] ")
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("not confirmed: nothing deleted")
		}
	}
	deleted, err := deleteEach(ctx, dlq, seqs)
	fmt.Fprintln(env.stdout, "deleted", count(deleted, "dead letter"))
	return err
}

// deleteEach deletes the dead letters at seqs in turn, and says how many
// it deleted before an error stopped it.
func deleteEach(ctx context.Context, dlq *consumer.DLQ, seqs []uint64) (int, error) {
	for i, s := range seqs {
		if err := dlq.Delete(ctx, s); err != nil {
			return i, err
		}
	}
	return len(seqs), nil
}

// deadLetterAt is what dlq delete --seq deletes: the dead letter at seq,
// malformed or not, and its description for the question. None there is
// an error: the sequence was likely mistyped.
func deadLetterAt(ctx context.Context, dlq *consumer.DLQ, seq uint64) ([]uint64, string, error) {
	dl, err := dlq.Get(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, "", fmt.Errorf("no dead letter %d in %s", seq, wire.DLQStreamName)
	}
	reason := dl.Reason
	if errors.Is(err, consumer.ErrMalformedDeadLetter) {
		reason = "malformed"
	} else if err != nil {
		return nil, "", err
	}
	return []uint64{seq}, fmt.Sprintf("dead letter %d (uid %s, %s, %d bytes)", seq, dl.UID, reason, len(dl.Data)), nil
}

// deadLettersOf is what dlq delete --uid deletes: uid's dead letters,
// only those stored more than olderThan ago when it is not 0, and their
// description for the question.
func deadLettersOf(ctx context.Context, dlq *consumer.DLQ, uid string, olderThan time.Duration) ([]uint64, string, error) {
	var seqs []uint64
	cutoff := time.Now().Add(-olderThan)
	err := dlq.Each(ctx, uid, func(dl consumer.DeadLetter, _ error) error {
		if olderThan == 0 || dl.StoredAt.Before(cutoff) {
			seqs = append(seqs, dl.Seq)
		}
		return nil
	})
	what := "dead letters of " + uid
	if len(seqs) > 0 {
		what = count(len(seqs), "dead letter") + " of " + uid
	}
	if olderThan > 0 {
		what += " stored more than " + olderThan.String() + " ago"
	}
	return seqs, what, err
}

// confirm asks question on stderr and reads the answer from stdin: yes
// is y or yes. A read from a terminal cannot be interrupted, so it runs
// on its own goroutine, and a cancelled ctx (Ctrl-C) returns at once;
// the process ends right after, with the read.
func confirm(ctx context.Context, env *environ, question string) (bool, error) {
	fmt.Fprint(env.stderr, question)
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(env.stdin).ReadString('\n')
		answer <- line
	}()
	select {
	case line := <-answer:
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "y", "yes":
			return true, nil
		}
		return false, nil
	case <-ctx.Done():
		fmt.Fprintln(env.stderr)
		return false, ctx.Err()
	}
}
