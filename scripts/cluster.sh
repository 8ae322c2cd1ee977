#!/usr/bin/env bash
# Runs a three-node Vault cluster with integrated storage (Raft) on 127.0.0.1, with the oauth
# plugin registered and mounted at oauth/, for the cluster tests (e2e/cluster) and by hand.
#
#   scripts/cluster.sh start        STATE_DIR   # prints the three addresses, one a line
#   scripts/cluster.sh stop         STATE_DIR   # stops every node (SIGTERM, then SIGKILL)
#   scripts/cluster.sh kill-leader  STATE_DIR   # kill -9 of the active node and its plugins; prints N
#   scripts/cluster.sh kill-node    STATE_DIR N # kill -9 of node N and its plugins
#   scripts/cluster.sh restart-node STATE_DIR N # starts node N again (its data kept) and unseals it
#   scripts/cluster.sh status       STATE_DIR   # "N ADDR PID STATE" per node; exit 0 when one is active
#
# Node 1 is initialised with one unseal key (`operator init -key-shares=1 -key-threshold=1`);
# nodes 2 and 3 join it with retry_join and are unsealed with the same key. start returns once
# every node is unsealed, autopilot counts three voters, and the plugin is mounted.
#
# STATE_DIR gets: cluster.env (VAULT_TOKEN=, NODE1_ADDR=.. NODE3_ADDR=), init.json, unseal.key,
# root.token, and per node nodeN/: vault.hcl, vault.log (trace), vault.pid, vault.env (VAULT_ADDR=,
# VAULT_TOKEN=), vault.port, vault.cluster-port, raft/, plugins/ (the plugin binary).
#
# Env: PLUGIN_BIN (the plugin binary; default bin/vault-plugin-secrets-oauth, `make build`),
# CLUSTER_START_TIMEOUT (seconds per wait, default 120). Everything but the addresses goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
PLUGIN_SRC="${PLUGIN_BIN:-$ROOT/bin/$PLUGIN_CMD}"
TIMEOUT="${CLUSTER_START_TIMEOUT:-120}"
NODES="1 2 3"

usage() { die "usage: $0 start|stop|kill-leader|status STATE_DIR | kill-node|restart-node STATE_DIR N"; }

read_command_args "$@"
shift 2

unset_vault_client_env

node_dir() { echo "$STATE_DIR/node$1"; }
node_port() { cat "$(node_dir "$1")/vault.port"; }
node_addr() { echo "http://127.0.0.1:$(node_port "$1")"; }
node_pid() { cat "$(node_dir "$1")/vault.pid" 2>/dev/null || true; }

running() { pid_alive "$(node_pid "$1")"; }

vault_bin() { VAULT_BIN="${VAULT_BIN:-$("$ROOT/scripts/vault-binary.sh")}"; }

# vault_at N ARGS...: the Vault CLI against node N, as root when the token is known.
vault_at() {
  local n="$1"
  shift
  VAULT_ADDR="$(node_addr "$n")" VAULT_TOKEN="$(cat "$STATE_DIR/root.token" 2>/dev/null || true)" \
    "$VAULT_BIN" "$@"
}

# health N: the HTTP status of node N's sys/health (000 when nothing answers): 200 active,
# 429 standby, 473 performance standby, 474 standby that cannot reach the active node,
# 501 not initialised, 503 sealed.
health() { health_code "$(node_addr "$1")"; }

# node_alive N: dies, with the last lines of its log, unless node N runs.
node_alive() { server_alive "node $1" "$(node_dir "$1")"; }

# wait_health N WANT...: waits until node N answers one of the codes; prints it.
wait_health() {
  local n="$1"
  shift
  await_health "node $n" "$(node_dir "$n")" "$(node_addr "$n")" "$TIMEOUT" "$@"
}

