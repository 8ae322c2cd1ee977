#!/usr/bin/env bash
# The performance harness (`make bench`): the Go benchmarks (-benchmem), then cmd/oauth-bench
# against a dev-mode Vault with the plugin (scripts/vault.sh) and the test provider
# (scripts/provider.sh): reads (leased, lease=false, KV), cached token exchanges (against KV),
# signs (sign/ for OAuth 1.0a and DPoP roles, against KV), cold burst, refresh cycle and metrics
# scrapes; then its read phase once more against a single-node Raft Vault, where storage writes
# (and so leases) cost what they cost in production. The servers run in a temporary
# state directory and are stopped at the end. Writes the machine description and every table to
# bench-results.md.
#
#   scripts/bench.sh [oauth-bench flags...]      e.g. scripts/bench.sh -roles 2000 -duration 10s
#
# The flags go to both runs of oauth-bench (the Raft run reads only, for BENCH_RAFT_DURATION,
# default 10s per target and client count, unless the flags say otherwise).
#
# Env: BENCH_OUT (results file, default bench-results.md in the repository), BENCH_TIME (go test
# -benchtime, default 1s), BENCH_KEEP=1 (keep the state directory and its logs; a failed run always
# keeps it). Expects bin/vault-plugin-secrets-oauth (`make build`; `make bench` builds it first).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${BENCH_OUT:-$ROOT/bench-results.md}"
LOG_NAME=bench
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
PLUGIN="$ROOT/bin/$PLUGIN_CMD"

[ -x "$PLUGIN" ] || { log "$PLUGIN is missing: run 'make build' (or 'make bench')"; exit 1; }

STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/oauth-bench.XXXXXX")"
ok=0
cleanup() {
  "$ROOT/scripts/vault.sh" stop "$STATE_DIR" >/dev/null 2>&1 || true
  "$ROOT/scripts/vault.sh" stop "$STATE_DIR/raft" >/dev/null 2>&1 || true
  "$ROOT/scripts/provider.sh" stop "$STATE_DIR" >/dev/null 2>&1 || true
  if [ "$ok" = 1 ] && [ -z "${BENCH_KEEP:-}" ]; then
    rm -rf "$STATE_DIR"
  else
    log "state and logs kept in $STATE_DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_vault STATE_DIR [FLAGS]: scripts/vault.sh start, tried again when it fails: its pick of a
# free port can race with other processes on a shared machine.
start_vault() {
  local i
  for i in 1 2 3; do
    if "$ROOT/scripts/vault.sh" start "$@" | tail -n 1; then
      return 0
    fi
    log "Vault did not start (attempt $i of 3)"
  done
  return 1
}

start=$SECONDS
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# Before anything is timed: the first call builds Vault (~10 min, cached afterwards).
vault_bin="$("$ROOT/scripts/vault-binary.sh")"

log "Go benchmarks"
go test -run '^$' -bench . -benchmem -count 1 -benchtime "${BENCH_TIME:-1s}" ./... | tee "$STATE_DIR/gobench.txt" >&2
go build -o "$STATE_DIR/oauth-bench" ./cmd/oauth-bench

log "starting the provider and Vault in $STATE_DIR"
issuer="$("$ROOT/scripts/provider.sh" start "$STATE_DIR" | tail -n 1)"
addr="$(start_vault "$STATE_DIR")"

log "load test (dev server, in-memory storage)"
"$STATE_DIR/oauth-bench" -vault-addr "$addr" -vault-token root -provider "$issuer" \
  -vault-log "$STATE_DIR/vault.log" -vault-pid "$(cat "$STATE_DIR/vault.pid")" \
  -out "$STATE_DIR/load.md" "$@" >/dev/null
"$ROOT/scripts/vault.sh" stop "$STATE_DIR"

log "read phase again on Raft storage"
RAFT_DIR="$STATE_DIR/raft"
raft_addr="$(start_vault "$RAFT_DIR" --raft)"
"$STATE_DIR/oauth-bench" -vault-addr "$raft_addr" -vault-token "$(cat "$RAFT_DIR/root.token")" \
  -provider "$issuer" -vault-pid "$(cat "$RAFT_DIR/vault.pid")" -phases reads \
  -duration "${BENCH_RAFT_DURATION:-10s}" -out "$STATE_DIR/load-raft.md" "$@" >/dev/null
"$ROOT/scripts/vault.sh" stop "$RAFT_DIR"

# benchmark_table: the benchmark lines of `go test -bench` output as a Markdown table.
benchmark_table() {
  echo "| package | benchmark | iterations | ns/op | B/op | allocs/op | other |"
  echo "|---|---|--:|--:|--:|--:|---|"
  awk '
    /^pkg: / { pkg = $2; sub(/^github.com\/oauth-broker\/vault-plugin-secrets-oauth\/?/, "", pkg); if (pkg == "") pkg = "(root)" }
    /^Benchmark/ {
      ns = bop = allocs = other = ""
      for (i = 3; i < NF; i += 2) {
        if ($(i+1) == "ns/op") ns = $i
        else if ($(i+1) == "B/op") bop = $i
        else if ($(i+1) == "allocs/op") allocs = $i
        else other = other (other == "" ? "" : ", ") $i " " $(i+1)
      }
      printf "| %s | `%s` | %s | %s | %s | %s | %s |\n", pkg, $1, $2, ns, bop, allocs, other
    }' "$1"
}

# benchmark_ratios: the lease-less cache hit and the cached exchange against the leased cache
# hit, from the same run.
benchmark_ratios() {
  awk '
    /^Benchmark/ { name = $1; sub(/-[0-9]+$/, "", name); for (i = 3; i < NF; i += 2) if ($(i+1) == "ns/op") ns[name] = $i }
    END {
      split("BenchmarkCredsCacheHit BenchmarkCredsCacheHitParallel", base, " ")
      for (k = 1; k <= 2; k++) {
        b = base[k]; n = b; sub(/CacheHit/, "CacheHitNoLease", n)
        if (ns[b] > 0 && ns[n] > 0)
          printf "- `%s` ÷ `%s`: %.2f× the time per read (%s vs %s ns).\n", n, b, ns[n] / ns[b], ns[n], ns[b]
      }
      b = "BenchmarkCredsCacheHit"; n = "BenchmarkExchangeCacheHit"
      if (ns[b] > 0 && ns[n] > 0)
        printf "- `%s` ÷ `%s`: %.2f× the time per request (%s vs %s ns).\n", n, b, ns[n] / ns[b], ns[n], ns[b]
    }' "$1"
}

cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
if grep -qw hypervisor /proc/cpuinfo; then cpu_model="$cpu_model (virtual machine)"; fi
mem_total="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
took=$((SECONDS - start))
{
  echo "# Benchmark results"
  echo
  echo "Written by \`scripts/bench.sh\` (\`make bench\`) on $(date -u +%FT%TZ), in $((took / 60))m$((took % 60))s."
  echo
  echo "| machine | |"
  echo "|---|---|"
  echo "| CPUs (nproc) | $(nproc) |"
  echo "| CPU model | ${cpu_model:-unknown} |"
  echo "| memory | $mem_total |"
  echo "| file system of the Raft data | $(df -T "$STATE_DIR" | awk 'NR == 2 { print $2 " on " $1 }') |"
  echo "| kernel | $(uname -sr) |"
  echo "| Go | $(go env GOVERSION) |"
  echo "| Vault | $("$vault_bin" version | head -n 1 | cut -d, -f1) |"
  echo "| plugin | commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes') |"
  echo "| Node.js (provider) | $(node --version) |"
  echo "| load average before / after | $load_before / $(cut -d' ' -f1-3 /proc/loadavg) |"
  echo
  echo "## Go benchmarks (\`go test -bench . -benchmem\`)"
  echo
  benchmark_table "$STATE_DIR/gobench.txt"
  echo
  benchmark_ratios "$STATE_DIR/gobench.txt"
  echo
  cat "$STATE_DIR/load.md"
  echo
  cat "$STATE_DIR/load-raft.md"
} >"$OUT"
ok=1
log "done in $((took / 60))m$((took % 60))s: $OUT"
