#!/usr/bin/env bash
# The browser check of issue 13, in a real browser: headless Chromium opens the auth_url of an
# authorization_code role, signs in and consents on the test provider's pages, and lands on
# Vault's callback page, of which it saves a screenshot. Then creds must work. Not part of
# `make test`; run it by hand and look at the screenshot.
#
#   scripts/browser-check.sh [SCREENSHOT]     (default e2e/artifacts/callback-page.png)
#
# The transcript of the browser's steps (page paths, never a query) and the role's status go to
# SCREENSHOT's name with .log instead of .png.
#
# Needs chromium (Debian: apt-get install chromium), node and curl; builds the plugin when
# bin/ lacks it. Starts its own provider and dev-mode Vault in a temporary state dir (kept, with
# its logs, when the check fails) and stops them when done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_NAME=browser-check
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
SHOT="$(realpath -m "${1:-$ROOT/e2e/artifacts/callback-page.png}")"
ROLE=mail

command -v "${CHROMIUM:-chromium}" >/dev/null || die "chromium is not installed (Debian: apt-get install chromium)"
command -v node >/dev/null || die "node is not installed"
[ -x "$ROOT/bin/$PLUGIN_CMD" ] || (cd "$ROOT" && make build)

STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/browser-check.XXXXXX")"
ok=0
cleanup() {
  "$ROOT/scripts/vault.sh" stop "$STATE_DIR" >/dev/null 2>&1 || true
  "$ROOT/scripts/provider.sh" stop "$STATE_DIR" >/dev/null 2>&1 || true
  if [ "$ok" = 1 ]; then rm -rf "$STATE_DIR"; else log "FAILED; logs kept in $STATE_DIR"; fi
}
trap cleanup EXIT

json_get() { # json_get KEY < document
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];if(v===undefined)process.exit(1);console.log(v)})' "$1"
}

issuer="$("$ROOT/scripts/provider.sh" start "$STATE_DIR" | tail -n 1)"
issuer="${issuer%/}"
"$ROOT/scripts/vault.sh" start "$STATE_DIR" --audit >/dev/null
# shellcheck disable=SC1091
. "$STATE_DIR/vault.env"
export VAULT_ADDR VAULT_TOKEN
vault_bin="$("$ROOT/scripts/vault-binary.sh" | tail -n 1)"
callback="$VAULT_ADDR/v1/oauth/callback"

# The client, registered as an operator would at a real provider: Vault's callback as its
# redirect URI.
client="$(curl -fsS -X POST -H 'Content-Type: application/json' "$issuer/reg" \
  -d "{\"grant_types\":[\"authorization_code\",\"refresh_token\"],\"response_types\":[\"code\"],\"redirect_uris\":[\"$callback\"],\"scope\":\"openid read\",\"client_name\":\"Vault browser check\"}")"
"$vault_bin" write oauth/config issuer="$issuer" >/dev/null
"$vault_bin" write oauth/roles/$ROLE grant_type=authorization_code \
  client_id="$(json_get client_id <<<"$client")" client_secret="$(json_get client_secret <<<"$client")" \
  redirect_uri="$callback" scopes=openid,read auth_params=prompt=consent >/dev/null
auth_url="$("$vault_bin" write -force -field=auth_url oauth/authorize/$ROLE)"
log "Vault $VAULT_ADDR, provider $issuer; opening the auth_url of oauth/authorize/$ROLE in Chromium"

mkdir -p "$(dirname "$SHOT")"
transcript="${SHOT%.png}.log"
{
  AUTH_URL="$auth_url" CALLBACK_URL="$callback" SCREENSHOT="$SHOT" ROLE="$ROLE" \
    FLOW_USER=alice FLOW_PASSWORD=alice-password node "$ROOT/scripts/browser-check.mjs"
  echo "vault read oauth/roles/$ROLE/status:"
  "$vault_bin" read oauth/roles/$ROLE/status | grep -E '^(authorization|authorized_at|sub) '
  expires="$("$vault_bin" read -field=expires_at oauth/creds/$ROLE)" || die "creds failed after the browser's callback"
  echo "vault read oauth/creds/$ROLE: a token until $expires"
} 2>&1 | tee "$transcript"
log "passed; look at $SHOT (transcript: $transcript)"
ok=1
