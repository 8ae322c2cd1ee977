#!/usr/bin/env bash
# Runs a real Vault server with the oauth plugin registered and mounted, for e2e tests and `make dev`.
#
#   scripts/vault.sh start   STATE_DIR [--raft] [--audit]   # prints the address (http://127.0.0.1:PORT)
#   scripts/vault.sh stop    STATE_DIR
#   scripts/vault.sh restart STATE_DIR                      # keeps the data only in --raft mode
#   scripts/vault.sh status  STATE_DIR                      # exit 0 when running
#
# Dev mode (default): `vault server -dev` (in-memory storage, root token "root").
# Raft mode: a single-node raft server, initialised with one unseal key; the key and the root token
# are kept in STATE_DIR (init.json, unseal.key, root.token) and the server is unsealed on restart.
#
# STATE_DIR gets: vault.log (server log, trace level), vault.pid, vault.env (VAULT_ADDR= and
# VAULT_TOKEN= lines), plugins/ (the plugin binary), audit.log (with --audit), vault.hcl.
# The plugin binary is bin/vault-plugin-secrets-oauth (`make build`); when it is missing Vault still
# starts, but without the plugin, and a message says so.
#
# Env: VAULT_PORT (listener port; default: a free one), VAULT_START_TIMEOUT (seconds, default 60),
# E2E_SERVER=openbao (run OpenBao's `bao`, from scripts/openbao-binary.sh, instead of Vault).
# Everything but the address goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
PLUGIN_SRC="$ROOT/bin/$PLUGIN_CMD"
START_TIMEOUT="${VAULT_START_TIMEOUT:-60}"

usage() { die "usage: $0 start STATE_DIR [--raft] [--audit] | stop STATE_DIR | restart STATE_DIR | status STATE_DIR"; }

read_command_args "$@"
shift 2

PID_FILE="$STATE_DIR/vault.pid"
LOG_FILE="$STATE_DIR/vault.log"

running() { pid_alive "$(cat "$PID_FILE" 2>/dev/null || true)"; }

# wait_health WANT...: waits until sys/health answers one of the given codes; prints it.
wait_health() { await_health vault "$STATE_DIR" "$VAULT_ADDR" "$START_TIMEOUT" "$@"; }

# OpenBao's CLI reads BAO_ADDR and BAO_TOKEN.
vault_cli() { BAO_ADDR="${VAULT_ADDR:-}" BAO_TOKEN="${VAULT_TOKEN:-}" "$VAULT_BIN" "$@"; }

write_env() {
  umask 077
  printf 'VAULT_ADDR=%s\nVAULT_TOKEN=%s\n' "$VAULT_ADDR" "$VAULT_TOKEN" >"$STATE_DIR/vault.env"
}

launch() { launch_server "$STATE_DIR" "vault server $*" "$@"; } # args for `vault server`

copy_plugin() {
  mkdir -p "$STATE_DIR/plugins"
  if [ -x "$PLUGIN_SRC" ]; then
    install_plugin "$PLUGIN_SRC" "$STATE_DIR/plugins"
  fi
}

# oauth_versions: the versions under which the catalog holds the oauth secret plugin.
oauth_versions() {
  vault_cli plugin list -format=json -detailed secret | tr -d ' \n\r\t' |
    grep -o "{[^{}]*\"name\":\"$PLUGIN_NAME\"[^{}]*}" | sed -n 's/.*"version":"\([^"]*\)".*/\1/p'
}

# register_plugin registers the plugin binary (by sha256; Vault takes the version the plugin
# reports) and mounts it at oauth/. Across a raft restart with a rebuilt binary it re-registers,
# points the mount at the new version and reloads it.
register_plugin() {
  local bin="$STATE_DIR/plugins/$PLUGIN_CMD" sha mounted=0 pinned="" ver="" v mounts
  if [ ! -x "$bin" ]; then
    log "NOTE: $PLUGIN_SRC is missing (run 'make build'): Vault runs WITHOUT the $PLUGIN_NAME plugin"
    return 0
  fi
  sha="$(plugin_sha "$bin")"
  # Read whole, then searched: in `cli | grep -q` under pipefail, grep quitting at the first match
  # can kill the CLI with SIGPIPE before its last write, and the pipeline then reads as no match.
  mounts="$(vault_cli secrets list -format=json)"
  if grep -q "\"$PLUGIN_NAME/\"" <<<"$mounts"; then
    mounted=1
    # The catalog entry of the mount's version must be this binary (the mount's running_sha256
    # is no proof: it stays set when Vault could not start the plugin).
    pinned="$(vault_cli read -field=plugin_version "sys/mounts/$PLUGIN_NAME" 2>/dev/null || true)"
    if [ "$(vault_cli plugin info -version="$pinned" -field=sha256 secret "$PLUGIN_NAME" 2>/dev/null || true)" = "$sha" ]; then
      return 0
    fi
  fi
  vault_cli plugin register -sha256="$sha" -command="$PLUGIN_CMD" secret "$PLUGIN_NAME" >&2
  for v in $(oauth_versions); do
    if [ "$(vault_cli plugin info -version="$v" -field=sha256 secret "$PLUGIN_NAME" 2>/dev/null)" = "$sha" ]; then
      ver="$v"
    fi
  done
  if [ "$mounted" = 1 ]; then
    if [ -n "$ver" ] && [ "$ver" != "$pinned" ]; then
      vault_cli secrets tune -plugin-version="$ver" "$PLUGIN_NAME/" >&2
    fi
    vault_cli plugin reload -type=secret -plugin="$PLUGIN_NAME" >&2
  else
    vault_cli secrets enable -path="$PLUGIN_NAME" "$PLUGIN_NAME" >&2
  fi
  log "plugin $PLUGIN_NAME ${ver:-(unversioned)} sha256 $sha"
}

