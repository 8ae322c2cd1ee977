#!/usr/bin/env bash
# Starts or stops the test OAuth 2.0 / OpenID provider (test/provider) for the end-to-end tests.
#
#   scripts/provider.sh start STATE_DIR   # prints the issuer URL on stdout
#   scripts/provider.sh stop  STATE_DIR
#
# start installs the provider's npm dependencies when node_modules is missing or package-lock.json
# changed since the last install, runs the server in the background (log: STATE_DIR/provider.log),
# waits up to 30 s for its discovery document, and writes STATE_DIR/provider.pid and
# STATE_DIR/provider.url. The server inherits the environment, so ACCESS_TOKEN_TTL,
# REFRESH_TOKEN_TTL, INTROSPECTOR_SECRET, PROVIDER_USERS, PROVIDER_SCOPES and TOKEN_DELAY_MS pass
# straight through. The port comes from PROVIDER_PORT (default 0: any free port), not PORT, so a
# PORT meant for something else in the caller's environment cannot leak in.
#
# All progress goes to stderr; stdout carries only the issuer URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_NAME=provider
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
PROVIDER_DIR="$ROOT/test/provider"
START_TIMEOUT=30

usage() {
  echo "usage: $0 start|stop STATE_DIR" >&2
  exit 2
}

# True when PID is alive and is this provider's server (guards against a recycled PID).
is_provider_pid() {
  local pid="$1" cmdline
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$PROVIDER_DIR/server.js"* ]]
}

install_deps_if_needed() {
  local lock_hash stamp="$PROVIDER_DIR/node_modules/.package-lock.sha256"
  lock_hash="$(sha256sum "$PROVIDER_DIR/package-lock.json" | cut -d' ' -f1)"
  if [ -d "$PROVIDER_DIR/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$lock_hash" ]; then
    return 0
  fi
  log "installing npm dependencies (npm ci)"
  # Checked explicitly: errexit does not reach into functions called from a condition.
  if ! (cd "$PROVIDER_DIR" && npm ci --no-audit --no-fund) >&2; then
    log "npm ci failed"
    return 1
  fi
  # Inside node_modules, so deleting node_modules also forgets the stamp.
  echo "$lock_hash" >"$stamp"
}

ensure_deps() {
  # Serialise concurrent starts (two `npm ci` in one folder corrupt each other). The lock lives
  # in a subshell so its descriptor is not inherited by the server started afterwards.
  if command -v flock >/dev/null 2>&1; then
    local lock
    lock="${TMPDIR:-/tmp}/vault-plugin-oauth-provider-npm-$(echo "$PROVIDER_DIR" | sha256sum | cut -c1-16).lock"
    (
      flock 9
      install_deps_if_needed
    ) 9>"$lock"
  else
    install_deps_if_needed
  fi
}

start() {
  local state="$1" pid url deadline
  if [ -f "$state/provider.pid" ] && is_provider_pid "$(cat "$state/provider.pid")"; then
    log "already running (pid $(cat "$state/provider.pid")); run '$0 stop $state' first"
    exit 1
  fi
  command -v node >/dev/null 2>&1 || { log "node is not installed"; exit 1; }
  command -v curl >/dev/null 2>&1 || { log "curl is not installed"; exit 1; }
  ensure_deps

  rm -f "$state/provider.url" "$state/provider.pid"
  PORT="${PROVIDER_PORT:-0}" PROVIDER_URL_FILE="$state/provider.url" \
    nohup node "$PROVIDER_DIR/server.js" >>"$state/provider.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$state/provider.pid"

  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "server exited during start-up; last log lines:"
      tail -n 20 "$state/provider.log" >&2
      rm -f "$state/provider.pid"
      exit 1
    fi
    if [ -s "$state/provider.url" ]; then
      url="$(cat "$state/provider.url")"
      if curl -fsS --max-time 2 -o /dev/null "$url/.well-known/openid-configuration" 2>/dev/null; then
        break
      fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "no discovery document after ${START_TIMEOUT}s; last log lines:"
      tail -n 20 "$state/provider.log" >&2
      kill "$pid" 2>/dev/null || true
      rm -f "$state/provider.pid"
      exit 1
    fi
    sleep 0.1
  done
  log "listening at $url (pid $pid, log $state/provider.log)"
  echo "$url"
}

stop() {
  local state="$1" pid
  if [ ! -f "$state/provider.pid" ]; then
    log "not running (no $state/provider.pid)"
    return 0
  fi
  pid="$(cat "$state/provider.pid")"
  if is_provider_pid "$pid"; then
    if ! term_and_wait "$pid" 50; then
      log "pid $pid ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped (pid $pid)"
  else
    log "pid $pid is not running"
  fi
  rm -f "$state/provider.pid" "$state/provider.url"
}

[ $# -eq 2 ] || usage
read_command_args "$@"
case "$cmd" in
  start) start "$STATE_DIR" ;;
  stop) stop "$STATE_DIR" ;;
  *) usage ;;
esac
