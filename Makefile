# Shoal — the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
GO    ?= go
BIN   := bin/shoal
PKGS  := ./...
APT_PACKAGES := iptables nftables iproute2 containerd runc busybox-static dnsperf etcd-server etcd-client fio
# Fuzz budgets are execution counts, about 10 s each on this 2-core machine.
# A duration (-fuzztime=10s) races Go 1.26's fuzz coordinator at its deadline
# (go.dev/issue/75804, fixed in Go 1.27): under load a worker misses the stop
# and the run fails with a bare "context deadline exceeded" and no crasher. A
# count has no deadline. FUZZ_SCALE multiplies every budget.
FUZZ_SCALE ?= 1
fuzzn = $$(( $(1) * $(FUZZ_SCALE) ))x
# The binaries are static and leave out containerd's loader of Go plugins
# (its `plugin` import made the linker export every symbol and pulled in
# cgo): 60 MB instead of 78 MB, 7 MB less of every agent's RSS, no libc
# needed on the node. e2e/harness_test.go builds them the same way. Tests
# keep cgo (the race detector needs it) and the same tags.
export GOFLAGS := $(strip $(GOFLAGS) -tags=no_dynamic_plugins)

.PHONY: all build deps test unit e2e fuzz bench demo demo-down lint clean

all: build

# deps installs what the build, the tests and the demo need on a fresh Debian
# machine (as root): apt packages and Go modules.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "missing packages:$$missing (run as root to install them)"; fi; \
	fi
	$(GO) mod download

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/shoal
	CGO_ENABLED=0 $(GO) build -o $(dir $(BIN))shoal-logger ./cmd/shoal-logger

lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/e2e$$' | grep -v /e2e/bench)

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzApply$$' -fuzztime=$(call fuzzn,25000) ./node/state/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeForwardBatch$$' -fuzztime=$(call fuzzn,50000) ./consensus/
	$(GO) test -run='^$$' -fuzz='^FuzzParseToken$$' -fuzztime=$(call fuzzn,50000) ./node/pki/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeBody$$' -fuzztime=$(call fuzzn,300) ./node/apiserver/
	$(GO) test -run='^$$' -fuzz='^FuzzServeDNS$$' -fuzztime=$(call fuzzn,100000) ./dns/
	$(GO) test -run='^$$' -fuzz='^FuzzPlanSlices$$' -fuzztime=$(call fuzzn,2000) ./node/controller/endpoints/

e2e: build
	$(GO) test -count=1 -timeout 30m -v ./e2e/ 2>&1 | tee /tmp/shoal-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|e2e:' ; exit $${PIPESTATUS[0]}

# test sets up and runs every test: lint, unit tests with -race, short fuzzing,
# and the end-to-end tests against real multi-node clusters in namespaces.
test: deps lint unit fuzz e2e

# CoreDNS, for the DNS benchmark's side-by-side figure (issue 5 compares
# with CoreDNS 1.12): built from the Go module proxy into bin/. When it
# cannot be built the benchmark says so in its table and goes on.
COREDNS_VERSION ?= v1.12.0
bin/coredns:
	@mkdir -p bin
	GOBIN=$(CURDIR)/bin GOFLAGS= CGO_ENABLED=0 $(GO) install github.com/coredns/coredns@$(COREDNS_VERSION) || \
		echo "coredns $(COREDNS_VERSION) could not be built: the DNS benchmark runs without the CoreDNS figure"

bench: deps build bin/coredns
	$(GO) test -run='^$$' -bench=. -benchtime=2s ./node/state/ ./consensus/
	$(GO) test -run='^$$' -bench=. -benchtime=30x ./node/container/containerd/
	$(GO) test -run='^$$' -bench=. -benchtime=3x ./node/scheduler/
	$(GO) test -run='^$$' -bench=. -benchtime=1s ./dns/
	$(GO) test -run='^$$' -bench=. -benchtime=3x ./netproxy/ ./node/controller/endpoints/
	$(GO) test -run='^$$' -bench=. -benchtime=8x ./node/container/logfile/
	$(GO) test -run='^$$' -bench=. -benchtime=300000x ./node/controller/gc/
	PATH="$(CURDIR)/bin:$$PATH" $(GO) run ./e2e/bench -shoal $(BIN)

demo: deps build
	./scripts/demo.sh

demo-down:
	$(BIN) local down --name shoal-demo --dir /tmp/shoal-demo

clean:
	rm -rf bin
