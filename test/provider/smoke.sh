#!/usr/bin/env bash
# Smoke test of the test provider: starts it through scripts/provider.sh in a temporary state
# folder, walks every grant and endpoint the e2e tests rely on with curl, and stops it again.
# Needs node, npm and curl. Exit status 0 only when every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/provider-smoke.XXXXXX")"

passed=0
failed=0

cleanup() {
  "$ROOT/scripts/provider.sh" stop "$STATE" 2>/dev/null || true
  if [ "$failed" -ne 0 ] && [ -f "$STATE/provider.log" ]; then
    echo "--- provider.log (last 30 lines) ---"
    tail -n 30 "$STATE/provider.log"
  fi
  rm -rf "$STATE"
}
trap cleanup EXIT

check() { # check DESCRIPTION ACTUAL EXPECTED
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1: got '$2', want '$3'"
  fi
}

# json EXPR < document: prints the JavaScript expression EXPR evaluated on the parsed document
# (bound to `d`); objects are printed as JSON, undefined as an empty string.
json() {
  node -e '
    let s = ""; process.stdin.on("data", (c) => { s += c; }).on("end", () => {
      const d = JSON.parse(s); const v = eval(process.argv[1]);
      process.stdout.write(v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
    });' "$1"
}

# post PATH [curl args...]: form POST to the provider, body on stdout, whatever the status.
post() {
  local path="$1"
  shift
  curl -sS -X POST "$URL$path" "$@"
}

URL="$("$ROOT/scripts/provider.sh" start "$STATE")"
echo "provider at $URL"

discovery="$(curl -fsS "$URL/.well-known/openid-configuration")"
check "discovery issuer" "$(json 'd.issuer' <<<"$discovery")" "$URL"
check "discovery lists auth method none" "$(json 'd.token_endpoint_auth_methods_supported.includes("none")' <<<"$discovery")" true
check "discovery lists jwt-bearer" \
  "$(json 'd.grant_types_supported.includes("urn:ietf:params:oauth:grant-type:jwt-bearer")' <<<"$discovery")" true
curl -fsS -X POST "$URL/test/stats/reset" >/dev/null

# --- client_credentials, introspection, revocation ------------------------------------------
reg="$(post /reg -H 'content-type: application/json' \
  -d '{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic","scope":"read write api","access_token_ttl":90}')"
cc_id="$(json 'd.client_id' <<<"$reg")"
cc_secret="$(json 'd.client_secret' <<<"$reg")"
check "register client_credentials client" "$([ -n "$cc_id" ] && echo yes)" yes

tok="$(post /token -u "$cc_id:$cc_secret" -d grant_type=client_credentials -d 'scope=read write')"
at="$(json 'd.access_token' <<<"$tok")"
check "client_credentials token_type" "$(json 'd.token_type' <<<"$tok")" Bearer
check "client_credentials expires_in = access_token_ttl" "$(json 'd.expires_in' <<<"$tok")" 90
check "client_credentials scope" "$(json 'd.scope' <<<"$tok")" "read write"

intro="$(post /token/introspection -u "introspector:introspector-secret" -d "token=$at")"
check "introspect as introspector: active" "$(json 'd.active' <<<"$intro")" true
check "introspect: client_id" "$(json 'd.client_id' <<<"$intro")" "$cc_id"

code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$URL/token/revocation" -u "introspector:introspector-secret" -d "token=$at")"
check "revoke as introspector: 200" "$code" 200
intro="$(post /token/introspection -u "introspector:introspector-secret" -d "token=$at")"
check "introspect after revocation: inactive" "$(json 'd.active' <<<"$intro")" false

# --- password -> refresh -> refresh, rotation ---------------------------------------------
reg="$(post /reg -H 'content-type: application/json' \
  -d '{"grant_types":["password","refresh_token"],"token_endpoint_auth_method":"client_secret_post","scope":"openid profile read","access_token_ttl":120}')"
pw_id="$(json 'd.client_id' <<<"$reg")"
pw_secret="$(json 'd.client_secret' <<<"$reg")"

tok="$(post /token -d grant_type=password -d "client_id=$pw_id" -d "client_secret=$pw_secret" \
  -d username=alice -d password=wrong)"
check "password grant, wrong password: invalid_grant" "$(json 'd.error' <<<"$tok")" invalid_grant

tok="$(post /token -d grant_type=password -d "client_id=$pw_id" -d "client_secret=$pw_secret" \
  -d username=alice -d password=alice-password -d 'scope=openid read' -d takeExclusiveSignOnControl=true)"
