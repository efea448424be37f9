#!/usr/bin/env bash
# What the browser test (tests/test_app_server_web.py) needs: Debian's chromium and the Python playwright package.
# Idempotent: installs only what is missing. Playwright's own browser download is not used.
#   scripts/install_browser.sh [PYTHON]     (PYTHON defaults to .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${1:-${PYTHON:-}}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install_browser: need root or sudo to apt-get install chromium" >&2; exit 1; }
        SUDO=sudo
    fi
    echo "install_browser: installing Debian's chromium with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "install_browser: /usr/bin/chromium does not run" >&2; exit 1; }

if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "install_browser: installing the playwright Python package into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
    "$PY" -m pip install --quiet "playwright>=1.40"
fi
