#!/usr/bin/env bash
# The linux-aarch64 runtime, frozen on an x86-64 Linux: PyInstaller runs on
# an aarch64 Python, in the Debian arm64 tree of scripts/make-rootfs-arm64.sh,
# under qemu-user (scripts/binfmt-aarch64.sh), with llama.cpp's aarch64
# libraries cross-built by scripts/build-llama-cpp.sh portable-aarch64.
# Prints the executable's path; a runtime is kept in the build cache, keyed
# by everything frozen into it, so a fresh clone of the same sources reuses it.
#
#   scripts/freeze-runtime-aarch64.sh PYTHON
#
# PYTHON is the clone's venv (.venv/bin/python). scripts/runtime-wheel.sh
# wraps the result into the llamabin-runtime wheel.
set -euo pipefail
py=${1:?usage: freeze-runtime-aarch64.sh PYTHON}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${LLAMABIN_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamabin-build}

# Said before the ten minutes of compiling, not after them.
[ "$(id -u)" = 0 ] || { echo "freeze-runtime-aarch64: needs root (a chroot, and the binfmt entry)" >&2; exit 3; }
"$here/scripts/binfmt-aarch64.sh"
lib="$("$here/scripts/build-llama-cpp.sh" portable-aarch64)/lib"
root=$("$here/scripts/make-rootfs-arm64.sh" "$py")
sources=(chat payload templates build.spec)
key=$( { cat "$0"; echo "$root"; (cd "$here" && find "${sources[@]}" -type f ! -path '*__pycache__*' | LC_ALL=C sort | xargs sha256sum);
         (cd "$lib" && LC_ALL=C ls | xargs sha256sum); } | sha256sum | cut -c1-16)
runtimes="$cache/runtime-linux-aarch64"
out="$runtimes/$key"
if [ -f "$out/llamabin-runtime" ]; then
    touch "$out"
    echo "$out/llamabin-runtime"
    exit 0
fi

# The sources and libraries are copied into the tree, frozen there, and the
# copy removed; /proc is mounted in a mount namespace of this run's own, so
# nothing is left mounted whatever happens.
mkdir -p "$root/tmp"
work=$(mktemp -d "$root/tmp/freeze-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
(cd "$here" && cp -r "${sources[@]}" "$work/src/")
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
cp -r "$lib" "$work/lib"
w=${work#"$root"}
start=$(date +%s)
unshare --mount --propagation private sh -c '
    mount -t proc proc "$1/proc"
    exec chroot "$1" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp LC_ALL=C.UTF-8 \
        PYTHONPATH=/opt/llamabin/site LLAMA_CPP_LIB_PATH="$2/lib" LLAMABIN_LLAMA_LIB="$2/lib" \
        /usr/bin/python3.11 -m PyInstaller --noconfirm --log-level WARN \
        --distpath "$2/dist" --workpath "$2/work" "$2/src/build.spec"
' freeze "$root" "$w" >&2
echo "freeze-runtime-aarch64: frozen under emulation in $(( $(date +%s) - start )) s" >&2
# Published by a rename; a run that finished the same key first keeps its copy.
mkdir -p "$runtimes"
staged=$(mktemp -d "$runtimes/.staging-XXXXXX")
mv "$work/dist/llamabin-runtime" "$staged/"
mv -T "$staged" "$out" 2>/dev/null || rm -rf "$staged"
# Keep the 4 most recently used runtimes, as build/runtime/ does.
ls -1dt "$runtimes"/*/ | tail -n +5 | while IFS= read -r old; do rm -rf "$old"; done
echo "$out/llamabin-runtime"
