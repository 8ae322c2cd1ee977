#!/usr/bin/env bash
# Installs the Debian packages the end-to-end suite needs and a fresh machine lacks: Python's
# oauthlib, PyJWT and cryptography for test/oauth1server (the OAuth 1.0a server that verifies
# signatures with an implementation independent of ours). Does nothing when they are there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(python3-oauthlib python3-jwt python3-cryptography)
if /usr/bin/python3 -c 'import oauthlib, jwt, cryptography' 2>/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
log "installing ${packages[*]} (apt-get)"
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
/usr/bin/python3 -c 'import oauthlib, jwt, cryptography'
