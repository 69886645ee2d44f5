# Harmony: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/harmony-fleet/harmony/internal/buildinfo.Version=$(VERSION) \
	-X github.com/harmony-fleet/harmony/internal/buildinfo.Commit=$(COMMIT)
STATICCHECK_VERSION := v0.8.2
GOBIN := $(shell $(GO) env GOPATH)/bin
# Packages whose tests run with the race detector (all of them, today).
TEST_FLAGS ?= -race -count=1 -timeout 45m

.PHONY: help build agent run test fuzz lint bench deps release

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/harmony (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/harmony ./cmd/harmony

agent: ## build bin/harmony-agent: agent and CLI only, no server (smaller, lighter on a device)
	CGO_ENABLED=0 $(GO) build -tags agent -trimpath -ldflags '$(LDFLAGS)' -o bin/harmony-agent ./cmd/harmony

release: ## static binaries for linux amd64, arm64 and arm (Raspberry Pi) in dist/
	@mkdir -p dist
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/harmony-linux-amd64 ./cmd/harmony
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/harmony-linux-arm64 ./cmd/harmony
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/harmony-linux-armv6 ./cmd/harmony
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -tags agent -trimpath -ldflags '$(LDFLAGS)' -o dist/harmony-agent-linux-arm64 ./cmd/harmony
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -tags agent -trimpath -ldflags '$(LDFLAGS)' -o dist/harmony-agent-linux-armv6 ./cmd/harmony
	cd dist && sha256sum harmony-linux-* > SHA256SUMS

run: build ## run everything on this machine (harmony dev)
	./bin/harmony dev

deps: ## install what the tests need, when missing (idempotent, quiet)
	@scripts/deps.sh

test: deps ## run the whole test suite, then a short run of every fuzz target
	$(GO) test $(TEST_FLAGS) ./...
	FUZZTIME=$${FUZZTIME:-3s} scripts/fuzz.sh

fuzz: ## run every fuzz target longer (FUZZTIME, default 5s each)
	scripts/fuzz.sh

lint: ## go vet and staticcheck (pinned); the agent-only build compiles
	$(GO) vet ./...
	$(GO) vet -tags agent ./internal/cli ./cmd/...
	@test -x $(GOBIN)/staticcheck && $(GOBIN)/staticcheck -version | grep -q '($(STATICCHECK_VERSION:v%=%))' \
		|| $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt: $$unformatted"; exit 1; fi

bench: ## run the benchmarks (see docs/BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./...
