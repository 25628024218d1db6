// Package e2e holds pusher's black-box tests: pusher and nats-server run
// as separate processes (killed, restarted, clustered), driven by real
// WebSocket clients, publishers and a headless Chromium, through the
// shared harness in e2e/harness. Every test file carries the e2e build
// tag, so `go test ./...` (the fast tier) skips them; run them with
// `make test-e2e` (go test -race -tags e2e ./e2e/...), which `make test`
// and CI run too.
package e2e
