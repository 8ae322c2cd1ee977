#!/usr/bin/env bash
# Prints the path of a real OpenBao server binary (`bao`), building one when none is at hand.
#
# A `bao` already on PATH is used as it is. Otherwise OpenBao is built from the Go module proxy
# alone and cached under $OPENBAO_CACHE_DIR, so only the first run pays (~10 min on two cores).
# OpenBao's release tags are not importable as module versions, so a small wrapper module calls
# its command.Run at a pseudo-version of the 2.0 line.
#
# All progress goes to stderr; stdout carries only the binary's path.
set -euo pipefail

OPENBAO_VERSION="${OPENBAO_VERSION:-v0.0.0-20250228171903-17824a97f7b9}" # OpenBao 2.0.x
OPENBAO_CACHE_DIR="${OPENBAO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-oauth}"

if [ -z "${OPENBAO_FORCE_BUILD:-}" ] && command -v bao >/dev/null 2>&1; then
  command -v bao
  exit 0
fi

out="$OPENBAO_CACHE_DIR/openbao-$OPENBAO_VERSION/bao"
stamp="$out.stamp"
want="$OPENBAO_VERSION $(go env GOVERSION)"
if [ -x "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$out"
  exit 0
fi
# Only report whether it is cached (for make test, which runs the OpenBao suite only then).
if [ -n "${OPENBAO_CACHED_ONLY:-}" ]; then
  exit 1
fi

{
  echo "openbao-binary: building OpenBao $OPENBAO_VERSION into $out (first run only)"
  start=$(date +%s)
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod
  cd "$work"
  cat >go.mod <<'MOD'
module bao-wrapper

go 1.24
MOD
  cat >main.go <<'GO'
// Command bao is OpenBao's CLI and server, built from its command package.
package main

import (
	"os"

	"github.com/openbao/openbao/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
GO
  go get "github.com/openbao/openbao@$OPENBAO_VERSION"
  # -e: tidy also walks the tests of OpenBao's packages, some of whose imports the proxy lacks.
  go mod tidy -e
  mkdir -p "$(dirname "$out")"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
  mv "$out.tmp" "$out"
  echo "$want" >"$stamp"
  echo "openbao-binary: built in $(( $(date +%s) - start ))s"
  "$out" version
} >&2
echo "$out"
