#!/usr/bin/env bash
# Print the path of a uv binary, installing uv from PyPI into .tools/uv when none is on PATH.
# Works on a fresh Debian/Ubuntu: installs python3-venv with apt when the venv module is missing.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
root=$(cd "$(dirname "$0")/.." && pwd)
tool="$root/.tools/uv"
if [ ! -x "$tool/bin/uv" ]; then
  if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "CCC needs Python 3.11 or newer as python3" >&2; exit 1
  fi
  if ! python3 -m venv "$tool" >/dev/null 2>&1; then
    echo "installing python3-venv (needed once to bootstrap uv)" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq python3-venv >&2
    rm -rf "$tool"; python3 -m venv "$tool"
  fi
  "$tool/bin/pip" install -q --disable-pip-version-check uv >&2
fi
echo "$tool/bin/uv"
