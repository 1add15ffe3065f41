#!/usr/bin/env bash
# CPU cost per request that other load on the machine does not move, for one or more builds of
# hello-cf and the proxy, measured in one run so that builds can be compared:
#
# - instructions per request: the server runs under valgrind's callgrind (user space only,
#   pinned to one CPU, so it runs tokio's single-threaded runtime as in the pinned bench);
#   `callgrind_control --zero` after a warm-up, then a timed wrk run, then
#   `callgrind_control --dump`; total instructions / requests wrk completed (the few requests
#   still in flight when wrk stops, at most one per connection, are counted in the
#   instructions but not in the requests: under 1 % at the default settings).
# - system calls per request: the same load against the server running natively, counted with
#   `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_<name>` attached to its pid (the
#   kernel's share of the cost, which callgrind does not see).
#
#   bench/profile.sh DIR...            each DIR holds hello-cf and app-that-calls-externally
#   PROFILE_SECONDS=10 PROFILE_CONNECTIONS=16 bench/profile.sh target/release /tmp/before
#   PROFILE_PROGRAMS=hello-cf bench/profile.sh DIR...   one program only
#   PROFILE_PEERS=1 bench/profile.sh target/dist        and beside the proxy its tuned HAProxy
#                                             and hyper alone (the bench's hyper-relay)
#   PROFILE_CACHE=1 bench/profile.sh DIR...   and data cache misses per request, simulated by
#                                             callgrind for this CPU's L1 data cache and, as
#                                             its last level, its per-core L2 (from sysfs)
#
# PROFILE_CONNECTIONS=1 gives figures that repeat within about 1 % (one request per wake-up).
#
# Needs valgrind, perf (linux-perf), wrk and python3; all traffic on 127.0.0.1.
set -euo pipefail
seconds=${PROFILE_SECONDS:-10}
connections=${PROFILE_CONNECTIONS:-16}
warmup=${PROFILE_WARMUP:-2}
programs=${PROFILE_PROGRAMS:-hello-cf app-that-calls-externally}
# PROFILE_PEERS=1: also the proxy's tuned HAProxy, started by the bench's `peer`
# (PROFILE_PEER_BIN) as the bench configures it, one thread, and the bench's hyper-relay (hyper's
# server and client alone, the proxy's reference row), from beside the `peer`. (Not nginx: its
# serving worker is a forked child that callgrind_control cannot reach, and its single-process
# mode crashes on the inherited listening socket the bench passes.)
peers=${PROFILE_PEERS:-}
cache=${PROFILE_CACHE:-}
peer_bin=${PROFILE_PEER_BIN:-target/dist/peer}
(($#)) || {
  echo "usage: bench/profile.sh BIN_DIR..." >&2
  exit 2
}
for tool in valgrind callgrind_control perf wrk python3 taskset; do
  command -v "$tool" >/dev/null || {
    echo "profile: $tool is missing (apt-get install valgrind linux-perf wrk)" >&2
    exit 2
  }
done

hyper_relay_bin=$(dirname "$peer_bin")/hyper-relay
if [[ -n $peers && ! ( -x $peer_bin && -x $hyper_relay_bin ) ]]; then
  echo "profile: no $peer_bin or $hyper_relay_bin (cargo build --profile dist -p bench-tools, or set PROFILE_PEER_BIN)" >&2
  exit 2
fi

# PROFILE_CACHE=1: callgrind simulates the L1 data cache and the per-core L2 of CPU 0 (the
# last level it models), so that what a request costs in memory traffic shows beside its
# instructions: valgrind's default last level is the shared L3, which rarely misses here.
cache_options=()
if [[ -n $cache ]]; then
  # cache_geometry LEVEL TYPE: valgrind's SIZE,WAYS,LINE for CPU 0's cache of that level and type.
  cache_geometry() {
    local index
    for index in /sys/devices/system/cpu/cpu0/cache/index*; do
      if [[ $(cat "$index/level") == "$1" && $(cat "$index/type") == "$2" ]]; then
        local size bytes
        size=$(cat "$index/size")
        case $size in
          *K) bytes=$((${size%K} * 1024)) ;;
          *M) bytes=$((${size%M} * 1024 * 1024)) ;;
          *) bytes=$size ;;
        esac
        echo "$bytes,$(cat "$index/ways_of_associativity"),$(cat "$index/coherency_line_size")"
        return
      fi
    done
    echo "profile: no level-$1 $2 cache in /sys/devices/system/cpu/cpu0/cache" >&2
    exit 2
  }
  # Plain assignments, so that a failed lookup stops the script (set -e).
  l1_geometry=$(cache_geometry 1 Data)
  l2_geometry=$(cache_geometry 2 Unified)
  cache_options=(--cache-sim=yes --D1="$l1_geometry" --LL="$l2_geometry")
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# timed ADDRESS SECONDS: one wrk run; prints the requests it completed.
timed() {
  wrk -t"$((connections < 2 ? 1 : 2))" -c"$connections" -d"$2"s --timeout 60s "http://$1/" >"$work/wrk.out" 2>&1
  if grep -q -e "Non-2xx" -e "Socket errors" "$work/wrk.out"; then
    echo "profile: failed requests against $1:" >&2
    cat "$work/wrk.out" >&2
    exit 1
  fi
  awk '/ requests in /{print $1}' "$work/wrk.out"
}

