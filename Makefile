# pusher: `make help` lists the targets.
GO        ?= go
# FUZZTIME is a count of inputs, not a duration: Go 1.26's fuzz
# coordinator can fail a run bounded by time with a bare "context deadline
# exceeded" when the time runs out mid-call, no input at fault
# (golang/go#75804, fixed in Go 1.27; seen in CI). A count has no deadline.
FUZZTIME  ?= 100000x
BENCHTIME ?= 1s
# DEMO_BIN: the original demo's binary (BENCHMARKS.md says how to build it);
# when set, `make bench` also runs it side by side with pusher.
DEMO_BIN  ?=
# Fuzz targets as package:Name; `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS := \
	./auth:FuzzVerify ./auth:FuzzTokenFromRequest ./auth:FuzzJWKS \
	./wire:FuzzValidUID ./wire:FuzzParsePolicy ./wire:FuzzClientAddr \
	./wire:FuzzUIDFromSubject ./consumer:FuzzParseDeadLetter \
	./api:FuzzParsePush \
	./ws/internal/intake:FuzzFrameReader ./ws/internal/intake:FuzzReaderMatchesGorilla \
	./ws:FuzzClientFrame ./ws:FuzzEnvelope

# VERSION names the build in `pusher version`: a tag, or git describe's
# commit; empty outside git, where pusher falls back to what Go stamped.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

# run execs the binary rather than go run: on Ctrl-C, go run exits 1 even
# when pusher stopped cleanly, and make reported that as an error.
.PHONY: run
run: build ## build ./pusher and run it with its embedded NATS (127.0.0.1:4222, HTTP 127.0.0.1:8181, data in ./data)
	exec ./pusher

.PHONY: build
build: ## build ./pusher (VERSION=v1.2.3 names it; default: git describe)
	$(GO) build -ldflags '-X main.version=$(VERSION)' -o pusher .

.PHONY: deps
deps: ## install what the tests need that Go does not fetch (Debian's chromium, as root)
	@./.ci/install-chromium

.PHONY: test
test: deps js-test ## the browser client's checks, then both Go tiers with the race detector: fast package tests, then e2e (installs chromium first when it can)
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -tags e2e -timeout 20m ./e2e/...

.PHONY: test-fast
test-fast: ## the fast tier: every package's tests, no e2e (go test -race ./...)
	$(GO) test -race -count=1 ./...

.PHONY: test-e2e
test-e2e: deps ## the e2e tier: pusher and nats-server processes, NATS clusters, Chromium (installs chromium first when it can)
	$(GO) test -race -count=1 -tags e2e -timeout 20m ./e2e/...

# The browser client (web/client): its dev dependency (typescript, pinned by
# package-lock.json) is installed by npm ci when the lock file changed.
JS_DIR := web/client

$(JS_DIR)/node_modules/.package-lock.json: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error

.PHONY: js-test
js-test: $(JS_DIR)/node_modules/.package-lock.json ## the browser client: unit tests (node --test), types (tsc --strict), npm pack contents
	cd $(JS_DIR) && npm run --silent check

.PHONY: fmt-check
fmt-check: ## fail if gofmt would change anything
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet, with and without the e2e tag
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

.PHONY: lint
lint: ## golangci-lint with .golangci.yml (built from the module proxy on first use)
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run ./...

.PHONY: check
check: fmt-check vet lint test ## everything CI checks, and lint

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME inputs (default 100000x)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

.PHONY: bench
bench: bench-micro bench-system bench-storm ## micro-benchmarks, the end-to-end benchmark, then the connect storms (BENCHMARKS.md)

.PHONY: bench-micro
bench-micro: ## Go micro-benchmarks of the hot paths (hub, dispatch, frame write, token verify)
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./...

.PHONY: bench-system
bench-system: ## pusher as its own process vs the raw JetStream ceiling and floor, in one run (BENCHFLAGS=--quick for a smoke run; DEMO_BIN=path adds the original demo)
	$(GO) run ./bench $(if $(DEMO_BIN),--demo-bin $(DEMO_BIN)) $(BENCHFLAGS)

.PHONY: bench-storm
bench-storm: ## connect storms: restart a single node, then each of 3 cluster nodes, under 15,000 reconnecting clients per node (BENCHFLAGS=--quick: 1,500; --storm=single|cluster for one)
	$(GO) run ./bench --storm $(BENCHFLAGS)

.PHONY: bench-cluster
bench-cluster: ## 3-node NATS cluster with 1 then 3 pusher nodes, 15,000 connections per node, in one run
	$(GO) run ./bench --cluster $(BENCHFLAGS)

.PHONY: tidy-check
tidy-check: ## fail if go.mod/go.sum are not tidy
	$(GO) mod tidy
	git diff --exit-code go.mod go.sum

.PHONY: vulncheck
vulncheck: ## govulncheck (needs the vulnerability database; not reachable offline)
	$(GO) run golang.org/x/vuln/cmd/govulncheck@latest ./...
