#!/usr/bin/env bash
# Builds llama.cpp from exactly the source the pinned llama-cpp-python
# vendors (its PyPI sdist), in one of two flavours, and prints the folder
# it went to. A finished build is kept, so the second call costs nothing.
#
#   portable  shared libllama and libggml with the CPU kernels split into
#             one library per x86-64 (or ARM) level, chosen when the
#             program starts: what the packaged file ships.
#   native    llama-server, llama-cli, llama-completion and llama-bench, for this CPU
#             as llama.cpp builds them by default: the reference the
#             benchmarks measure against.
#   native-lib  shared libllama and libggml compiled for this CPU alone:
#             what bench/variants.py compares the portable kernels with.
#
# On a CPU with AMX, native builds use llama.cpp's AMX kernels, which the
# AMX patch makes safe; should one ever fault anyway, build the reference
# without them: CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF".
#
# The patches in patches/llama-cpp-*.patch are applied to that source first
# (AMX on Linux, see the patch); they are part of the cache key, as are
# extra CMake arguments (a GPU backend, say) from CMAKE_ARGS. PYTHON (default python3) fetches the sdist. Runs on
# Linux, macOS and Windows (Git Bash), as the release matrix needs.
set -euo pipefail
flavor=${1:?usage: build-llama-cpp.sh portable|native|native-lib}
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^llama[-_]cpp[-_]python==//p' "$here/constraints.txt")
[ -n "$version" ] || { echo "build-llama-cpp: no llama-cpp-python pin in constraints.txt" >&2; exit 1; }
cache=${LLAMABIN_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamabin-build}
extra=${CMAKE_ARGS:-}
patches=("$here"/patches/llama-cpp-*.patch)
[ -e "${patches[0]}" ] || patches=()
key="$flavor-$( { printf %s "$extra"; cat ${patches[@]+"${patches[@]}"}; } | cksum | cut -d' ' -f1)"
out="$cache/llama.cpp-$version-$key"
if [ -f "$out/.done" ]; then
    echo "$out"
    exit 0
fi

case $flavor in
portable)
    args=(-DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON
          -DGGML_CPU_ALL_VARIANTS=ON -DLLAMA_BUILD_COMMON=OFF)
    targets=(all) ;;
native)
    args=(-DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON
          -DLLAMA_BUILD_SERVER=ON)
    targets=(llama-server llama-cli llama-completion llama-bench) ;;
native-lib)
    args=(-DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DLLAMA_BUILD_COMMON=OFF)
    targets=(all) ;;
*)
    echo "build-llama-cpp: unknown flavour '$flavor' (portable, native or native-lib)" >&2
    exit 2 ;;
esac

# Everything happens in a private folder that is renamed at the end, so an
# interrupted build never looks finished.
mkdir -p "$cache"
work=$(mktemp -d "$cache/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT
sdist="$cache/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
    "${PYTHON:-python3}" -m pip download -q --no-deps --no-binary :all: \
        "llama-cpp-python==$version" -d "$work/dl" >&2
    mv "$work/dl/llama_cpp_python-$version.tar.gz" "$sdist"
fi
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
for p in ${patches[@]+"${patches[@]}"}; do
    patch -s -p1 -d "$src" <"$p" >&2
done

# shellcheck disable=SC2206  # CMAKE_ARGS is a list of words by convention
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON "${args[@]}" $extra >&2
cmake --build "$work/build" -j "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)" --target "${targets[@]}" >&2

mkdir -p "$work/out/lib" "$work/out/bin"
# One file per library, under the name it is looked up by: the name other
# libraries link (libggml.so.0, libggml.0.dylib), and for libllama the name
# llama-cpp-python opens (libllama.so, libllama.dylib). Symlinks would not
# survive every packaging step, and two copies of libggml would split its
# backend registry in two. The CPU variants are modules with no such name.
linked_name() {
    case $(uname -s) in
    Darwin) otool -D "$1" | sed -n '2s|.*/||p' ;;
    *) readelf -d "$1" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p' ;;
    esac
}
case $(uname -s) in
MINGW* | MSYS* | CYGWIN*)
    cp "$work"/build/bin/*.dll "$work/out/lib/" ;;
*)
    find "$work/build/bin" -maxdepth 1 \( -name 'lib*.so*' -o -name 'lib*.dylib' \) -type f | while read -r f; do
        name=$(linked_name "$f")
        case $name in libllama.so*) name=libllama.so ;; libllama.*dylib) name=libllama.dylib ;; esac
        cp "$f" "$work/out/lib/${name:-$(basename "$f")}"
    done ;;
esac
for t in llama-server llama-cli llama-completion llama-bench; do
    [ ! -x "$work/build/bin/$t" ] || cp "$work/build/bin/$t" "$work/out/bin/"
done
cp "$src/LICENSE" "$work/out/LICENSE.llama.cpp"
# ggml's headers, backend internals included: the self-test's tests build a
# CPU-variant library against them.
mkdir -p "$work/out/include"
cp "$src"/ggml/include/*.h "$src/ggml/src/ggml-backend-impl.h" "$work/out/include/"
echo "$version $flavor $extra" >"$work/out/.done"
rm -rf "$out"
mv "$work/out" "$out"
echo "$out"
