#!/usr/bin/env bash
# A local playground: the test OAuth provider and a dev-mode Vault with the plugin mounted at oauth/,
# configured (issuer discovery) with a freshly registered client and a role "demo".
#
#   scripts/dev.sh [start]     (what `make dev` runs after `make build`)
#   scripts/dev.sh stop
#
# State and logs: .e2e/dev (vault.log, audit.log, provider logs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$ROOT/.e2e/dev"

stop() {
  "$ROOT/scripts/vault.sh" stop "$STATE_DIR" || true
  "$ROOT/scripts/provider.sh" stop "$STATE_DIR" || true
  echo "dev: stopped"
}

# json_get KEY: the top-level KEY of the JSON document on stdin (node is there for the provider).
json_get() {
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];if(v===undefined)process.exit(1);console.log(v)})' "$1"
}

start() {
  [ -x "$ROOT/bin/vault-plugin-secrets-oauth" ] || (cd "$ROOT" && make build)
  mkdir -p "$STATE_DIR"

  issuer="$("$ROOT/scripts/provider.sh" start "$STATE_DIR" | tail -n 1)"
  issuer="${issuer%/}"
  addr="$("$ROOT/scripts/vault.sh" start "$STATE_DIR" --audit | tail -n 1)"
  vault_bin="$("$ROOT/scripts/vault-binary.sh")"

  reg_endpoint="$(curl -fsS "$issuer/.well-known/openid-configuration" | json_get registration_endpoint)"
  client="$(curl -fsS -X POST -H 'Content-Type: application/json' "$reg_endpoint" \
    -d '{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic","scope":"read write","response_types":[],"redirect_uris":[]}')"
  client_id="$(json_get client_id <<<"$client")"
  client_secret="$(json_get client_secret <<<"$client")"

  export VAULT_ADDR="$addr" VAULT_TOKEN=root
  "$vault_bin" write oauth/config issuer="$issuer" client_id="$client_id" client_secret="$client_secret" >/dev/null
  "$vault_bin" write oauth/roles/demo grant_type=client_credentials scopes=read >/dev/null

  cat <<MSG

dev: Vault $addr (root token "root") with the oauth plugin at oauth/; OAuth provider $issuer
     (client $client_id); logs in $STATE_DIR

  export VAULT_ADDR=$addr VAULT_TOKEN=root
  export PATH="$(dirname "$vault_bin"):\$PATH"
  vault read oauth/creds/demo
  vault read oauth/config
  vault read oauth/roles/demo

Stop with: scripts/dev.sh stop
MSG
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  *)
    echo "usage: $0 [start|stop|restart]" >&2
    exit 2
    ;;
esac
