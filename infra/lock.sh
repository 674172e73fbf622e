#!/usr/bin/env bash
# Regenerates infra/constraints.txt: the exact version of every package that `make setup` and the
# image build install (run `make lock` after changing dependencies in pyproject.toml, commit the result).
# Resolves '.[dev,bench]' fresh in a throw-away venv, so the file lists what a new machine would get.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
tmp=$(mktemp -d /tmp/supernode-lock.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip
"$tmp/venv/bin/pip" install -q -e '.[dev,bench]'
{
  echo "# Exact versions for 'make setup' and infra/Dockerfile (pip install -c). Regenerate: make lock"
  echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')"
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v -i '^supernode[= @]' | LC_ALL=C sort -f
} >infra/constraints.txt
echo "lock: $(grep -vc '^#' infra/constraints.txt) packages pinned in infra/constraints.txt"
