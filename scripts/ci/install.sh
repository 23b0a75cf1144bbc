#!/usr/bin/env bash
# Install llamabin and its build tools into PYTHON's environment, plus
# CMake and Ninja from PyPI where the system has none (the release matrix's
# runners and manylinux containers differ in what they carry).
#
#   scripts/ci/install.sh PYTHON
set -euo pipefail
py=${1:?usage: install.sh PYTHON}
cd "$(dirname "$0")/../.."
tools=()
command -v cmake >/dev/null || tools+=("cmake==4.4.4")
command -v ninja >/dev/null || tools+=("ninja==1.13.2")
[ ${#tools[@]} -eq 0 ] || "$py" -m pip install -q "${tools[@]}"
# What the runtime and its freezing need, then llamabin itself without the
# llamabin-runtime wheel (this leg builds that runtime), as the Makefile does.
"$py" scripts/dev-requirements.py runtime build > "${TMPDIR:-/tmp}/llamabin-ci-requirements.txt"
"$py" -m pip install -q -c constraints.txt -r "${TMPDIR:-/tmp}/llamabin-ci-requirements.txt"
"$py" -m pip install -q --no-deps -e . -C editable_mode=compat
# On Linux, PyInstaller with its bootloader patched (patches/): a full TMPDIR
# gets a clear error, and the runtime is unpacked once into the user cache.
if [ "$(uname -s)" = Linux ]; then
    "$py" -m pip install -q --no-deps --force-reinstall "$(scripts/build-pyinstaller.sh "$py")"
fi
