#!/usr/bin/env bash
# Builds the pinned PyInstaller from its sdist with patches/pyinstaller-*.patch
# applied to the bootloader (see the patch for why), and prints the wheel's
# path. The wheel is kept, so later calls cost nothing.
#
#   python -m pip install --no-deps --force-reinstall "$(scripts/build-pyinstaller.sh PYTHON)"
#
# Needs a C compiler and zlib's headers (Debian: gcc, zlib1g-dev).
set -euo pipefail
py=${1:?usage: build-pyinstaller.sh PYTHON}
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^pyinstaller==//p' "$here/constraints.txt")
[ -n "$version" ] || { echo "build-pyinstaller: no pyinstaller pin in constraints.txt" >&2; exit 1; }
patches=("$here"/patches/pyinstaller-*.patch)
key=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
cache=${LLAMABIN_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamabin-build}
out="$cache/pyinstaller-$version-$key"
if [ -f "$out/.done" ]; then
    ls "$out"/*.whl
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
# The sdist carries no Linux bootloader, so the build compiles the patched
# one; forcing it makes that true everywhere.
PYINSTALLER_COMPILE_BOOTLOADER=1 "$py" -m pip wheel -q --no-deps -w "$work/out" "$work/pyinstaller-$version" >&2
touch "$work/out/.done"
rm -rf "$out"
mv "$work/out" "$out"
ls "$out"/*.whl
