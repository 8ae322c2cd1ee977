# vault-plugin-secrets-oauth
PLUGIN   := vault-plugin-secrets-oauth
VERSION  ?= v0.1.0
BIN_DIR  := bin
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.PHONY: all build test unit e2e lint dev bench fuzz clean

all: build

build:
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o $(BIN_DIR)/$(PLUGIN) ./cmd/$(PLUGIN)

# golangci-lint, pinned; built from the Go module proxy into a cache outside the repo on first use
# (scripts/golangci-lint.sh). Its linters and settings are in .golangci.yml.
GOLANGCI_LINT_VERSION := v2.15.0

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	go vet ./...
	go vet -tags e2e ./...
	@bin="$$(GOLANGCI_LINT_VERSION=$(GOLANGCI_LINT_VERSION) scripts/golangci-lint.sh)" && \
	  echo "golangci-lint run ./..." && "$$bin" run ./...

# Unit tests with the race detector (includes fuzz seed corpora).
unit:
	go test -race -count=1 ./...

# End-to-end: a real Vault with the built plugin and a real OAuth 2.0 provider.
e2e: build
	scripts/e2e.sh

# The whole suite, as CI runs it.
test: lint unit e2e

dev: build
	scripts/dev.sh

# Go benchmarks, then a load test against real Vault (dev and Raft) and the provider (~7 min);
# writes bench-results.md.
bench: build
	scripts/bench.sh

clean:
	rm -rf $(BIN_DIR) .e2e
