#!/usr/bin/env bash
# Runs the end-to-end suite: a real Vault (scripts/vault.sh) with the built plugin against the test
# OAuth provider (scripts/provider.sh). The Go TestMain starts and stops both servers.
#
#   scripts/e2e.sh [go test args...]      e.g. scripts/e2e.sh -run 'TestCore/b_lease'
#
# Env: E2E_KEEP=1 keeps .e2e/run-<pid> (logs) after a passing run; E2E_RAFT=1 runs Vault on raft.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ ! -x bin/vault-plugin-secrets-oauth ]; then
  make build
fi
# The first call builds Vault (~10 min): do it outside the test's timeout.
"$ROOT/scripts/vault-binary.sh" >/dev/null

start=$(date +%s)
rc=0
# -parallel: the parallel tests mostly wait for Vault's one-minute refresh ticks, not for a CPU.
E2E_NO_BUILD="${E2E_NO_BUILD:-1}" go test -race -count=1 -tags e2e -timeout 30m -parallel 4 ./e2e/... -v "$@" || rc=$?
took=$(($(date +%s) - start))
printf 'e2e: go test took %dm%02ds (exit %d)\n' $((took / 60)) $((took % 60)) "$rc"
exit "$rc"
