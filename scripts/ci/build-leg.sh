#!/usr/bin/env bash
# One leg of the release matrix (.github/workflows/build.yml), runnable by
# hand: build this machine's runtime wheel (llama.cpp's portable libraries,
# the runtime frozen with them: scripts/runtime-wheel.sh) into OUTDIR/wheels,
# build the default model's file from that wheel, smoke-test it, and print
# the file's path.
#
#   scripts/ci/build-leg.sh PYTHON OUTDIR
#
# PYTHON is an interpreter with llamabin installed (scripts/ci/install.sh); extra CMake
# arguments for a GPU variant come from CMAKE_ARGS, and LEG_SUFFIX (say
# "-cuda") is appended to the file's name.
set -euo pipefail
py=${1:?usage: build-leg.sh PYTHON OUTDIR}
out=${2:?usage: build-leg.sh PYTHON OUTDIR}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
export PYTHON=$py  # for the scripts below, where python3 may be missing or another Python

target=$("$py" -c 'from packager.targets import host_target; print(host_target())')
# A GPU leg's runtime is not the release's llamabin-runtime of that
# platform (same name, other libraries): it is made outside OUTDIR, so the
# leg uploads only its file.
wheels="$out/wheels"
[ -z "${LEG_SUFFIX:-}" ] || wheels=$(mktemp -d)
scripts/runtime-wheel.sh "$py" "$target" "$wheels" >&2
read -r gguf license < <("$py" scripts/ci/default-model.py)
name=$("$py" -c 'import sys, pathlib; print(pathlib.Path(sys.argv[1]).stem)' "$gguf")${LEG_SUFFIX:-}
exe=$("$py" -m packager build "$gguf" --name "$name" -o "$out" --target "$target" \
    --find-links "$wheels" --no-index ${license:+--license "$license"})
scripts/ci/smoke-test.sh "$exe" >&2
echo "$exe"
