# shellcheck shell=bash
# Functions shared by the scripts that run the servers (vault.sh, cluster.sh, provider.sh,
# bench.sh). Sourced, not run:
#
#   . "$ROOT/scripts/lib.sh"
#
# The messages of log and die start with LOG_NAME (default: the script's file name). What starts
# or waits for a Vault server uses VAULT_BIN and STATE_DIR as the sourcing script sets them.

PLUGIN_NAME=oauth
PLUGIN_CMD=vault-plugin-secrets-oauth

log() { echo "${LOG_NAME:-${0##*/}}: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# read_command_args "$@": for a script called as `SCRIPT COMMAND STATE_DIR [ARGS...]`: sets cmd and
# STATE_DIR (created, made absolute); calls the script's usage when either is missing.
read_command_args() {
  [ $# -ge 2 ] || usage
  cmd="$1"
  mkdir -p "$2"
  STATE_DIR="$(cd "$2" && pwd)"
}

# ---- processes and ports ----

# pid_alive PID: true when PID is set and that process lives.
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# wait_gone PID TENTHS: waits up to TENTHS tenths of a second for PID to end; false when it
# still lives.
wait_gone() {
  local i
  for i in $(seq 1 "$2"); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  ! kill -0 "$1" 2>/dev/null
}

# term_and_wait PID TENTHS: SIGTERM, then wait_gone.
term_and_wait() {
  kill -TERM "$1" 2>/dev/null || true
  wait_gone "$1" "$2"
}

port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a TCP port on 127.0.0.1 that nothing listens on right now and that this
# script has not handed out yet (TAKEN; only a call outside $(...) records its port). It stays
# below the kernel's range for outgoing connections: a port lent to a client socket fails
# Vault's bind although nothing listens on it.
TAKEN=" "
free_port() {
  local p i low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  for i in $(seq 1 200); do
    p=$((10000 + (RANDOM * 32768 + RANDOM + i) % (low - 10002)))
    case "$TAKEN" in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then
      TAKEN="$TAKEN$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# ---- a Vault server ----

# unset_vault_client_env drops the client settings that would point the Vault CLI elsewhere.
unset_vault_client_env() {
  unset VAULT_NAMESPACE VAULT_CACERT VAULT_CAPATH VAULT_CLIENT_CERT VAULT_CLIENT_KEY VAULT_AGENT_ADDR || true
}

# tail_log FILE: the last lines of a log to stderr (nothing when it does not exist).
tail_log() {
  if [ -f "$1" ]; then
    log "last lines of $1:"
    tail -n 40 "$1" >&2
  fi
}

# launch_server DIR HEADER ARGS...: starts `$VAULT_BIN server ARGS` in the background with
# HOME=DIR (dev mode's ~/.vault-token stays inside), appending to DIR/vault.log (after a HEADER
# line) and writing DIR/vault.pid.
launch_server() {
  local dir="$1" header="$2"
  shift 2
  : >>"$dir/vault.log"
  echo "==== $(date -u +%FT%TZ) $header ====" >>"$dir/vault.log"
  # setsid: the server outlives the script, ignores the terminal's Ctrl-C, and leads its own
  # process group (with its plugin processes).
  HOME="$dir" setsid "$VAULT_BIN" server "$@" </dev/null >>"$dir/vault.log" 2>&1 &
  echo $! >"$dir/vault.pid"
}

# install_plugin SRC DIR: copies the plugin binary SRC to DIR/$PLUGIN_CMD. Copy then rename, so
# that a plugin process still running the old file is not disturbed.
install_plugin() {
  mkdir -p "$2"
  cp "$1" "$2/.$PLUGIN_CMD.tmp"
  mv -f "$2/.$PLUGIN_CMD.tmp" "$2/$PLUGIN_CMD"
}

# health_code ADDR: the HTTP status of sys/health at ADDR (000 when nothing answers).
health_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1/v1/sys/health" 2>/dev/null || true
}

# server_alive NAME DIR: dies, with the last lines of DIR/vault.log, unless the server whose pid
# is in DIR/vault.pid runs.
server_alive() {
  pid_alive "$(cat "$2/vault.pid" 2>/dev/null || true)" && return 0
  tail_log "$2/vault.log"
  die "$1 exited (log: $2/vault.log)"
}

# await_health NAME DIR ADDR TIMEOUT WANT...: waits until the server of DIR (see server_alive)
# answers sys/health at ADDR with one of the WANT codes; prints it. Dies when the server exits
# or after TIMEOUT seconds.
await_health() {
  local name="$1" dir="$2" addr="$3" timeout="$4" deadline code="" w
  shift 4
  deadline=$((SECONDS + timeout))
  while [ $SECONDS -lt $deadline ]; do
    server_alive "$name" "$dir"
    code="$(health_code "$addr")"
    for w in "$@"; do
      if [ "$code" = "$w" ]; then
        echo "$code"
        return 0
      fi
    done
    sleep 0.2
  done
  tail_log "$dir/vault.log"
  die "$name did not answer sys/health with $* within ${timeout}s (last: $code; log: $dir/vault.log)"
}

# json_field FIELD: first string value of FIELD (a string or the first item of an array of
# strings) in the JSON on stdin. Enough for Vault's init output; avoids needing jq.
json_field() {
  tr -d ' \n\r\t' | sed -n "s/.*\"$1\":\\[*\"\\([^\"]*\\)\".*/\\1/p"
}

# init_raft CLI...: initialises raft storage with one unseal key through the CLI command given
# (`CLI operator init`), keeping init.json, unseal.key and root.token in STATE_DIR.
init_raft() {
  (umask 077 && "$@" operator init -key-shares=1 -key-threshold=1 -format=json >"$STATE_DIR/init.json")
  (umask 077 && json_field unseal_keys_b64 <"$STATE_DIR/init.json" >"$STATE_DIR/unseal.key")
  (umask 077 && json_field root_token <"$STATE_DIR/init.json" >"$STATE_DIR/root.token")
  if [ ! -s "$STATE_DIR/unseal.key" ] || [ ! -s "$STATE_DIR/root.token" ]; then
    die "could not read the unseal key / root token from $STATE_DIR/init.json"
  fi
}

# plugin_sha FILE: the sha256 Vault's catalog wants for the plugin binary FILE.
plugin_sha() { sha256sum "$1" | cut -d' ' -f1; }
