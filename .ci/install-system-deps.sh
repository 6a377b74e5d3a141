#!/usr/bin/env bash
# System packages the tests use: redis-server, prometheus (+ promtool), chromium (headless
# rendering of the HTML report), chromium-driver (Selenium drives ser-dashboard in chromium) and
# postgresql (the archive's tests start their own server: tests/pg_server.py).
# Installs only what is missing; idempotent and non-interactive. (redis-server's package brings
# redis-cli; openssl, which makes the TLS tests' certificates, is checked too.)
# Exits non-zero, saying what is missing, when it cannot install (no apt-get, not root and no
# sudo, or the install did not provide the commands): .ci/run then stops, and under its
# SER_REQUIRE_SYSTEM_DEPS=1 the tests needing them would fail rather than skip (tests/sysdeps.py).
# Outside CI, without these, the tests needing them skip, saying so.
set -euo pipefail

declare -A wanted=(
    [redis-server]=redis-server
    [prometheus]=prometheus
    [promtool]=prometheus
    [chromium]=chromium
    [chromedriver]=chromium-driver
    [openssl]=openssl
    [postgres]=postgresql
)
# Debian's postgresql keeps its server binaries off PATH, in /usr/lib/postgresql/<version>/bin.
PG_ROOT=${SER_PG_ROOT:-/usr/lib/postgresql}
have() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$1" = postgres ] && compgen -G "$PG_ROOT/*/bin/postgres" >/dev/null
}
missing=()
for cmd in "${!wanted[@]}"; do
    if ! have "$cmd"; then
        pkg=${wanted[$cmd]}
        [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system deps: all present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system deps: missing ${missing[*]} and no apt-get to install them: install them by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "system deps: missing ${missing[*]}, not root and no password-less sudo: install them by hand" >&2
        exit 1
    fi
fi

echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

still=()
for cmd in "${!wanted[@]}"; do
    have "$cmd" || still+=("$cmd")
done
if [ ${#still[@]} -ne 0 ]; then
    echo "system deps: still missing after the install: ${still[*]}" >&2
    exit 1
fi
echo "system deps: installed ${missing[*]}"