rt1="$(json 'd.refresh_token' <<<"$tok")"
check "password grant: refresh_token issued" "$([ -n "$rt1" ] && echo yes)" yes
check "password grant: id_token issued" "$(json 'd.id_token.split(".").length' <<<"$tok")" 3
check "password grant: scope" "$(json 'd.scope' <<<"$tok")" "openid read"

tok="$(post /token -d grant_type=refresh_token -d "client_id=$pw_id" -d "client_secret=$pw_secret" -d "refresh_token=$rt1")"
rt2="$(json 'd.refresh_token' <<<"$tok")"
check "refresh #1: new access token" "$([ -n "$(json 'd.access_token' <<<"$tok")" ] && echo yes)" yes
check "refresh #1: rotated refresh token" "$([ -n "$rt2" ] && [ "$rt2" != "$rt1" ] && echo yes)" yes
check "refresh #1: expires_in = access_token_ttl" "$(json 'd.expires_in' <<<"$tok")" 120

tok="$(post /token -d grant_type=refresh_token -d "client_id=$pw_id" -d "client_secret=$pw_secret" -d "refresh_token=$rt2")"
rt3="$(json 'd.refresh_token' <<<"$tok")"
check "refresh #2: rotated again" "$([ -n "$rt3" ] && [ "$rt3" != "$rt2" ] && echo yes)" yes

tok="$(post /token -d grant_type=refresh_token -d "client_id=$pw_id" -d "client_secret=$pw_secret" -d "refresh_token=$rt1")"
check "reusing a rotated refresh token: invalid_grant" "$(json 'd.error' <<<"$tok")" invalid_grant

# --- jwt-bearer with an HS256 assertion signed with the client's secret ----------------------
reg="$(post /reg -H 'content-type: application/json' \
  -d '{"grant_types":["urn:ietf:params:oauth:grant-type:jwt-bearer"],"scope":"api"}')"
jb_id="$(json 'd.client_id' <<<"$reg")"
jb_secret="$(json 'd.client_secret' <<<"$reg")"
# The secret travels by environment, not argv, so it never shows in a process listing.
assertion="$(cd "$HERE" && JB_ID="$jb_id" JB_SECRET="$jb_secret" AUD="$URL/token" node --input-type=module -e '
  import * as jose from "jose";
  const now = Math.floor(Date.now() / 1000);
  const jwt = await new jose.SignJWT({ sub: "service-account-1" })
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer(process.env.JB_ID).setAudience(process.env.AUD)
    .setIssuedAt(now).setExpirationTime(now + 60).setJti(crypto.randomUUID())
    .sign(new TextEncoder().encode(process.env.JB_SECRET));
  process.stdout.write(jwt);')"
tok="$(post /token -u "$jb_id:$jb_secret" -d grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer -d "assertion=$assertion")"
check "jwt-bearer: scope" "$(json 'd.scope' <<<"$tok")" api
intro="$(post /token/introspection -u "introspector:introspector-secret" -d "token=$(json 'd.access_token' <<<"$tok")")"
check "jwt-bearer: token subject is the assertion sub" "$(json 'd.sub' <<<"$intro")" service-account-1
tok="$(post /token -u "$jb_id:$jb_secret" -d grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer -d "assertion=$assertion")"
check "jwt-bearer: replayed assertion rejected" "$(json 'd.error' <<<"$tok")" invalid_grant

# --- /test/stats -----------------------------------------------------------------------------
stats="$(curl -fsS "$URL/test/stats")"
check "stats: token_requests" "$(json 'd.token_requests' <<<"$stats")" 8
check "stats: by_grant client_credentials" "$(json 'd.by_grant.client_credentials' <<<"$stats")" 1
check "stats: by_grant password" "$(json 'd.by_grant.password' <<<"$stats")" 2
check "stats: by_grant refresh_token" "$(json 'd.by_grant.refresh_token' <<<"$stats")" 3
check "stats: by_grant jwt-bearer" "$(json 'd.by_grant["urn:ietf:params:oauth:grant-type:jwt-bearer"]' <<<"$stats")" 2
check "stats: by_client password client" "$(json "d.by_client['$pw_id']" <<<"$stats")" 5
check "stats: in_flight" "$(json 'd.in_flight' <<<"$stats")" 0
check "stats: extra password param recorded" \
  "$(json 'd.last_params.password.takeExclusiveSignOnControl' <<<"$stats")" true
