#!/usr/bin/env bash
# Memory before and after a load spike, for one or more builds of hello-cf and the proxy: each
# build's hello-cf and proxy (in front of it) start pinned to CPU 0 on ports the OS picks; idle
# VmRSS after 1 s; then `wrk -t2 -c256 -d3s` through the proxy; then VmHWM and VmRSS 2 s later,
# what each keeps after the spike (an allocator may or may not return memory).
#
#   bench/spike.sh DIR...      each DIR holds hello-cf and app-that-calls-externally
#
# Extra environment for the programs (e.g. an allocator setting) goes in SPIKE_ENV.
set -euo pipefail
(($#)) || {
  echo "usage: bench/spike.sh BIN_DIR..." >&2
  exit 2
}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
kib() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
# logged LOG KEY: the address a program logged as KEY=, waited for up to 10 s.
logged() {
  for _ in $(seq 1 1000); do
    grep -o "$2=[0-9.:]*" "$1" 2>/dev/null | head -1 | cut -d= -f2 && return 0
    sleep 0.01
  done
  echo "spike: no $2= in $1" >&2
  exit 1
}
read -r -a extra <<<"${SPIKE_ENV:-}"
echo "Command: ${SPIKE_ENV:+SPIKE_ENV=\"$SPIKE_ENV\" }bench/spike.sh $*"
echo
echo "| build | program | idle RSS | peak (VmHWM) | RSS 2 s after the spike |"
echo "|---|---|---:|---:|---:|"
for dir in "$@"; do
  env -i PATH="$PATH" PORT=0 BIND_ADDRESS=127.0.0.1 "${extra[@]}" \
    taskset -c 0 "$dir/hello-cf" >"$work/hello.log" 2>&1 &
  hello=$!
  pids+=("$hello")
  upstream=$(logged "$work/hello.log" address)
  env -i PATH="$PATH" PORT=0 ADMIN_PORT=0 BIND_ADDRESS=127.0.0.1 UPSTREAM_URL="http://$upstream/" \
    "${extra[@]}" taskset -c 0 "$dir/app-that-calls-externally" >"$work/proxy.log" 2>&1 &
  proxy=$!
  pids+=("$proxy")
  address=$(logged "$work/proxy.log" proxy_addr)
  sleep 1
  hello_idle=$(kib "$hello" VmRSS)
  proxy_idle=$(kib "$proxy" VmRSS)
  wrk -t2 -c256 -d3s "http://$address/" >/dev/null
  sleep 2
  echo "| $dir | hello-cf | $hello_idle KiB | $(kib "$hello" VmHWM) KiB | $(kib "$hello" VmRSS) KiB |"
  echo "| $dir | app-that-calls-externally | $proxy_idle KiB | $(kib "$proxy" VmHWM) KiB | $(kib "$proxy" VmRSS) KiB |"
  kill "$proxy" "$hello"
  wait "$proxy" "$hello" 2>/dev/null || true
done
