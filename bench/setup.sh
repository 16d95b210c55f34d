#!/usr/bin/env bash
# The bench's own setup: wrk (Debian's package) for the HTTP figures, installed when missing.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "bench/setup.sh: wrk is missing; install it with: sudo apt-get install -y wrk" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq wrk >/dev/null
command -v wrk
