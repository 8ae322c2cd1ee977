#!/usr/bin/env bash
# Prints the path of golangci-lint $GOLANGCI_LINT_VERSION, installing it when not cached.
#
# Built from source through the Go module proxy (`go install ...@VERSION`: no prebuilt binary is
# downloaded) into $GOLANGCI_LINT_CACHE_DIR, keyed by version and Go toolchain, so only the first
# run pays: 4.5 min on two cores with empty Go caches (3.5 min with the modules already
# downloaded), then nothing.
#
# All progress goes to stderr; stdout carries only the binary's path.
set -euo pipefail

# The pin lives in the Makefile (GOLANGCI_LINT_VERSION), which passes it here.
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:?set GOLANGCI_LINT_VERSION, as the Makefile does}"
GOLANGCI_LINT_CACHE_DIR="${GOLANGCI_LINT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-oauth}"

dir="$GOLANGCI_LINT_CACHE_DIR/golangci-lint-$GOLANGCI_LINT_VERSION"
out="$dir/golangci-lint"
stamp="$out.stamp"
want="$GOLANGCI_LINT_VERSION $(go env GOVERSION)"
if [ -x "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$out"
  exit 0
fi

{
  echo "golangci-lint: installing $GOLANGCI_LINT_VERSION into $dir (first run only)"
  start=$(date +%s)
  mkdir -p "$dir"
  # Outside the repo, so its go.mod plays no part; the tool's own go.sum pins its dependencies.
  cd "$dir"
  GOWORK=off GOBIN="$dir" go install \
    "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
  echo "$want" >"$stamp"
  echo "golangci-lint: installed in $(( $(date +%s) - start ))s"
  "$out" version
} >&2
echo "$out"