enable_audit() {
  local devices
  devices="$(vault_cli audit list -format=json 2>/dev/null || true)" # as in register_plugin
  if ! grep -q '"file/"' <<<"$devices"; then
    vault_cli audit enable file file_path="$STATE_DIR/audit.log" >&2
  fi
}

start() {
  local mode=dev audit=0 arg port cport
  for arg in "$@"; do
    case "$arg" in
      --raft) mode=raft ;;
      --audit) audit=1 ;;
      *) usage ;;
    esac
  done
  if [ "$mode" = dev ] && [ -s "$STATE_DIR/init.json" ]; then
    log "$STATE_DIR holds raft data: starting in raft mode"
    mode=raft
  fi
  if running; then
    log "already running (pid $(cat "$PID_FILE")); see $STATE_DIR/vault.env"
    sed -n 's/^VAULT_ADDR=//p' "$STATE_DIR/vault.env"
    return 0
  fi

  if [ "${E2E_SERVER:-vault}" = openbao ]; then
    VAULT_BIN="$("$ROOT/scripts/openbao-binary.sh")"
  else
    VAULT_BIN="$("$ROOT/scripts/vault-binary.sh")"
  fi
  echo "$mode" >"$STATE_DIR/vault.mode"
  echo "$audit" >"$STATE_DIR/vault.audit"
  copy_plugin

  # Keep the port across restarts when it is still free (raft's api_addr is stored with the data).
  port="${VAULT_PORT:-$(cat "$STATE_DIR/vault.port" 2>/dev/null || true)}"
  if [ -z "$port" ] || port_in_use "$port"; then
    [ -z "${VAULT_PORT:-}" ] || die "VAULT_PORT=$VAULT_PORT is in use"
    port="$(free_port)"
    # Dev mode puts its cluster listener on port+1.
    while [ "$mode" = dev ] && port_in_use $((port + 1)); do port="$(free_port)"; done
  fi
  echo "$port" >"$STATE_DIR/vault.port"

  export VAULT_ADDR="http://127.0.0.1:$port"
  unset_vault_client_env
  cfg="$STATE_DIR/vault.hcl"

  if [ "$mode" = dev ]; then
    cat >"$cfg" <<EOF
plugin_directory     = "$STATE_DIR/plugins"
log_level            = "trace"
# The e2e leak scan reads keys the plugin generated, which no answer shows, from sys/raw.
raw_storage_endpoint = true
EOF
    launch -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$port" -config="$cfg"
    export VAULT_TOKEN=root
    wait_health 200 >/dev/null
  else
    cport="$(cat "$STATE_DIR/vault.cluster-port" 2>/dev/null || true)"
    if [ -z "$cport" ] || port_in_use "$cport" || [ "$cport" = "$port" ]; then
      cport="$(free_port)"
      while [ "$cport" = "$port" ]; do cport="$(free_port)"; done
    fi
    echo "$cport" >"$STATE_DIR/vault.cluster-port"
    mkdir -p "$STATE_DIR/raft"
    cat >"$cfg" <<EOF
storage "raft" {
  path    = "$STATE_DIR/raft"
  node_id = "node1"
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$cport"
  tls_disable     = true
}
api_addr         = "http://127.0.0.1:$port"
cluster_addr     = "http://127.0.0.1:$cport"
plugin_directory = "$STATE_DIR/plugins"
disable_mlock    = true
log_level        = "trace"
ui               = false
# The e2e leak scan reads keys the plugin generated, which no answer shows, from sys/raw.
raw_storage_endpoint = true
EOF
    launch -config="$cfg"
    code="$(wait_health 200 429 472 473 501 503)"
    if [ "$code" = 501 ]; then
      log "initialising raft storage"
      init_raft vault_cli
      code=503
    fi
    if [ "$code" = 503 ]; then
      [ -s "$STATE_DIR/unseal.key" ] || die "vault is sealed and $STATE_DIR/unseal.key is missing"
      vault_cli operator unseal "$(cat "$STATE_DIR/unseal.key")" >/dev/null
    fi
    VAULT_TOKEN="$(cat "$STATE_DIR/root.token")"
    export VAULT_TOKEN
    wait_health 200 >/dev/null
  fi
  write_env
  register_plugin
  if [ "$audit" = 1 ]; then enable_audit; fi
  log "running ($mode, pid $(cat "$PID_FILE")); log: $LOG_FILE; env: $STATE_DIR/vault.env"
  echo "$VAULT_ADDR"
}

stop() {
  local pid kids i
  if ! running; then
    rm -f "$PID_FILE"
    return 0
  fi
  pid="$(cat "$PID_FILE")"
  # The plugin processes are the server's children; note them in case the server must be killed.
  kids="$(pgrep -P "$pid" || true)"
  if ! term_and_wait "$pid" 150; then
    log "vault (pid $pid) ignored SIGTERM for 15s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

case "$cmd" in
  start) start "$@" ;;
  stop) stop ;;
  restart)
    mode="$(cat "$STATE_DIR/vault.mode" 2>/dev/null || echo dev)"
    audit="$(cat "$STATE_DIR/vault.audit" 2>/dev/null || echo 0)"
    [ "$mode" = raft ] || log "NOTE: dev mode keeps nothing across a restart (use --raft)"
    stop
    args=()
    if [ "$mode" = raft ]; then args+=(--raft); fi
    if [ "$audit" = 1 ]; then args+=(--audit); fi
    start "${args[@]}"
    ;;
  status)
    if running; then
      sed -n 's/^VAULT_ADDR=//p' "$STATE_DIR/vault.env" 2>/dev/null
    else
      exit 1
    fi
    ;;
  *) usage ;;
esac
