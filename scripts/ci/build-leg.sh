#!/usr/bin/env bash
# One leg of the release matrix (.github/workflows/build.yml), runnable by
# hand: build llama.cpp's portable libraries, build the default model's file
# with them, smoke-test it, and print the file's path.
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

libs="$(scripts/build-llama-cpp.sh portable)/lib"
read -r gguf license < <("$py" scripts/ci/default-model.py)
mkdir -p "$out"
name=$("$py" -c 'import sys, pathlib; print(pathlib.Path(sys.argv[1]).stem)' "$gguf")${LEG_SUFFIX:-}
exe=$("$py" -m packager build "$gguf" --name "$name" -o "$out" --llama-lib "$libs" ${license:+--license "$license"})
scripts/ci/smoke-test.sh "$exe" >&2
echo "$exe"
