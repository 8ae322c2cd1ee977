#!/usr/bin/env bash
# Prints the path of a real Vault binary, building one when none is at hand.
#
# A `vault` already on PATH is used as it is. Otherwise Vault $VAULT_VERSION is built from the Go
# module proxy alone and cached under $VAULT_CACHE_DIR, so only the first run pays (~10 min on two
# cores, ~6 GB peak memory). `go install github.com/hashicorp/vault@VER` is refused because
# Vault's go.mod has local replace lines; dropping them resolves the nested api/sdk modules from
# the proxy instead, which for v1.21.4 needs three one-line source edits.
#
# All progress goes to stderr; stdout carries only the binary's path.
set -euo pipefail

VAULT_VERSION="${VAULT_VERSION:-v1.21.4}"
VAULT_CACHE_DIR="${VAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-oauth}"

if [ -z "${VAULT_FORCE_BUILD:-}" ] && command -v vault >/dev/null 2>&1; then
  command -v vault
  exit 0
fi

out="$VAULT_CACHE_DIR/vault-$VAULT_VERSION/vault"
stamp="$out.stamp"
want="$VAULT_VERSION tags=minimal $(go env GOVERSION)"
if [ -x "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$out"
  exit 0
fi

{
  echo "vault-binary: building Vault $VAULT_VERSION into $out (first run only)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod

  moddir="$(cd "$work" && go mod download -json "github.com/hashicorp/vault@$VAULT_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\([^"]*\)".*/\1/p')"
  [ -d "$moddir" ] || { echo "vault-binary: download of vault@$VAULT_VERSION failed"; exit 1; }
  src="$work/src"
  cp -r "$moddir" "$src"
  chmod -R u+w "$src"
  cd "$src"

  # The module zip lacks the nested modules (api/, sdk/, ...): use their proxy versions.
  local_mods="$(go mod edit -json | awk '
    /"Old": \{/ { getline; gsub(/[",]/, "", $2); old = $2 }
    /"New": \{/ { getline; gsub(/[",]/, "", $2); if ($2 ~ /^\.\.?\//) print old }')"
  for m in $local_mods; do go mod edit -dropreplace="$m"; done
  # shellcheck disable=SC2086
  [ -z "$local_mods" ] || go mod download $local_mods

  edit() { # file sed-expression text-that-must-be-there-after
    sed -i "$2" "$1"
    grep -qF -- "$3" "$1" || { echo "vault-binary: source edit failed in $1"; exit 1; }
  }
  if [ "$VAULT_VERSION" = v1.21.4 ]; then
    # The release's in-tree sdk differs from the published sdk in two signatures.
    edit vault/identity_store_util.go \
      's/^func (i \*IdentityStore) activateDeduplication(ctx context.Context, req \*logical.Request) error {/func (i *IdentityStore) activateDeduplication(ctx context.Context, req *logical.Request, _ string) error {/' \
      'req *logical.Request, _ string) error {'
    edit vault/logical_system_activation_flags.go \
      's/b\.idStoreBackend\.ActivationFunc(ctx, nil)/b.idStoreBackend.ActivationFunc(ctx, nil, "")/' \
      'ActivationFunc(ctx, nil, "")'
    edit builtin/logical/transit/path_restore.go \
      's/restoredKeyName, err := b\.lm\.RestorePolicy(/restoredKeyName, err := keyName, b.lm.RestorePolicy(/' \
      'restoredKeyName, err := keyName, b.lm.RestorePolicy('
  fi

  mkdir -p "$(dirname "$out")"
  go build -trimpath -tags minimal -ldflags "-s -w" -o "$out.tmp" .
  mv "$out.tmp" "$out"
  echo "$want" >"$stamp"
  "$out" version
} >&2
echo "$out"