# start LOG KEY COMMAND...: starts COMMAND (PORT=0); sets started_pid and started_addr (read
# from its log line: the programs listen on a port the OS picks and log it).
start() {
  local log=$1 key=$2
  shift 2
  env -i PATH="$PATH" PORT=0 ADMIN_PORT=0 BIND_ADDRESS=127.0.0.1 HELLO_VERSION=v1 \
    UPSTREAM_URL="${upstream_url:-}" UPSTREAM="${upstream_addr:-}" "$@" >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local address=""
  for _ in $(seq 1 3000); do
    address=$(grep -o "$key=[0-9.:]*" "$log" 2>/dev/null | head -1 | cut -d= -f2 || true)
    [[ -n $address ]] && break
    kill -0 "$pid" 2>/dev/null || {
      echo "profile: $* exited: $(tail -3 "$log")" >&2
      exit 1
    }
    sleep 0.01
  done
  [[ -n $address ]] || {
    echo "profile: no $key= in $log" >&2
    exit 1
  }
  started_pid=$pid
  started_addr=$address
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# measure DIR PROGRAM: prints one markdown row. PROGRAM is one of ours, in DIR, `haproxy` (the
# bench's tuned HAProxy, started by the bench's `peer`) or `hyper-relay`, the last two in front
# of DIR's hello-cf.
measure() {
  local dir=$1 program=$2 key=address
  upstream_url=""
  upstream_addr=""
  local upstream_pid=""
  if [[ $program == app-that-calls-externally || $program == haproxy || $program == hyper-relay ]]; then
    [[ $program == app-that-calls-externally ]] && key=proxy_addr
    start "$work/upstream.log" address taskset -c 0 "$dir/hello-cf"
    upstream_pid=$started_pid
    upstream_addr=$started_addr
    upstream_url="http://$started_addr/"
  fi
  # server WRAPPER...: the command line that runs PROGRAM under WRAPPER.
  server() {
    case $program in
      haproxy) echo "$peer_bin" --upstream "$upstream_addr" --dir "$work/peer" -- "$@" ;;
      hyper-relay) echo "$@" "$hyper_relay_bin" ;;
      *) echo "$@" "$dir/$program" ;;
    esac
  }
  # Instructions, under callgrind.
  # shellcheck disable=SC2046 # word splitting of the command line is intended
  start "$work/cg.log" "$key" $(server taskset -c 0 valgrind --tool=callgrind "${cache_options[@]}" --callgrind-out-file="$work/cg.out.%p")
  local pid addr=$started_addr
  pid=$started_pid
  timed "$addr" "$warmup" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  local answered
  answered=$(timed "$addr" "$seconds") || exit 1
  callgrind_control --dump "$pid" >/dev/null 2>&1
  stop "$started_pid"
  # totals: Ir [Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw] (the bracketed ones with PROFILE_CACHE)
  local instructions l1_misses l2_misses
  read -r instructions l1_misses l2_misses < <(grep -h '^totals:' "$work"/cg.out."$pid".* 2>/dev/null |
    awk '{i += $2; l1 += $6 + $7; l2 += $9 + $10} END {printf "%.0f %.0f %.0f\n", i, l1, l2}')
  rm -f "$work"/cg.out.*
  # System calls, natively.
  # shellcheck disable=SC2046
  start "$work/native.log" "$key" $(server taskset -c 0)
  addr=$started_addr
  pid=$started_pid
  timed "$addr" "$warmup" >/dev/null
  perf stat -x, -o "$work/perf.out" -p "$pid" \
    -e raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait &
  local perf_pid=$!
  sleep 0.5
  local native
  native=$(timed "$addr" "$seconds") || exit 1
  kill -INT "$perf_pid"
  wait "$perf_pid" 2>/dev/null || true
  stop "$started_pid"
  [[ -n $upstream_pid ]] && stop "$upstream_pid"
  local label=$dir
  [[ $program == haproxy ]] && label="tuned peer, 1 thread"
  [[ $program == hyper-relay ]] && label="reference: hyper alone"
  python3 - "$label" "$program" "$instructions" "$answered" "$native" "$work/perf.out" "$cache" "$l1_misses" "$l2_misses" <<'EOF'
import sys
dir_, program, instructions, done, native, perf, cache, l1_misses, l2_misses = sys.argv[1:]
counts = {}
for line in open(perf):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        counts[parts[2].split(":")[-1]] = int(parts[0])
per = lambda name: counts.get(name, 0) / int(native)
writes = per("sys_enter_write") + per("sys_enter_writev") + per("sys_enter_sendto")
reads = per("sys_enter_read") + per("sys_enter_recvfrom")
misses = f" {int(l1_misses) / int(done):,.0f} | {int(l2_misses) / int(done):,.0f} |" if cache else ""
print(f"| {dir_} | {program} | {int(instructions) / int(done):,.0f} | {per('sys_enter'):.2f} | "
      f"{writes:.2f} | {reads:.2f} | {per('sys_enter_epoll_wait'):.2f} |{misses}")
EOF
}

echo "Command: PROFILE_SECONDS=$seconds PROFILE_CONNECTIONS=$connections PROFILE_WARMUP=$warmup${cache:+ PROFILE_CACHE=$cache}${peers:+ PROFILE_PEERS=$peers} PROFILE_PROGRAMS=\"$programs\" bench/profile.sh $*"
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r), $(date -u +%Y-%m-%d)"
echo
if [[ -n $cache ]]; then
  echo "Data caches simulated: L1 $l1_geometry, last level (the per-core L2) $l2_geometry (size, ways, line)"
  echo
  echo "| build | program | instructions per request | syscalls per request | writes | reads | epoll_wait | L1 data misses | L2 misses |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| build | program | instructions per request | syscalls per request | writes | reads | epoll_wait |"
  echo "|---|---|---:|---:|---:|---:|---:|"
fi
for program in $programs; do
  for dir in "$@"; do
    measure "$dir" "$program"
  done
  # The peers of this program, once, in front of the first build's hello-cf.
  if [[ -n $peers ]]; then
    if [[ $program == app-that-calls-externally ]]; then
      measure "$1" haproxy
      measure "$1" hyper-relay
    fi
  fi
done
