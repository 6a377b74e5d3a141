#!/usr/bin/env bash
# System packages the tests use: redis-server, prometheus (+ promtool), chromium (headless
# rendering of the HTML report) and chromium-driver (Selenium drives ser-dashboard in chromium).
# Installs only what is missing; idempotent and non-interactive.
# Tests that need one of them skip, saying so, where it is absent (e.g. no root, no apt).
set -euo pipefail

declare -A wanted=(
    [redis-server]=redis-server
    [prometheus]=prometheus
    [promtool]=prometheus
    [chromium]=chromium
    [chromedriver]=chromium-driver
)
missing=()
for cmd in "${!wanted[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        pkg=${wanted[$cmd]}
        [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system deps: all present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system deps: missing ${missing[*]} and no apt-get; the tests needing them will skip" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "system deps: missing ${missing[*]}, not root and no sudo; the tests needing them will skip" >&2
        exit 0
    fi
fi

echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
