#!/usr/bin/env bash
# An arm64 Debian 12 root with Python 3.11 and edgetl's device dependencies (the core install plus
# LiteRT), for running edgetl's torch-free runtime under qemu-user emulation on an x86 machine
# (tests/backends/test_arm64.py).
#
#   bash tests/arm64/make_root.sh [ROOT]    default ROOT: $EDGETL_ARM64_ROOT, else ~/.cache/edgetl/arm64-root
#
# Needs root the first time (debootstrap) and the Debian and PyPI mirrors; afterwards a run with the
# same recipe (this script and pyproject's dependency lists) reuses the root and downloads nothing.
# Nothing runs under emulation while it is made: debootstrap's first stage downloads and unpacks,
# dpkg-deb unpacks the remaining packages, and the host's pip installs aarch64 wheels (--platform).
# Prints the root's path on its last line.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
root="${1:-${EDGETL_ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgetl/arm64-root}}"
python="${PYTHON:-python3}"
mirror="${EDGETL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Python 3.11 and the shared libraries the wheels link (onnxruntime: libstdc++, libgomp).
packages="python3.11,libpython3.11-stdlib,libstdc++6,libgomp1,zlib1g,libexpat1,libffi8,libssl3"
platforms=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64
  --platform manylinux2014_aarch64)

recipe="$( { cat "$0"; sed -n '/^dependencies = \[/,/^\]/p; /^litert = \[/,/^\]/p' "$repo/pyproject.toml"; } \
  | sha256sum | cut -c1-16)"
if [ -f "$root/.edgetl-recipe" ] && [ "$(cat "$root/.edgetl-recipe")" = "$recipe" ]; then
  echo "arm64 root up to date (recipe $recipe)" >&2
  echo "$root"
  exit 0
fi

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "make_root.sh: needs qemu-user-static and debootstrap (apt-get install qemu-user-static debootstrap)" >&2
    exit 2
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  echo "make_root.sh: debootstrap needs root the first time (the finished root is then read by anyone)" >&2
  exit 2
fi

started=$SECONDS
partial="$root.partial"
rm -rf "$partial"
mkdir -p "$(dirname "$root")"
echo "debootstrap (first stage) of Debian 12 arm64 into $partial" >&2
debootstrap --foreign --arch=arm64 --variant=minbase --include="$packages" bookworm "$partial" "$mirror" >&2
for deb in "$partial"/var/cache/apt/archives/*.deb; do
  dpkg-deb -x "$deb" "$partial"
done
rm -f "$partial"/var/cache/apt/archives/*.deb
# qemu-user passes the host's /proc/cpuinfo through (x86 text); ONNX Runtime's cpuinfo library then
# finds no arm64 CPU and crashes on import. Paths that exist under the root win with `qemu -L`, so
# the root carries a Raspberry Pi 5's (Cortex-A76 ids, dot-product feature), one entry per possible CPU.
mkdir -p "$partial/proc"
for n in $(seq 0 255); do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$n"
done >"$partial/proc/cpuinfo"

echo "aarch64 wheels of edgetl's core dependencies and LiteRT into $partial/opt/edgetl-deps" >&2
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
# pyproject's core dependencies and the litert extra, read with the host's Python (3.11: tomllib).
"$python" - "$repo/pyproject.toml" >"$requirements" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["litert"]))
PY
"$python" -m pip install -q --target "$partial/opt/edgetl-deps" --only-binary=:all: --python-version 3.11 \
  --implementation cp --abi cp311 "${platforms[@]}" -r "$requirements" >&2
rm -rf "$partial/opt/edgetl-deps/bin"

echo "$recipe" >"$partial/.edgetl-recipe"
rm -rf "$root"
mv "$partial" "$root"
echo "arm64 root made in $((SECONDS - started)) s: $(du -sh "$root" | cut -f1)" >&2
echo "$root"
