#!/usr/bin/env bash
# Builds llama.cpp from exactly the source the pinned llama-cpp-python
# vendors (its PyPI sdist), in one of two flavours, and prints the folder
# it went to. A finished build is kept, so the second call costs nothing.
#
#   portable  shared libllama and libggml with the CPU kernels split into
#             one library per x86-64 (or ARM) level, chosen when the
#             program starts, and llama.cpp's RPC backend (--rpc,
#             --rpc-worker): what the packaged file ships.
#   portable-tools  the portable libraries (compiled exactly as the file's)
#             and llama-server, llama-completion and llama-bench linked to
#             them: the benchmarks' reference, given only the CPU library
#             the file picked, so both run the same kernels.
#   native    llama-server, llama-cli, llama-completion and llama-bench, for this CPU
#             as llama.cpp builds them by default.
#   native-lib  shared libllama and libggml compiled for this CPU alone:
#             what bench/variants.py compares the portable kernels with.
#   portable-aarch64  the portable libraries for linux-aarch64, cross-compiled
#             here (Debian's g++-aarch64-linux-gnu, scripts/cmake/), one
#             library per ARM level, and llama.cpp's own llama-completion
#             linked against them: the reference the aarch64 tests compare
#             the file with, under qemu-user.
#
# On a CPU with AMX, native builds use llama.cpp's AMX kernels, which the
# AMX patch makes safe; should one ever fault anyway, build the reference
# without them: CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF".
#
# The patches in patches/llama-cpp-*.patch are applied to that source first
# (AMX on Linux; a minimum log level, so DEBUG lines never reach Python); they
# are part of the cache key, as are the flavour's CMake arguments and
# extra CMake arguments (a GPU backend, say) from CMAKE_ARGS. PYTHON (default python3) fetches the sdist. Runs on
# Linux, macOS and Windows (Git Bash), as the release matrix needs.
set -euo pipefail
flavor=${1:?usage: build-llama-cpp.sh portable|portable-tools|native|native-lib|portable-aarch64}
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^llama[-_]cpp[-_]python==//p' "$here/constraints.txt")
[ -n "$version" ] || { echo "build-llama-cpp: no llama-cpp-python pin in constraints.txt" >&2; exit 1; }
cache=${LLAMABIN_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamabin-build}
extra=${CMAKE_ARGS:-}
cross=
arm_cc=  # the C compiler of a build for ARM Linux, cross or native
if [ "$flavor" = portable-aarch64 ]; then
    cross=aarch64-linux-gnu
    command -v "$cross-g++" >/dev/null || {
        echo "build-llama-cpp: portable-aarch64 needs the cross compiler $cross-g++ (Debian: g++-aarch64-linux-gnu)" >&2
        exit 1
    }
    arm_cc=$cross-gcc
elif [ "$flavor" = portable ] && [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = aarch64 ]; then
    arm_cc=${CC:-cc}
fi
compiler=
if [ -n "$arm_cc" ]; then
    # The compiler decides which ARM levels can be built (below), so its
    # version is part of the key, and so is the cross toolchain file.
    compiler="$arm_cc $("$arm_cc" -dumpfullversion 2>/dev/null || "$arm_cc" -dumpversion)"
    [ -z "$cross" ] || compiler="$compiler $(cat "$here/scripts/cmake/$cross.cmake")"
fi
case $flavor in
portable)
    args=(-DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON
          -DGGML_CPU_ALL_VARIANTS=ON -DGGML_RPC=ON -DLLAMA_BUILD_COMMON=OFF)
    targets=(all) ;;
portable-tools)
    # libggml depends on every CPU variant module, so the tools' targets
    # build them all, with the same flags as the portable flavour's.
    args=(-DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON
          -DGGML_CPU_ALL_VARIANTS=ON -DGGML_RPC=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON
          -DLLAMA_BUILD_SERVER=ON)
    targets=(llama ggml-rpc llama-server llama-completion llama-bench) ;;
native)
    args=(-DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON
          -DLLAMA_BUILD_SERVER=ON)
    targets=(llama-server llama-cli llama-completion llama-bench) ;;
native-lib)
    args=(-DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DLLAMA_BUILD_COMMON=OFF)
    targets=(all) ;;
portable-aarch64)
    # libggml depends on every CPU variant module, so building llama and
    # llama-completion builds them all, and none of the other tools.
    args=(-DCMAKE_TOOLCHAIN_FILE="$here/scripts/cmake/$cross.cmake" -DBUILD_SHARED_LIBS=ON
          -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_RPC=ON
          -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF)
    targets=(llama ggml-rpc llama-completion) ;;
*)
    echo "build-llama-cpp: unknown flavour '$flavor' (portable, portable-tools, native, native-lib or portable-aarch64)" >&2
    exit 2 ;;
esac

# The key: everything that changes what is built. The checkout's own path
# (in the cross toolchain file's argument) is left out, so every clone on a
# machine shares one build.
patches=("$here"/patches/llama-cpp-*.patch)
[ -e "${patches[0]}" ] || patches=()
key="$flavor-$( { printf %s "${args[*]//$here/}|${targets[*]}|$extra$compiler"; cat ${patches[@]+"${patches[@]}"}; } | cksum | cut -d' ' -f1)"
out="$cache/llama.cpp-$version-$key"
if [ -f "$out/.done" ]; then
    echo "$out"
    exit 0
fi

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
# The two armv9.2 levels need SME, which GCC knows from version 14 on
# (Debian 12 has GCC 12, native or cross): without it those two are left
# out, and an SME machine runs the best level below them (armv8.6_2).
if [ -n "$arm_cc" ] && ! echo 'int main(void){return 0;}' \
        | "$arm_cc" -march=armv9.2-a+sme -x c -c -o /dev/null - 2>/dev/null; then
    echo "build-llama-cpp: $arm_cc knows no SME: the armv9.2 levels are left out" >&2
    sed -i '/ggml_add_cpu_backend_variant(armv9\.2_/d' "$src/ggml/src/CMakeLists.txt"
fi

# shellcheck disable=SC2206  # CMAKE_ARGS is a list of words by convention
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON "${args[@]}" $extra 2>&1 | tee "$work/cmake.log" >&2
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
        # The tools' own libraries (portable-aarch64 builds llama-completion
        # shared) go beside them: lib/ is what a file ships.
        case ${name:-$(basename "$f")} in libllama-common* | libllama-*-impl*) dest=bin ;; *) dest=lib ;; esac
        case $name in libllama.so*) name=libllama.so ;; libllama.*dylib) name=libllama.dylib ;; esac
        cp "$f" "$work/out/$dest/${name:-$(basename "$f")}"
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
# The version as ggml_version() and ggml_commit() give it, for builds whose
# libraries this machine cannot load (another architecture's).
echo "ggml $(sed -n 's/^-- ggml version: *//p' "$work/cmake.log") ($(sed -n 's/^-- ggml commit: *//p' "$work/cmake.log"))" \
    >"$work/out/ggml-version"
echo "$version $flavor $extra" >"$work/out/.done"
rm -rf "$out"
mv "$work/out" "$out"
echo "$out"
