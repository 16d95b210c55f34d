#!/usr/bin/env bash
# System packages the tests need beyond the Python venv, from Debian:
#   chromium + chromium-driver  browser tests of /studio and /ops (Playwright drives the system browser)
#   docker-compose              `docker-compose config` validates deploy/compose.yaml (no engine needed)
#   docker.io + debootstrap     the project's own Docker engine and its locally built images
#                               (scripts/docker-engine.sh; the tests/containers tier)
#   fonts-noto-color-emoji      emoji in the ops console screenshots
# Idempotent: installs only what is missing; needs root to install (tests that need a
# missing package skip themselves with the reason).
set -euo pipefail

declare -A WANT=(
    [chromium]=/usr/bin/chromium
    [chromium-driver]=/usr/bin/chromedriver
    [docker-compose]=/usr/bin/docker-compose
    [docker.io]=/usr/sbin/dockerd
    [debootstrap]=/usr/sbin/debootstrap
    [fonts-noto-color-emoji]=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
)
missing=()
for pkg in "${!WANT[@]}"; do
    [[ -e "${WANT[$pkg]}" ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]}; not root or no apt-get, skipping (install them by hand:" >&2
    echo "system-deps:   sudo apt-get install -y --no-install-recommends ${missing[*]})" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "system-deps: installing ${missing[*]}"
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "system-deps: installed ${missing[*]}"
