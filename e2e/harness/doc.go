// Package harness runs pusher as a black box, as its users do, for the
// e2e tests and the benchmark: it builds the pusher and nats-server
// binaries, reserves loopback ports no other test process can take,
// starts, signals and kills processes with their output captured, forms
// NATS clusters, runs reconnecting WebSocket clients and retrying
// publishers, accounts for every acked message, scrapes Prometheus
// metrics, and waits on conditions with one helper that says why it still
// waits.
//
// Functions that a program without a testing.TB needs (the benchmark)
// return errors: NewProc, NewCluster, NewPusher, ReserveAddrs, Poll,
// Scrape, BuildPusher, NewBackoffClients, NewPacedPublisher. Their test
// forms take a testing.TB, fail it, and register their cleanup:
// StartProc, StartCluster, StartPusher, Addrs, WaitFor, ScrapeT,
// StartBackoffClients, StartPacedPublisher.
//
// Processes learn their addresses from the harness, which chose them
// before starting them; nothing is read back from a log line.
package harness
