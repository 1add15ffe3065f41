#!/usr/bin/env bash
# Builds hello-cf as a fully static Linux x86-64 executable and puts it, executable, into the
# folder that cf/manifest.yml's `path` names (cf/app/), ready for `cf push`.
#
# Static because the binary buildpack runs it on the stack's own libc: cflinuxfs4 has glibc
# 2.35 and cflinuxfs3 2.27, older than the build machine's, so a dynamically linked build may
# ask for symbols they lack.
#
# Environment:
#   CARGO_TARGET_DIR   base target directory (default: <workspace>/target). The static build
#                      uses its own subdirectory, $CARGO_TARGET_DIR/cf, so its RUSTFLAGS never
#                      invalidate the workspace's ordinary builds.
#   CF_BUILD_TARGET    Rust target triple (default: x86_64-unknown-linux-gnu with crt-static;
#                      x86_64-unknown-linux-musl also works where that target is installed).
#   CARGO              cargo executable (default: cargo).
# Usage: cf/build.sh   (from any directory; no arguments)
set -euo pipefail

die() {
    echo "cf/build.sh: $*" >&2
    exit 1
}

[[ $# -eq 0 ]] || die "takes no arguments (see the comment at the top of the script)"

cf_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
workspace_dir="$(dirname -- "$cf_dir")"
manifest="$cf_dir/manifest.yml"

# The destination comes from the manifest itself so the two cannot drift apart.
app_path="$(sed -n 's/^[[:space:]]*path:[[:space:]]*\([^[:space:]#]*\).*$/\1/p' "$manifest")"
[[ -n "$app_path" ]] || die "no 'path:' in $manifest"
[[ "$(wc -l <<<"$app_path")" -eq 1 ]] || die "more than one 'path:' in $manifest"
case "$app_path" in
    /*) app_dir="$app_path" ;;
    *) app_dir="$cf_dir/$app_path" ;;
esac

# Relative CARGO_TARGET_DIR means relative to the caller's directory, as for cargo itself.
target_base="${CARGO_TARGET_DIR:-$workspace_dir/target}"
[[ "$target_base" == /* ]] || target_base="$PWD/$target_base"
target_dir="$target_base/cf"
triple="${CF_BUILD_TARGET:-x86_64-unknown-linux-gnu}"
[[ "$triple" == x86_64-*-linux-* ]] || die "CF_BUILD_TARGET=$triple: Cloud Foundry cells run x86_64 Linux"

# What is pushed must not depend on the caller's shell: fixed flags, and no encoded flags
# (they would take precedence over RUSTFLAGS). Passing --target keeps these flags off build
# scripts and proc-macros, which run on this machine and may link dynamically.
unset CARGO_ENCODED_RUSTFLAGS
export RUSTFLAGS="-C target-feature=+crt-static"

# The dist profile is what ships: whole-program (fat) LTO over one codegen unit (Cargo.toml).
echo "cf/build.sh: building hello-cf for $triple (static, dist profile) in $target_dir" >&2
"${CARGO:-cargo}" build \
    --manifest-path "$workspace_dir/Cargo.toml" \
    --package hello-cf \
    --bin hello-cf \
    --profile dist \
    --locked \
    --target "$triple" \
    --target-dir "$target_dir"

binary="$target_dir/$triple/dist/hello-cf"
[[ -x "$binary" ]] || die "cargo succeeded but $binary is missing"

# Static means: no program interpreter (PT_INTERP) and no shared-library dependencies (NEEDED).
# A static-pie still has a dynamic section, for relocating itself, but nothing NEEDED.
verify_static() {
    local file="$1" headers description
    if command -v readelf >/dev/null; then
        headers="$(readelf --file-header --program-headers --dynamic --wide "$file")" \
            || die "readelf cannot read $file"
        grep -q 'Machine:.*X86-64' <<<"$headers" || die "$file is not an x86-64 executable"
        ! grep -q '^[[:space:]]*INTERP' <<<"$headers" \
            || die "$file has a program interpreter: it is dynamically linked"
        ! grep -q '(NEEDED)' <<<"$headers" \
            || die "$file needs shared libraries: $(grep '(NEEDED)' <<<"$headers" | tr -s ' ' | tr '\n' ';')"
    elif command -v file >/dev/null; then
        description="$(file --brief "$file")"
        [[ "$description" == *x86-64* ]] || die "$file is not x86-64: $description"
        [[ "$description" == *"statically linked"* || "$description" == *"static-pie linked"* ]] \
            || die "$file is not statically linked: $description"
    else
        die "cannot check that the binary is static: install binutils (readelf) or file"
    fi
}
verify_static "$binary"

# Copy then rename: an instance started from the previous binary keeps running undisturbed.
mkdir -p "$app_dir"
[[ ! -e "$app_dir/Cargo.toml" ]] || die "manifest path $app_dir is a crate; it must hold only the binary"
staging="$(mktemp "$app_dir/.hello-cf.XXXXXX")"
trap 'rm -f "$staging"' EXIT
cp "$binary" "$staging"
chmod 0755 "$staging"
mv -f "$staging" "$app_dir/hello-cf"
trap - EXIT

echo "cf/build.sh: $app_dir/hello-cf ($(du -h "$app_dir/hello-cf" | cut -f1), statically linked)" >&2
