#!/usr/bin/env bash
# Sets the two Cloud Foundry hostnames the egress gateway sends traffic to.
#
#   k8s/set-cf-hosts.sh <v1-host> <v2-host>
#
# The hostnames appear only in k8s/istio.yml and the pattern files k8s/patterns/*.yml
# (ServiceEntry hello-cf, the gateway-bound VirtualService's destinations and Host
# headers, the TLS DestinationRules' hosts, sni and subjectAltNames). This script reads
# the current pair from the ServiceEntry in istio.yml and rewrites every whole-name
# occurrence in all of those files, so they stay consistent with each other.
# K8S_DIR overrides the directory to edit (default: the one holding this script).
set -euo pipefail

prog=${0##*/}
k8s_dir=${K8S_DIR:-"$(cd "$(dirname "$0")" && pwd)"}
istio_file=$k8s_dir/istio.yml

usage="usage: $prog <v1-host> <v2-host>"

usage_error() {
    echo "$prog: $1 ($usage)" >&2
    exit 2
}

# A DNS name: lowercase labels of letters, digits and inner hyphens, at least two labels.
valid_host() {
    [[ ${#1} -le 253 && $1 =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$ ]]
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    echo "$usage"
    echo "Sets the Cloud Foundry hostnames of the v1 and v2 routes in ${istio_file} and ${k8s_dir}/patterns/*.yml."
    exit 0
fi
[[ $# -eq 2 ]] || usage_error "expected 2 hostnames, got $#"
new_v1=$1
new_v2=$2
for host in "$new_v1" "$new_v2"; do
    valid_host "$host" || usage_error "invalid hostname '$host': use a lowercase DNS name such as hello-istio-v1.apps.example.org"
done
[[ $new_v1 != "$new_v2" ]] || usage_error "the v1 and v2 hostnames must differ (the router tells the apps apart by Host)"
[[ $new_v1 != hello.external && $new_v2 != hello.external ]] ||
    usage_error "hello.external is the stable name the proxy calls, not a Cloud Foundry route"
[[ -f $istio_file ]] || { echo "$prog: $istio_file not found" >&2; exit 1; }

# The current pair: the two entries of `hosts:` in the ServiceEntry named hello-cf.
mapfile -t current < <(awk '
    /^kind:/ { in_se = ($2 == "ServiceEntry") }
    /^---/ { in_se = 0; named = 0; in_hosts = 0 }
    in_se && /^  name: hello-cf$/ { named = 1 }
    named && /^  hosts:$/ { in_hosts = 1; next }
    in_hosts && /^    - / { print $2; next }
    in_hosts { in_hosts = 0; named = 0 }
' "$istio_file")
if [[ ${#current[@]} -ne 2 ]]; then
    echo "$prog: expected the ServiceEntry hello-cf in $istio_file to list 2 hosts, found ${#current[@]}" >&2
    exit 1
fi
old_v1=${current[0]}
old_v2=${current[1]}

# Whole-name matches only: a hostname is never part of a longer name.
boundary_re() {
    local escaped=${1//./\\.}
    printf '(^|[^A-Za-z0-9.-])%s($|[^A-Za-z0-9.-])' "$escaped"
}
count() { grep -cE "$(boundary_re "$1")" "$2" || true; }

files=("$istio_file")
shopt -s nullglob
files+=("$k8s_dir"/patterns/*.yml)
shopt -u nullglob

# Every file is rewritten into a temporary copy first; the originals change only once
# all copies exist. Through placeholders, so that swapping the two names works too.
declare -A rewritten=()
cleanup() { local tmp; for tmp in "${rewritten[@]}"; do rm -f "$tmp"; done; }
trap cleanup EXIT
total_v1=0
total_v2=0
for file in "${files[@]}"; do
    total_v1=$((total_v1 + $(count "$old_v1" "$file")))
    total_v2=$((total_v2 + $(count "$old_v2" "$file")))
    tmp=$(mktemp "${file}.XXXXXX")
    rewritten[$file]=$tmp
    sed -E \
        -e "s/$(boundary_re "$old_v1")/\\1@@CF_V1_HOST@@\\2/g" \
        -e "s/$(boundary_re "$old_v2")/\\1@@CF_V2_HOST@@\\2/g" \
        "$file" |
        sed -e "s/@@CF_V1_HOST@@/$new_v1/g" -e "s/@@CF_V2_HOST@@/$new_v2/g" >"$tmp"
done
for file in "${files[@]}"; do
    cat "${rewritten[$file]}" >"$file"
done

echo "v1 $old_v1 -> $new_v1 ($total_v1 lines), v2 $old_v2 -> $new_v2 ($total_v2 lines) in ${#files[@]} files:"
printf '  %s\n' "${files[@]}"
echo "Apply with: kubectl apply -f k8s/istio.yml"