write_config() { # N
  local n="$1" d j
  d="$(node_dir "$n")"
  {
    cat <<EOF
storage "raft" {
  path    = "$d/raft"
  node_id = "node$n"
EOF
    # Node 1 is initialised; the others join whichever other node answers.
    if [ "$n" != 1 ]; then
      for j in $NODES; do
        [ "$j" = "$n" ] && continue
        printf '  retry_join {\n    leader_api_addr = "%s"\n  }\n' "$(node_addr "$j")"
      done
    fi
    cat <<EOF
}
listener "tcp" {
  address         = "127.0.0.1:$(node_port "$n")"
  cluster_address = "127.0.0.1:$(cat "$d/vault.cluster-port")"
  tls_disable     = true
}
api_addr         = "$(node_addr "$n")"
cluster_addr     = "https://127.0.0.1:$(cat "$d/vault.cluster-port")"
plugin_directory = "$d/plugins"
disable_mlock    = true
log_level        = "trace"
ui               = false
EOF
  } >"$d/vault.hcl"
}

# launch N: starts node N; its process group (the server and its plugins) is what kill-node kills.
launch() {
  local d
  d="$(node_dir "$1")"
  launch_server "$d" "vault server (node $1)" -config="$d/vault.hcl"
}

copy_plugin() { # N
  [ -x "$PLUGIN_SRC" ] || die "$PLUGIN_SRC is missing (run 'make build')"
  install_plugin "$PLUGIN_SRC" "$(node_dir "$1")/plugins"
}

# unseal N: gives node N the unseal key once and waits until it is active or a standby. Once only:
# a joining node keeps the key until its retry_join completes, and a second key given while that
# completes unseals it twice (Vault 1.21.4 then runs two standby loops, and the node, once active,
# never acts on sys/step-down: the request answers 204 but lands on the other loop's channel).
unseal() {
  local n="$1" deadline code supplied=0
  deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    node_alive "$n"
    code="$(health "$n")"
    case "$code" in
      200 | 429 | 473 | 474) return 0 ;;
      501 | 503)
        if [ "$supplied" = 0 ] && vault_at "$n" operator unseal "$(cat "$STATE_DIR/unseal.key")" >/dev/null 2>&1; then
          supplied=1
        fi
        ;;
    esac
    sleep 0.5
  done
  tail_log "$(node_dir "$n")/vault.log"
  die "node $n was not unsealed within ${TIMEOUT}s (last sys/health: $code)"
}

# active_node prints the number of the node that answers sys/health 200 (nothing when none does).
active_node() {
  local n
  for n in $NODES; do
    if running "$n" && [ "$(health "$n")" = 200 ]; then
      echo "$n"
      return 0
    fi
  done
}

wait_active() {
  local deadline n
  deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    n="$(active_node)"
    if [ -n "$n" ]; then
      echo "$n"
      return 0
    fi
    sleep 0.2
  done
  die "no active node within ${TIMEOUT}s"
}

# wait_voters N: until autopilot reports N healthy voters.
wait_voters() {
  local want="$1" deadline a voters=0
  deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    a="$(wait_active)"
    voters="$(vault_at "$a" read -format=json sys/storage/raft/autopilot/state 2>/dev/null | tr -d ' \n\r\t' |
      grep -o '"voters":\[[^]]*\]' | grep -o '"node[0-9]*"' | wc -l || true)"
    if [ "$voters" -ge "$want" ] &&
      vault_at "$a" read -format=json sys/storage/raft/autopilot/state 2>/dev/null | tr -d ' \n\r\t' | grep -q '"healthy":true'; then
      return 0
    fi
    sleep 0.5
  done
  die "autopilot did not report $want healthy voters within ${TIMEOUT}s (voters: $voters)"
}

register_plugin() { # N (the active node)
  local a="$1" sha
  sha="$(plugin_sha "$(node_dir "$a")/plugins/$PLUGIN_CMD")"
  # No -version: Vault takes the version the plugin reports (as scripts/vault.sh).
  vault_at "$a" plugin register -sha256="$sha" -command="$PLUGIN_CMD" secret "$PLUGIN_NAME" >&2
  vault_at "$a" secrets enable -path="$PLUGIN_NAME" "$PLUGIN_NAME" >&2
  log "plugin $PLUGIN_NAME registered (sha256 $sha) and mounted at $PLUGIN_NAME/"
}

