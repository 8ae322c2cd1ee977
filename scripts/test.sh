#!/usr/bin/env bash
# make test: the whole suite, as CI runs it. Lint runs while the end-to-end suite waits on Vault's
# one-minute refresh ticks (most of its five minutes), after the unit tests, whose race-built
# packages the suite then reuses. Then the cluster suite, and OpenBao's where `bao` is built.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

make --no-print-directory unit || exit

mkdir -p .e2e
e2e_log=".e2e/make-e2e.log"
make --no-print-directory e2e >"$e2e_log" 2>&1 &
e2e_pid=$!
rc=0
make --no-print-directory lint || rc=$?
e2e_rc=0
wait "$e2e_pid" || e2e_rc=$?
cat "$e2e_log"
[ "$rc" = 0 ] || { echo "make test: lint failed (exit $rc)"; exit "$rc"; }
[ "$e2e_rc" = 0 ] || { echo "make test: e2e failed (exit $e2e_rc)"; exit "$e2e_rc"; }

make --no-print-directory e2e-cluster e2e-openbao-if-cached
