#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Safe to re-run.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: a headless browser for the web page tests, Node.js for the
# command-line checks of the page's script, iproute2. Installed only when missing.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# iproute2 for the tests that stand network namespaces in for hosts.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,bench]'

# Enough file descriptors for the connection-count tests.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