check "stats: password not recorded" "$(json '"password" in d.last_params.password' <<<"$stats")" false
check "stats: refresh_token not recorded" "$(json '"refresh_token" in d.last_params.refresh_token' <<<"$stats")" false
check "stats: client_secret not recorded" "$(json '"client_secret" in d.last_params.refresh_token' <<<"$stats")" false
check "stats: assertion not recorded" \
  "$(json '"assertion" in d.last_params["urn:ietf:params:oauth:grant-type:jwt-bearer"]' <<<"$stats")" false
reset="$(curl -fsS -X POST "$URL/test/stats/reset")"
check "stats reset" "$(json 'd.token_requests + d.peak_in_flight' <<<"$reset")" 0

# --- authorization code + PKCE, through the sign-in and consent pages -------------------------
JAR="$STATE/cookies"
# visit URL [curl args...]: a browser step with a cookie jar. Follows the provider's redirects
# (a POST's 303 becomes a GET), leaves the last page in $STATE/page.html and its status in
# $STATE/status, and prints the last URL: a redirect away from the provider is not followed.
visit() {
  local url="$1" out next
  shift
  while :; do
    out="$(curl -sS -c "$JAR" -b "$JAR" -o "$STATE/page.html" -w '%{http_code} %{redirect_url}' "$@" "$url")"
    echo "${out%% *}" >"$STATE/status"
    next="${out#* }"
    if [ -z "$next" ] || [[ "$next" != "$URL"/* ]]; then
      echo "${next:-$url}"
      return
    fi
    url="$next"
    set --
  done
}
# form_action ID: the action of the form with that id on the last page.
form_action() { sed -n "s/.*<form id=\"$1\"[^>]*action=\"\([^\"]*\)\".*/\1/p" "$STATE/page.html" | head -n1; }
# param NAME URL: a query parameter of a URL, decoded.
param() { node -e 'process.stdout.write(new URL(process.argv[2]).searchParams.get(process.argv[1]) ?? "")' "$1" "$2"; }

cb="http://127.0.0.1:9/v1/oauth/callback"
reg="$(post /reg -H 'content-type: application/json' \
  -d "{\"grant_types\":[\"authorization_code\",\"refresh_token\"],\"response_types\":[\"code\"],\"redirect_uris\":[\"$cb\"],\"scope\":\"openid read\"}")"
ac_id="$(json 'd.client_id' <<<"$reg")"
ac_secret="$(json 'd.client_secret' <<<"$reg")"
verifier="smoke-verifier-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
challenge="$(printf %s "$verifier" | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=')"
auth="$URL/auth?response_type=code&client_id=$ac_id&redirect_uri=$(node -pe 'encodeURIComponent(process.argv[1])' "$cb")&scope=openid%20read&state=s-1&nonce=n-1"

rm -f "$JAR"
at_cb="$(visit "$auth")"
check "authorize without PKCE: invalid_request at the redirect URI" "$(param error "$at_cb")" invalid_request

rm -f "$JAR"
visit "$auth&code_challenge=$challenge&code_challenge_method=S256" >/dev/null
login="$URL$(form_action login)"
check "authorize: sign-in page" "$(grep -c 'name="password"' "$STATE/page.html")" 1
visit "$login" -d username=alice -d password=wrong >/dev/null
check "sign-in, wrong password: 401" "$(cat "$STATE/status")" 401
visit "$login" -d username=alice -d password=alice-password >/dev/null
check "sign-in: consent page lists the scopes" "$(grep -o '<li>[a-z]*</li>' "$STATE/page.html" | tr -d '\n')" "<li>openid</li><li>read</li>"
at_cb="$(visit "$URL$(form_action consent)" -X POST)"
code="$(param code "$at_cb")"
check "consent: back at the exact redirect URI" "${at_cb%%\?*}" "$cb"
check "consent: state" "$(param state "$at_cb")" s-1
check "consent: iss (RFC 9207)" "$(param iss "$at_cb")" "$URL"
tok="$(post /token -u "$ac_id:$ac_secret" -d grant_type=authorization_code -d "code=$code" --data-urlencode "redirect_uri=$cb" -d "code_verifier=$verifier")"
check "authorization_code: refresh_token issued" "$([ -n "$(json 'd.refresh_token' <<<"$tok")" ] && echo yes)" yes
check "authorization_code: id_token issued" "$(json 'd.id_token.split(".").length' <<<"$tok")" 3
intro="$(post /token/introspection -u "introspector:introspector-secret" -d "token=$(json 'd.access_token' <<<"$tok")")"
check "authorization_code: token active for alice" "$(json 'd.active + " " + d.sub' <<<"$intro")" "true alice"
rts() { curl -fsS "$URL/test/refresh_tokens?client_id=$1"; }
check "test/refresh_tokens after the exchange" "$(rts "$ac_id")" '{"active":1,"consumed":0}'
secrets="$(curl -fsS "$URL/test/secrets?client_id=$ac_id")"
check "test/secrets: the code, the verifier and the tokens" \
  "$(json "[d.authorization_code.includes('$code'), d.code_verifier.includes('$verifier'), d.refresh_token.includes('$(json 'd.refresh_token' <<<"$tok")'), d.access_token.includes('$(json 'd.access_token' <<<"$tok")')].join()" <<<"$secrets")" \
  "true,true,true,true"
tok="$(post /token -u "$ac_id:$ac_secret" -d grant_type=refresh_token -d "refresh_token=$(json 'd.refresh_token' <<<"$tok")")"
check "authorization_code: its refresh token rotates" "$(rts "$ac_id")" '{"active":1,"consumed":1}'
tok="$(post /token -u "$ac_id:$ac_secret" -d grant_type=authorization_code -d "code=$code" --data-urlencode "redirect_uri=$cb" -d "code_verifier=$verifier")"
check "authorization_code: replayed code rejected" "$(json 'd.error' <<<"$tok")" invalid_grant
check "authorization_code: replay revokes the code's grant" "$(rts "$ac_id")" '{"active":0,"consumed":0}'

rm -f "$JAR"
visit "$auth&code_challenge=$challenge&code_challenge_method=S256&prompt=consent" >/dev/null
visit "$URL$(form_action login)" -d username=alice -d password=alice-password >/dev/null
at_cb="$(visit "$URL$(form_action abort)" -X POST)"
check "consent denied: access_denied at the redirect URI" "$(param error "$at_cb")" access_denied

# --- device authorization grant (RFC 8628) -------------------------------------------------------
reg="$(post /reg -H 'content-type: application/json' \
  -d '{"grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"],"scope":"openid read"}')"
dv_id="$(json 'd.client_id' <<<"$reg")"
dv_secret="$(json 'd.client_secret' <<<"$reg")"
dev="$(post /device/auth -u "$dv_id:$dv_secret" -d 'scope=openid read')"
poll() { post /token -u "$dv_id:$dv_secret" -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d "device_code=$(json 'd.device_code' <<<"$1")"; }
check "device: verification_uri" "$(json 'd.verification_uri' <<<"$dev")" "$URL/device"
check "device: pending" "$(json 'd.error' <<<"$(poll "$dev")")" authorization_pending
rm -f "$JAR"
visit "$(json 'd.verification_uri' <<<"$dev")" >/dev/null
xsrf="$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$STATE/page.html" | head -n1)"
visit "$URL/device" -d "xsrf=$xsrf" -d "user_code=$(json 'd.user_code' <<<"$dev")" >/dev/null
check "device: confirm page shows the code" "$(grep -q "<code id=\"user_code\">$(json 'd.user_code' <<<"$dev")<" "$STATE/page.html" && echo yes)" yes
visit "$URL/device" -d "xsrf=$xsrf" -d "user_code=$(json 'd.user_code' <<<"$dev")" -d confirm=yes >/dev/null
visit "$URL$(form_action login)" -d username=alice -d password=alice-password >/dev/null
visit "$URL$(form_action consent)" -X POST >/dev/null
check "device: success page" "$(grep -q '<h1>Device connected</h1>' "$STATE/page.html" && echo yes)" yes
tok="$(poll "$dev")"
check "test/secrets: the device code" \
  "$(json "d.device_code.includes('$(json 'd.device_code' <<<"$dev")')" <<<"$(curl -fsS "$URL/test/secrets?client_id=$dv_id")")" true
check "device: refresh_token issued" "$([ -n "$(json 'd.refresh_token' <<<"$tok")" ] && echo yes)" yes
intro="$(post /token/introspection -u "introspector:introspector-secret" -d "token=$(json 'd.access_token' <<<"$tok")")"
check "device: token active for alice" "$(json 'd.active + " " + d.sub' <<<"$intro")" "true alice"

dev="$(post /device/auth -u "$dv_id:$dv_secret" -d 'scope=read')"
rm -f "$JAR"
visit "$URL/device" >/dev/null
xsrf="$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$STATE/page.html" | head -n1)"
visit "$URL/device" -d "xsrf=$xsrf" -d "user_code=$(json 'd.user_code' <<<"$dev")" -d abort=yes >/dev/null
check "device: aborted → access_denied" "$(json 'd.error' <<<"$(poll "$dev")")" access_denied

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
