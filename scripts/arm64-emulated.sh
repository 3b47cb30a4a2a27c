#!/usr/bin/env bash
# Run the tests marked `arm64` on an EMULATED aarch64 Debian 12 / Python 3.11 (qemu-user,
# Cortex-A72), after classifying the asset images on x86 for the parity test. Not hardware:
# see docs/arm64.md for what this proves and what it does not.
#
# Usage: scripts/arm64-emulated.sh [PYTEST_ARGS...]
#   default: -m "arm64 and not slow" --durations=5 on the test files that mention arm64
# Environment:
#   EDGE_ARM64_CACHE      cache folder (default: REPO/.cache/arm64); reused while its keys match
#   EDGE_HOST_PYTHON      x86 python with the project installed (default: REPO/.venv/bin/python)
#   EDGE_ARM64_CPU        qemu CPU model (default: cortex-a72 = Pi 4; cortex-a76 = Pi 5)
#   EDGE_ARM64_EXTRA_REQS extra requirements for the aarch64 install, space separated (name@URL)
#   EDGE_ARM64_APT_SOURCES a deb822 sources file to use instead of the host's Debian sources
#   EDGE_ASSETS           test assets (default: REPO/../shared/assets)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/scripts/arm64
CACHE=${EDGE_ARM64_CACHE:-$REPO/.cache/arm64}
HOST_PY=${EDGE_HOST_PYTHON:-$REPO/.venv/bin/python}
QEMU=${EDGE_QEMU:-qemu-aarch64-static}
CPU=${EDGE_ARM64_CPU:-cortex-a72}
FORMAT=1  # bump to force a rebuild of every cached part

