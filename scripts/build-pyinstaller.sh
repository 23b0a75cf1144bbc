#!/usr/bin/env bash
# Builds the pinned PyInstaller from its sdist with patches/pyinstaller-*.patch
# applied to the bootloader (see the patch for why), and prints the wheel's
# path. The wheel is kept, so later calls cost nothing.
#
#   python -m pip install --no-deps --force-reinstall "$(scripts/build-pyinstaller.sh PYTHON)"
#
# Needs a C compiler and zlib's headers (Debian: gcc, zlib1g-dev).
#
#   scripts/build-pyinstaller.sh PYTHON --cross aarch64-linux-gnu
#
# cross-compiles only the patched bootloader, with zlib built in, for
# another Linux architecture (Debian: gcc-aarch64-linux-gnu), and prints the
# folder holding it (Linux-64bit-arm/run ...), to put into PyInstaller's
# bootloader/ where that architecture's Python freezes the runtime
# (scripts/freeze-runtime-aarch64.sh): seconds here, against minutes of
# compiling under emulation.
set -euo pipefail
py=${1:?usage: build-pyinstaller.sh PYTHON [--cross TRIPLE]}
cross=
if [ "${2:-}" = --cross ]; then
    cross=${3:?usage: build-pyinstaller.sh PYTHON --cross TRIPLE}
    command -v "$cross-gcc" >/dev/null || { echo "build-pyinstaller: no $cross-gcc (Debian: gcc-$cross)" >&2; exit 1; }
fi
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^pyinstaller==//p' "$here/constraints.txt")
[ -n "$version" ] || { echo "build-pyinstaller: no pyinstaller pin in constraints.txt" >&2; exit 1; }
patches=("$here"/patches/pyinstaller-*.patch)
key=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
cache=${LLAMABIN_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamabin-build}
[ -z "$cross" ] || key="$key-$("$cross-gcc" -dumpfullversion)"
out="$cache/pyinstaller-$version-$key${cross:+-bootloader-$cross}"
if [ -f "$out/.done" ]; then
    if [ -n "$cross" ]; then echo "$out"; else ls "$out"/*.whl; fi
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps --no-binary :all: "pyinstaller==$version" -d "$work/dl" >&2
tar -xzf "$work/dl/pyinstaller-$version.tar.gz" -C "$work"
for p in "${patches[@]}"; do
    patch -s -p1 -d "$work/pyinstaller-$version" <"$p" >&2
done
if [ -n "$cross" ]; then
    waf_py=$(command -v "$py")
    case $waf_py in /*) ;; *) waf_py="$PWD/$waf_py" ;; esac
    (cd "$work/pyinstaller-$version/bootloader" && CC="$cross-gcc" "$waf_py" ./waf all --static-zlib) >&2
    mkdir -p "$work/out"
    cp -r "$work/pyinstaller-$version/PyInstaller/bootloader"/Linux-* "$work/out/"
    touch "$work/out/.done"
    rm -rf "$out"
    mv "$work/out" "$out"
    echo "$out"
    exit 0
fi
# The sdist carries no Linux bootloader, so the build compiles the patched
# one; forcing it makes that true everywhere.
PYINSTALLER_COMPILE_BOOTLOADER=1 "$py" -m pip wheel -q --no-deps -w "$work/out" "$work/pyinstaller-$version" >&2
touch "$work/out/.done"
rm -rf "$out"
mv "$work/out" "$out"
ls "$out"/*.whl
