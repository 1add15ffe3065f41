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

step "cargo test, every proxy variable pointing at a trap that must see no connection"
# Test traffic stays on loopback whatever the environment says: every proxy variable points at
# proxy-trap, which records each connection made to it, and the run fails if it recorded one.
# (Tests that exercise a program's proxy support set the variables for that child alone.) The
# suite runs once, with the variables set; --offline keeps cargo itself off them (clippy above
# has fetched everything).
cargo build --locked --quiet -p demo-testkit --bin proxy-trap
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
trap_dir=$(mktemp -d)
"$target_dir/debug/proxy-trap" "$trap_dir/address" "$trap_dir/record" &
trap_pid=$!
stop_trap() {
  kill "$trap_pid" 2>/dev/null || true
  wait "$trap_pid" 2>/dev/null || true
  rm -rf "$trap_dir"
}
trap stop_trap EXIT
for _ in $(seq 100); do
  [[ -s "$trap_dir/address" ]] && break
  sleep 0.1
done
[[ -s "$trap_dir/address" ]] || { echo "test: proxy-trap did not start" >&2; exit 1; }
trap_url="http://$(cat "$trap_dir/address")"
env -u NO_PROXY -u no_proxy \
  http_proxy="$trap_url" HTTP_PROXY="$trap_url" \
  https_proxy="$trap_url" HTTPS_PROXY="$trap_url" \
  all_proxy="$trap_url" ALL_PROXY="$trap_url" \
  cargo test --workspace --locked --offline
if [[ -s "$trap_dir/record" ]]; then
  echo "test: these connections went to the proxy variables' address instead of loopback:" >&2
  cat "$trap_dir/record" >&2
  exit 1
fi
stop_trap
trap - EXIT

step "k8s/: schemas, mesh checks, checkov, hadolint, shellcheck"
bash k8s/tests/run.sh
