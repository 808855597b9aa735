#!/usr/bin/env bash
# Set up everything datascout and its tests need on a fresh Debian machine, idempotently:
# the offline data sets (Debian packages), headless Chromium for the browser test, and a
# virtual environment in .venv with datascout and all its extras (torch pinned to the CPU build),
# and Label Studio in .venv-ls for the tests against a real Label Studio.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

need=()
[ -d /usr/share/games/fortunes ] || need+=(fortunes)
[ -f /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# UCI Letter (and the other mlbench sets) from Debian r-cran-mlbench, unpacked without R
MLBENCH="${DATASCOUT_MLBENCH:-${DATASCOUT_CACHE:-$HOME/.cache/datascout}/mlbench}"
if [ ! -f "$MLBENCH/usr/lib/R/site-library/mlbench/data/LetterRecognition.rda" ]; then
  echo "setup: unpacking r-cran-mlbench into $MLBENCH"
  tmp=$(mktemp -d)
  ( cd "$tmp" && apt-get download r-cran-mlbench >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download r-cran-mlbench >/dev/null; } )
  mkdir -p "$MLBENCH"
  dpkg -x "$tmp"/r-cran-mlbench_*.deb "$MLBENCH"
  rm -rf "$tmp"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.datascout-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing datascout and its extras into .venv (torch 2.13.0 CPU build)"
  quiet() { { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
  # torch first and alone, pinned, so nothing pulls a CUDA build
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | quiet
  .venv/bin/python -m pip install -q -e ".[all,ray]" 2>&1 | quiet
  touch "$stamp"
fi
# Label Studio, for the tests against a real server: its own virtual environment (its
# dependencies clash with datascout's), pinned, installed once
LS_VERSION=1.23.2
if [ ! -x .venv-ls/bin/label-studio ] || ! grep -qx "$LS_VERSION" .venv-ls/.datascout-installed 2>/dev/null; then
  echo "setup: installing label-studio $LS_VERSION into .venv-ls"
  [ -x .venv-ls/bin/python ] || "$PY" -m venv .venv-ls
  .venv-ls/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  .venv-ls/bin/python -m pip install -q "label-studio==$LS_VERSION" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  echo "$LS_VERSION" > .venv-ls/.datascout-installed
fi
echo "setup: ready"
