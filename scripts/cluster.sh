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
PLUGIN_NAME=oauth
PLUGIN_CMD=vault-plugin-secrets-oauth
PLUGIN_SRC="${PLUGIN_BIN:-$ROOT/bin/$PLUGIN_CMD}"
TIMEOUT="${CLUSTER_START_TIMEOUT:-120}"
NODES="1 2 3"

log() { echo "cluster.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}
usage() { die "usage: $0 start|stop|kill-leader|status STATE_DIR | kill-node|restart-node STATE_DIR N"; }

[ $# -ge 2 ] || usage
cmd="$1"
mkdir -p "$2"
STATE_DIR="$(cd "$2" && pwd)"
shift 2

unset VAULT_NAMESPACE VAULT_CACERT VAULT_CAPATH VAULT_CLIENT_CERT VAULT_CLIENT_KEY VAULT_AGENT_ADDR || true

# free_port prints a TCP port on 127.0.0.1 that nothing listens on and that this script has not
# handed out yet (TAKEN), below the kernel's range for outgoing connections (as scripts/vault.sh).
TAKEN=" "
free_port() {
  local p i low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  for i in $(seq 1 200); do
    p=$((10000 + (RANDOM * 32768 + RANDOM + i) % (low - 10002)))
    case "$TAKEN" in *" $p "*) continue ;; esac
    if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      TAKEN="$TAKEN$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

node_dir() { echo "$STATE_DIR/node$1"; }
node_port() { cat "$(node_dir "$1")/vault.port"; }
node_addr() { echo "http://127.0.0.1:$(node_port "$1")"; }
node_pid() { cat "$(node_dir "$1")/vault.pid" 2>/dev/null || true; }

running() {
  local pid
  pid="$(node_pid "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

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
health() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(node_addr "$1")/v1/sys/health" 2>/dev/null || true
}

tail_log() {
  local f
  f="$(node_dir "$1")/vault.log"
  if [ -f "$f" ]; then
    log "last lines of $f:"
    tail -n 40 "$f" >&2
  fi
}

# wait_health N WANT...: waits until node N answers one of the codes; prints it.
wait_health() {
  local n="$1" deadline code w
  shift
  deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    running "$n" || {
      tail_log "$n"
      die "node $n exited (log: $(node_dir "$n")/vault.log)"
    }
    code="$(health "$n")"
    for w in "$@"; do
      if [ "$code" = "$w" ]; then
        echo "$code"
        return 0
      fi
    done
    sleep 0.2
  done
  tail_log "$n"
  die "node $n did not answer sys/health with $* within ${TIMEOUT}s (last: $code)"
}

json_field() { # FIELD: first string value of FIELD (or of the first item of its array) on stdin
  tr -d ' \n\r\t' | sed -n "s/.*\"$1\":\\[*\"\\([^\"]*\\)\".*/\\1/p"
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

launch() { # N
  local n="$1" d
  d="$(node_dir "$n")"
  : >>"$d/vault.log"
  echo "==== $(date -u +%FT%TZ) vault server (node $n) ====" >>"$d/vault.log"
  # setsid: the node outlives this script, ignores the terminal's Ctrl-C, and leads its own
  # process group (with its plugin processes), which kill-node kills as a whole.
  HOME="$d" setsid "$VAULT_BIN" server -config="$d/vault.hcl" </dev/null >>"$d/vault.log" 2>&1 &
  echo $! >"$d/vault.pid"
}

copy_plugin() { # N
  local d
  d="$(node_dir "$1")/plugins"
  mkdir -p "$d"
  [ -x "$PLUGIN_SRC" ] || die "$PLUGIN_SRC is missing (run 'make build')"
  cp "$PLUGIN_SRC" "$d/.$PLUGIN_CMD.tmp"
  mv -f "$d/.$PLUGIN_CMD.tmp" "$d/$PLUGIN_CMD"
}

# unseal N: gives node N the unseal key once and waits until it is active or a standby. Once only:
# a joining node keeps the key until its retry_join completes, and a second key given while that
# completes unseals it twice (Vault 1.21.4 then runs two standby loops, and the node, once active,
# never acts on sys/step-down: the request answers 204 but lands on the other loop's channel).
unseal() {
  local n="$1" deadline code supplied=0
  deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    running "$n" || {
      tail_log "$n"
      die "node $n exited (log: $(node_dir "$n")/vault.log)"
    }
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
  tail_log "$n"
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
  sha="$(sha256sum "$(node_dir "$a")/plugins/$PLUGIN_CMD" | cut -d' ' -f1)"
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
  (umask 077 && vault_at 1 operator init -key-shares=1 -key-threshold=1 -format=json >"$STATE_DIR/init.json")
  (umask 077 && json_field unseal_keys_b64 <"$STATE_DIR/init.json" >"$STATE_DIR/unseal.key")
  (umask 077 && json_field root_token <"$STATE_DIR/init.json" >"$STATE_DIR/root.token")
  [ -s "$STATE_DIR/unseal.key" ] && [ -s "$STATE_DIR/root.token" ] ||
    die "could not read the unseal key / root token from $STATE_DIR/init.json"
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
  local n="$1" pid i
  pid="$(node_pid "$n")"
  [ -n "$pid" ] || die "node $n has no pid file"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$(node_dir "$n")/vault.pid"
  log "killed node $n (pid $pid) with SIGKILL"
}

stop_node() {
  local n="$1" pid i
  running "$n" || {
    rm -f "$(node_dir "$n")/vault.pid"
    return 0
  }
  pid="$(node_pid "$n")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "node $n (pid $pid) ignored SIGTERM for 15s; killing it"
  fi
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