# Debian 12 arm64 packages of python3.11 and the libraries its stdlib modules load.
DEBS=(
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib media-types
  libc6 libgcc-s1 gcc-12-base libstdc++6 zlib1g libexpat1 libssl3 libffi8 libbz2-1.0 liblzma5
  libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libdb5.3 libgdbm6 libgdbm-compat4
  libcrypt1 libnsl2 libtirpc3 libtirpc-common libgssapi-krb5-2 libkrb5-3 libk5crypto3
  libkrb5support0 libcom-err2 libkeyutils1
)
# What pip on Raspberry Pi OS Bookworm (glibc 2.36, aarch64) accepts.
PLATFORMS=(linux_aarch64 manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=("manylinux_2_${minor}_aarch64"); done

step_start=$SECONDS
step() {
  printf '== arm64 [%3ds, +%3ds] %s\n' "$SECONDS" "$((SECONDS - step_start))" "$*"
  step_start=$SECONDS
}
die() { echo "arm64-emulated: error: $*" >&2; exit 1; }
hash16() { sha256sum | cut -c1-16; }

# Keep only the newest cached copy of a part: drop PREFIX-* folders other than KEEP.
prune() {
  local prefix=$1 keep=$2 d
  for d in "$CACHE/$prefix"-*; do
    [ -e "$d" ] && [ "$d" != "$keep" ] && rm -rf "$d"
  done
  return 0
}

# The host's Debian deb822 sources, restricted to arm64.
arm64_sources() {
  if [ -n "${EDGE_ARM64_APT_SOURCES:-}" ]; then cat "$EDGE_ARM64_APT_SOURCES"; return; fi
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         /(^|\n)Types:[^\n]*deb/ && /(^|\n)URIs:[^\n]*debian/ {
           gsub(/\nArchitectures:[^\n]*/, ""); print $0 "\nArchitectures: arm64" }' "$f"
  done
}

# The host's one-line Debian sources (sources.list format), restricted to arm64.
arm64_list_sources() {
  local f
  [ -n "${EDGE_ARM64_APT_SOURCES:-}" ] && return 0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    grep -E '^deb [^#]*debian' "$f" |
      sed -E 's/arch=[^] ]+ ?//; s/^deb \[/deb [arch=arm64 /; t; s/^deb /deb [arch=arm64] /'
  done
  return 0
}

# Debian 12 arm64 python3.11 unpacked into a folder that qemu serves with -L.
build_sysroot() {
  local out=$1 work=$CACHE/apt
  rm -rf "$work" "$out.partial"
  mkdir -p "$work"/etc/sources.list.d "$work"/state/lists/partial "$work"/cache/archives/partial \
    "$work"/debs "$out.partial"/proc
  : >"$work/state/status"
  arm64_sources >"$work/etc/sources.list.d/arm64.sources"
  arm64_list_sources >"$work/etc/sources.list"
  [ -s "$work/etc/sources.list.d/arm64.sources" ] || [ -s "$work/etc/sources.list" ] ||
    die "no Debian apt sources found on this host: set EDGE_ARM64_APT_SOURCES"
  local apt=(
    -o "Dir::State=$work/state" -o "Dir::State::status=$work/state/status"
    -o "Dir::Cache=$work/cache" -o "Dir::Etc::sourcelist=$work/etc/sources.list"
    -o "Dir::Etc::sourceparts=$work/etc/sources.list.d"
    -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root
  )
  apt-get "${apt[@]}" -qq update
  (cd "$work/debs" && apt-get "${apt[@]}" -qq download "${DEBS[@]}")
  local deb
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$out.partial"; done
  # LiteRT reads /proc/cpuinfo; qemu -L serves this file instead of the host's x86 one.
  cp "$HERE/cpuinfo-pi4.txt" "$out.partial/proc/cpuinfo"
  # qemu falls back to the host's path when the sysroot lacks one: shadow the host's Python
  # package folders so no x86 package can leak into the emulated interpreter.
  mkdir -p "$out.partial"/usr/lib/python3/dist-packages \
    "$out.partial"/usr/local/lib/python3.11/dist-packages
  QEMU_CPU=$CPU "$QEMU" -L "$out.partial" "$out.partial/usr/bin/python3.11" -c \
    'import bz2, ctypes, hashlib, lzma, sqlite3, ssl, uuid, zlib' ||
    die "the arm64 python3.11 in $out.partial does not start"
  mv "$out.partial" "$out"
  rm -rf "$work"
}

# aarch64 wheels of the project's dependencies, fetched by the host's pip for the Pi's tags.
install_site() {
  local out=$1 reqs=$2 tags=() p
  for p in "${PLATFORMS[@]}"; do tags+=(--platform "$p"); done
  rm -rf "$out.partial"
  # (the filter drops this host's pip warnings about its absent local indexes)
  if ! "$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$out.partial" --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 "${tags[@]}" -r "$reqs/requirements.txt" -c "$reqs/constraints.txt" 2>&1 |
    { grep -v 'is ignored: it is neither a file nor a directory' || true; }; then
    die "pip found no aarch64 build of a requirement (an x86-only wheel or pin?)"
  fi
  mv "$out.partial" "$out"
}

main() {
  command -v "$QEMU" >/dev/null || die "$QEMU not found (Debian package qemu-user-static)"
  command -v apt-get >/dev/null || die "apt-get is needed (a Debian host)"
  command -v dpkg >/dev/null || die "dpkg is needed (a Debian host)"
  [ -x "$HOST_PY" ] || HOST_PY=$(command -v python3) || die "no host python3"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9  # one run at a time per cache folder

  local qemu_version
  qemu_version=$("$QEMU" --version | head -1 | sed -E 's/^qemu-aarch64 version ([^ ]+).*/\1/')
  echo "##########################################################################################"
  echo "# EMULATION, NOT HARDWARE: qemu-user $qemu_version, Debian 12 arm64 python3.11, CPU $CPU"
  echo "# It shows the project installs and behaves on aarch64; its timings mean nothing for a Pi."
  echo "##########################################################################################"

  local reqs=$CACHE/requirements site_key site
  # shellcheck disable=SC2086  # EDGE_ARM64_EXTRA_REQS is a space-separated list
  "$HOST_PY" "$HERE/requirements.py" "$REPO/pyproject.toml" "$reqs" ${EDGE_ARM64_EXTRA_REQS:-}
  site_key=$({ echo "$FORMAT"; cat "$reqs"/*.txt; printf '%s\n' "${PLATFORMS[@]}"
    declare -f install_site; } | hash16)
  site=$CACHE/site-$site_key
  if [ -d "$site" ]; then
    step "wheels: cached $site"
  else
    step "wheels: installing aarch64 wheels into $site"
    sed 's/^/    /' "$reqs/constraints.txt"
    install_site "$site" "$reqs"
    prune site "$site"
    step "wheels: installed"
  fi

  local sys_key sysroot
  sys_key=$({ printf '%s\n' "$FORMAT" "${DEBS[@]}"; declare -f build_sysroot
    cat "$HERE/cpuinfo-pi4.txt"; } | hash16)
  sysroot=$CACHE/sysroot-$sys_key
  if [ -x "$sysroot/usr/bin/python3.11" ]; then
    step "sysroot: cached $sysroot"
  else
    step "sysroot: building $sysroot from Debian arm64 packages"
    build_sysroot "$sysroot"
    prune sysroot "$sysroot"
    step "sysroot: built"
  fi

  # The project itself, freshly from this tree; it must stay pure Python (no x86 binaries).
  local project=$CACHE/project
  local isolation=()  # building with the host's setuptools is 5x faster than an isolated build
  "$HOST_PY" -c 'import setuptools' 2>/dev/null && isolation=(--no-build-isolation)
  rm -rf "$project"
  "$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-deps "${isolation[@]}" \
    --target "$project" "$REPO"
  if find "$project" -name '*.so' | grep -q .; then
    die "the project built native code on x86; it cannot be installed as-is on aarch64"
  fi
  step "project: installed into $project"

  # python3 for the emulated side: also what sys.executable names, so tests that start
  # `sys.executable -m edge ...` run their child under qemu too (there is no binfmt_misc).
  local py=$CACHE/bin/python3
  mkdir -p "$CACHE/bin"
  cat >"$py" <<EOF
#!/bin/sh
# Emulated aarch64 python3.11 (qemu-user, $CPU), written by scripts/arm64-emulated.sh.
export QEMU_CPU='$CPU' PYTHONPATH='$project:$site' PYTHONSAFEPATH=1 PYTHONNOUSERSITE=1
exec '$QEMU' -L '$sysroot' -0 "\$0" '$sysroot/usr/bin/python3.11' "\$@"
EOF
  chmod +x "$py"

  local about machine
  about=$("$py" -c 'import platform, sys, edge
print(platform.machine())
print("emulated python:", sys.version.split()[0], platform.libc_ver(), sys.executable)
print("edge imported from:", edge.__file__)')
  machine=${about%%$'\n'*}
  echo "emulated platform.machine(): $machine"
  echo "${about#*$'\n'}"
  [ "$machine" = aarch64 ] || die "expected aarch64 inside the emulator, got '$machine'"
  step "emulator: ready"

  local reference=$CACHE/x86-reference.json
  # this tree's edge, not whichever one the host venv has installed
  PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$HOST_PY" "$REPO/tests/test_arm64_parity.py" \
    "$reference"
  step "x86 reference: $reference ($("$HOST_PY" -c 'import platform; print(platform.machine())'))"

  local args=("$@")
  if [ ${#args[@]} -eq 0 ]; then
    # Only the files that mention the marker: importing the others under emulation is slow.
    mapfile -t args < <(cd "$REPO" && grep -l 'arm64' tests/test_*.py)
    args=(-m "arm64 and not slow" --durations=5 "${args[@]}")
  fi
  local rc=0
  (cd "$REPO" && EDGE_X86_REFERENCE=$reference "$py" -m pytest -p no:cacheprovider -v \
    "${args[@]}") || rc=$?
  step "pytest under EMULATED aarch64 ($CPU) exited $rc"
  [ "$rc" -ne 5 ] || die "no test selected under emulation (pytest ${args[*]})"
  return "$rc"
}

main "$@"
