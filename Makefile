# vault-plugin-secrets-oauth
PLUGIN   := vault-plugin-secrets-oauth
VERSION  ?= v0.1.0
BIN_DIR  := bin
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.PHONY: all build test unit e2e e2e-cluster e2e-openbao e2e-openbao-if-cached lint dev bench fuzz clean

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

# Cluster suite: three Vault Raft nodes on 127.0.0.1 (scripts/cluster.sh) with the built plugin and
# the test provider: standby reads, kill -9 of the leader, step-down, rejoin, rolling upgrade.
e2e-cluster: build
	@"$(CURDIR)/scripts/vault-binary.sh" >/dev/null
	@start=$$(date +%s); rc=0; \
	  E2E_CLUSTER=1 go test -count=1 -tags e2e -timeout 40m ./e2e/cluster/ -v || rc=$$?; \
	  took=$$(( $$(date +%s) - start )); \
	  printf 'e2e-cluster: go test took %dm%02ds (exit %d)\n' $$((took / 60)) $$((took % 60)) $$rc; exit $$rc

# The core end-to-end tests with OpenBao 2.0 in Vault's place (`bao`, built once from the Go module
# proxy by scripts/openbao-binary.sh, ~11 min, and cached): the plugin must serve it unchanged.
E2E_OPENBAO_TESTS := TestCore|TestBadInput|TestClientAuthMethodsAgainstProvider|TestPasswordGrantAgainstProvider|TestRefreshTokenGrantRotationAgainstProvider|TestJWTBearerGrantAgainstProvider|TestEdits|TestUserFlows|TestExchange|TestKeys|TestSigned|TestRefresh/(periodic|recovery)/(rotate|restart)
e2e-openbao: build
	E2E_SERVER=openbao scripts/e2e.sh -run '$(E2E_OPENBAO_TESTS)'

# make test runs the OpenBao suite only where bao is already built: a fresh machine skips it
# rather than spend 11 minutes building it.
e2e-openbao-if-cached:
	@if OPENBAO_CACHED_ONLY=1 scripts/openbao-binary.sh >/dev/null 2>&1; then \
	  $(MAKE) e2e-openbao; \
	else echo "e2e-openbao: skipped (OpenBao is not built here; make e2e-openbao builds it)"; fi

# The whole suite, as CI runs it: lint, unit, e2e, e2e-cluster and e2e-openbao-if-cached, with
# lint run during the e2e suite's waits (scripts/test.sh).
test:
	scripts/test.sh

dev: build
	scripts/dev.sh

# Go benchmarks, then a load test against real Vault (dev and Raft) and the provider (~9 min);
# writes bench-results.md.
bench: build
	scripts/bench.sh

clean:
	rm -rf $(BIN_DIR) .e2e
