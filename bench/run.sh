#!/usr/bin/env bash
# The benchmark in one command: installs nginx, wrk and curl from Debian when missing, builds the
# demo's programs in release mode, and measures them against what the older demo ran (nginx with
# the staticfile buildpack's settings, nginx proxy_pass, a sleep loop with curl), all on
# 127.0.0.1. Prints a markdown table and writes it to bench/results.md (BENCH_OUT).
# Settings come from BENCH_* variables or flags: `bench/run.sh --help`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "bench: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
export BENCH_NGINX=${BENCH_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

echo "bench: building in release mode" >&2
cargo build --release --locked -p hello-cf -p app-that-calls-externally -p traffic -p bench-tools

# 256 client connections plus nginx's upstream connections; raise a low default if allowed.
ulimit -n 8192 2>/dev/null || true
exec target/release/bench --bin-dir target/release --command-line "bench/run.sh${*:+ $*}" "$@"