write_env() {
  local n tok
  tok="$(cat "$STATE_DIR/root.token")"
  (
    umask 077
    {
      echo "VAULT_TOKEN=$tok"
      for n in $NODES; do echo "NODE${n}_ADDR=$(node_addr "$n")"; done
    } >"$STATE_DIR/cluster.env"
    for n in $NODES; do
      printf 'VAULT_ADDR=%s\nVAULT_TOKEN=%s\n' "$(node_addr "$n")" "$tok" >"$(node_dir "$n")/vault.env"
    done
  )
}

start() {
  local n a
  for n in $NODES; do
    if running "$n"; then die "node $n is already running (pid $(node_pid "$n")); stop it first"; fi
  done
  [ ! -s "$STATE_DIR/init.json" ] || die "$STATE_DIR holds a cluster already: use restart-node, or a new STATE_DIR"
  vault_bin
  for n in $NODES; do
    mkdir -p "$(node_dir "$n")/raft"
    free_port >"$(node_dir "$n")/vault.port"
    free_port >"$(node_dir "$n")/vault.cluster-port"
    copy_plugin "$n"
  done
  for n in $NODES; do write_config "$n"; done
  for n in $NODES; do launch "$n"; done

  wait_health 1 501 >/dev/null
  log "initialising node 1"
  init_raft vault_at 1
  unseal 1
  wait_health 1 200 >/dev/null
  write_env
  for n in 2 3; do
    log "node $n joins"
    unseal "$n"
  done
  log "waiting for autopilot to promote the followers"
  wait_voters 3
  a="$(wait_active)"
  register_plugin "$a"
  log "running: node 1 pid $(node_pid 1), node 2 pid $(node_pid 2), node 3 pid $(node_pid 3); env: $STATE_DIR/cluster.env"
  for n in $NODES; do node_addr "$n"; done
}

# kill_node N: kill -9 of node N's process group (the server and its plugin processes).
kill_node() {
  local n="$1" pid
  pid="$(node_pid "$n")"
  [ -n "$pid" ] || die "node $n has no pid file"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 100 || true
  rm -f "$(node_dir "$n")/vault.pid"
  log "killed node $n (pid $pid) with SIGKILL"
}

stop_node() {
  local n="$1" pid
  running "$n" || {
    rm -f "$(node_dir "$n")/vault.pid"
    return 0
  }
  pid="$(node_pid "$n")"
  term_and_wait "$pid" 150 || log "node $n (pid $pid) ignored SIGTERM for 15s; killing it"
  # The group also holds the node's plugin processes, which may outlive a killed server.
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$(node_dir "$n")/vault.pid"
  log "stopped node $n (pid $pid)"
}

restart_node() {
  local n="$1"
  [ -f "$(node_dir "$n")/vault.hcl" ] || die "node $n was never started in $STATE_DIR"
  running "$n" && die "node $n is running (pid $(node_pid "$n"))"
  vault_bin
  launch "$n"
  wait_health "$n" 503 429 200 473 474 >/dev/null
  unseal "$n"
  log "node $n is back (pid $(node_pid "$n"))"
  node_addr "$n"
}

status() {
  local n any=1 state code
  for n in $NODES; do
    [ -f "$(node_dir "$n")/vault.port" ] || continue
    if running "$n"; then
      code="$(health "$n")"
      case "$code" in
        200) state=active any=0 ;;
        429 | 473 | 474) state=standby ;;
        503) state=sealed ;;
        501) state=uninitialised ;;
        *) state="unhealthy($code)" ;;
      esac
      echo "$n $(node_addr "$n") $(node_pid "$n") $state"
    else
      echo "$n $(node_addr "$n") - down"
    fi
  done
  return $any
}

need_node() { # N
  case "${1:-}" in
    1 | 2 | 3) ;;
    *) usage ;;
  esac
}

case "$cmd" in
  start) start ;;
  stop) for n in $NODES; do stop_node "$n"; done ;;
  kill-leader)
    a="$(active_node)"
    [ -n "$a" ] || die "no node is active"
    kill_node "$a"
    echo "$a"
    ;;
  kill-node)
    need_node "${1:-}"
    kill_node "$1"
    ;;
  restart-node)
    need_node "${1:-}"
    restart_node "$1"
    ;;
  status) status ;;
  *) usage ;;
esac
