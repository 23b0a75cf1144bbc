#!/usr/bin/env bash
# The llamabin-runtime wheel for one target, written into WHEELDIR; prints
# its path. `make wheels`, `make wheels-aarch64` and the release legs
# (scripts/ci/build-leg.sh) all make their runtime wheels here.
#
#   scripts/runtime-wheel.sh PYTHON TARGET WHEELDIR
#
# - this machine's target: llama.cpp's portable libraries
#   (scripts/build-llama-cpp.sh portable), frozen with this tree by
#   PYTHON's PyInstaller (scripts/build-runtime-wheel.py);
# - linux-aarch64 on an x86-64 Linux: the libraries cross-compiled and the
#   runtime frozen under qemu-user (scripts/freeze-runtime-aarch64.sh).
# Any other target is built on a machine of its own (the release matrix).
set -euo pipefail
py=${1:?usage: runtime-wheel.sh PYTHON TARGET WHEELDIR}
target=${2:?usage: runtime-wheel.sh PYTHON TARGET WHEELDIR}
wheels=${3:?usage: runtime-wheel.sh PYTHON TARGET WHEELDIR}
here=$(cd "$(dirname "$0")/.." && pwd)
# This machine's target, once the one asked for is known (else the list, exit 2).
host=$("$py" -c '
import sys
sys.path.insert(0, sys.argv[1])
from packager.targets import KNOWN, host_target, unknown_target_message
if sys.argv[2] not in KNOWN:
    sys.exit("runtime-wheel: " + unknown_target_message(sys.argv[2]))
print(host_target())' "$here" "$target") || exit 2
mkdir -p "$wheels"
# A wheel of an older build (another glibc tag, say) would stand beside the new one.
[ "${target%%-*}" != linux ] || rm -f "$wheels"/llamabin_runtime-*-manylinux_*_"${target#linux-}".whl

if [ "$target" = "$host" ]; then
    lib="$("$here/scripts/build-llama-cpp.sh" portable)/lib"
    exec "$py" "$here/scripts/build-runtime-wheel.py" -w "$wheels" --llama-lib "$lib"
fi
if [ "$target" = linux-aarch64 ] && [ "$host" = linux-x86_64 ]; then
    exe=$("$here/scripts/freeze-runtime-aarch64.sh" "$py")
    lib="$("$here/scripts/build-llama-cpp.sh" portable-aarch64)/lib"
    exec "$py" "$here/scripts/build-runtime-wheel.py" -w "$wheels" --exe "$exe" --target linux-aarch64 --llama-lib "$lib"
fi
echo "runtime-wheel: a $target runtime is built on a $target machine (this is $host)" >&2
exit 2
