#!/usr/bin/env bash
# A Debian arm64 tree with Python 3.11 and what freezing the runtime needs,
# for scripts/freeze-runtime-aarch64.sh to chroot into under qemu-user.
# Prints its folder; a finished tree is kept in the build cache.
#
#   scripts/make-rootfs-arm64.sh PYTHON
#
# PYTHON is the clone's venv (.venv/bin/python): its pip fetches the
# aarch64 wheels, and its llama-cpp-python (pure Python when installed with
# LLAMA_BUILD=OFF) is copied in. Nothing here runs under emulation:
#   - mmdebstrap's `extract` variant downloads the Debian packages and their
#     dependencies and unpacks them, running none of their scripts (seconds;
#     debootstrap's second stage takes half an hour under qemu);
#   - this machine's pip installs the pinned aarch64 wheels into
#     /opt/llamabin/site (--platform, wheels only);
#   - PyInstaller's bootloader, patched as on x86-64, is cross-compiled
#     (scripts/build-pyinstaller.sh --cross) and replaces the wheel's own.
# Needs root, mmdebstrap and gcc-aarch64-linux-gnu (Debian).
set -euo pipefail
py=${1:?usage: make-rootfs-arm64.sh PYTHON}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${LLAMABIN_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamabin-build}
suite=${ROOTFS_SUITE:-bookworm}
# python3.11 and its standard library; what llama.cpp's libraries link
# (libstdc++, libgomp for OpenMP), which PyInstaller copies into the file;
# libc-bin for ldd, bash for ldd's script, binutils for strip: PyInstaller
# calls all three.
packages=python3.11,libpython3.11,libstdc++6,libgcc-s1,libgomp1,libc-bin,bash,dash,coreutils,binutils

command -v mmdebstrap >/dev/null || { echo "make-rootfs-arm64: mmdebstrap is not installed (Debian: mmdebstrap)" >&2; exit 3; }
[ "$(id -u)" = 0 ] || { echo "make-rootfs-arm64: needs root (it unpacks a Debian tree)" >&2; exit 3; }
bootloader=$("$here/scripts/build-pyinstaller.sh" "$py" --cross aarch64-linux-gnu)
requirements=$("$py" "$here/scripts/dev-requirements.py" runtime build | grep -v '^llama-cpp-python==')
llama_dist=$("$py" -c 'from importlib import metadata; d = metadata.distribution("llama-cpp-python"); print(d.version, d.locate_file(""))')
read -r llama_version site_packages <<<"$llama_dist"
key=$( { cat "$0"; echo "$suite $packages $llama_version $bootloader"; echo "$requirements"; cat "$here/constraints.txt"; } \
    | cksum | cut -d' ' -f1)
out="$cache/rootfs-arm64-$key"
if [ -f "$out/.done" ]; then
    echo "$out"
    exit 0
fi

# The sources apt already uses, else Debian's; the security suite too,
# since the tree's libpython and libraries go into every file.
uris=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
mirror=${ROOTFS_MIRROR:-$(echo "$uris" | grep -v -- '-security' | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
security=$(echo "$uris" | grep -- '-security' | head -n1 || true)
security=${security:-${mirror%/debian}/debian-security}
mkdir -p "$cache"
work=$(mktemp -d "$cache/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=extract --arch=arm64 --include="$packages" "$suite" "$work/root" \
    "deb $mirror $suite main" "deb $security $suite-security main" >&2
# The loader's cache, which no package script made: PyInstaller asks
# `ldconfig -p` where libraries are. Run by qemu-user (binfmt), in a second.
"$here/scripts/binfmt-aarch64.sh"
chroot "$work/root" /sbin/ldconfig

site="$work/root/opt/llamabin/site"
platforms=(--platform manylinux2014_aarch64)
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
# llama-cpp-python's own dependencies, which its copy below does not bring.
printf '%s\n' "$requirements" numpy diskcache typing-extensions >"$work/requirements.txt"
"$py" -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$site" "${platforms[@]}" \
    --python-version 3.11 --implementation cp --abi cp311 --only-binary :all: \
    -c "$here/constraints.txt" -r "$work/requirements.txt" >&2
cp -r "$site_packages/llama_cpp" "$site_packages/llama_cpp_python-$llama_version.dist-info" "$site/"
rm -rf "$site/llama_cpp/lib" "$site"/llama_cpp/__pycache__  # the aarch64 libraries come at freeze time
cp -r "$bootloader"/Linux-* "$site/PyInstaller/bootloader/"

touch "$work/root/.done"
# Published by a rename; a run that finished the same key first (and may be
# freezing in it now) keeps its tree.
mv -T "$work/root" "$out" 2>/dev/null || [ -f "$out/.done" ] || { rm -rf "$out"; mv -T "$work/root" "$out"; }
echo "$out"
