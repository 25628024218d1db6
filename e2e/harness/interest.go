package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Interest returns the subjects node i's own clients subscribe to (with
// how many subscriptions), and for each subject the peers that told node i
// of their interest in it over a route.
func (c *Cluster) Interest(ctx context.Context, i int) (map[string]int, map[string]map[string]bool, error) {
	var subsz struct {
		Subs []struct {
			Subject string `json:"subject"`
		} `json:"subscriptions_list"`
	}
	if err := c.MonitorJSON(ctx, i, "/subsz?subs=1&limit=100000", &subsz); err != nil {
		return nil, nil, err
	}
	local := map[string]int{}
	for _, s := range subsz.Subs {
		local[s.Subject]++
	}
	var routez struct {
		Routes []struct {
			RemoteName string   `json:"remote_name"`
			Subs       []string `json:"subscriptions_list"`
		} `json:"routes"`
	}
	if err := c.MonitorJSON(ctx, i, "/routez?subs=1", &routez); err != nil {
		return nil, nil, err
	}
	remote := map[string]map[string]bool{}
	for _, r := range routez.Routes {
		for _, s := range r.Subs {
			subject, _, _ := strings.Cut(s, " ")
			if remote[subject] == nil {
				remote[subject] = map[string]bool{}
			}
			remote[subject][r.RemoteName] = true
		}
	}
	return local, remote, nil
}

// WaitInterest waits until each subject has want subscriptions over the
// cluster's nodes and every running node has heard of it from every peer
// holding one: from then on a request published on any node reaches every
// holder. pusher flushes a presence subscription to its own NATS node
// before the upgrade completes; its propagation over the routes is
// asynchronous.
func (c *Cluster) WaitInterest(t testing.TB, subjects []string, want int, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "presence interest propagated", func() error {
		return c.interestPropagated(subjects, want)
	})
}

func (c *Cluster) interestPropagated(subjects []string, want int) error {
	n := c.cfg.Size
	locals := make([]map[string]int, n)
	remotes := make([]map[string]map[string]bool, n)
	for i := range n {
		if !c.Alive(i) {
			continue
		}
		var err error
		if locals[i], remotes[i], err = c.Interest(context.Background(), i); err != nil {
			return err
		}
	}
	for _, subject := range subjects {
		total := 0
		for i := range n {
			total += locals[i][subject]
		}
		if total != want {
			return fmt.Errorf("%s: %d subscriptions, want %d", subject, total, want)
		}
		for holder := range n {
			for i := range n {
				if i != holder && c.Alive(i) && locals[holder][subject] > 0 && !remotes[i][subject][c.Name(holder)] {
					return fmt.Errorf("%s: %s has not heard of %s's interest", subject, c.Name(i), c.Name(holder))
				}
			}
		}
	}
	return nil
}
