# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo setup system test lint wheels wheels-aarch64 clean

demo: setup
	scripts/demo.sh $(PY)

setup: system $(VENV)/.installed $(VENV)/.llama-lib $(VENV)/.models

system:
	@scripts/setup-system.sh

# llama-cpp-python is installed without compiling its own llama.cpp
# (LLAMA_BUILD=OFF: seconds, not 8 minutes); $(VENV)/.llama-lib then gives
# it the portable libraries. PyInstaller is then replaced by the same version with its bootloader
# patched (patches/): the runtime is unpacked once into the user cache, and
# a full TMPDIR gets a clear error and no leftovers.
# A clone runs the runtime from its sources, so it installs the extras'
# requirements (scripts/dev-requirements.py) and llamabin itself with
# --no-deps, without the llamabin-runtime wheel that `pip install llamabin`
# brings; editable_mode=compat puts the whole tree (chat/ too) on sys.path.
$(VENV)/.installed: pyproject.toml constraints.txt $(wildcard patches/pyinstaller-*.patch) scripts/build-pyinstaller.sh scripts/dev-requirements.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/dev-requirements.py runtime build convert test bench > $(VENV)/requirements-dev.txt
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip install -q -c constraints.txt -r $(VENV)/requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e . -C editable_mode=compat
	$(PY) -m pip install -q --no-deps --force-reinstall "$$(scripts/build-pyinstaller.sh $(PY))"
	touch $@

# llama.cpp's portable libraries that every file ships (about 9 minutes on
# two cores the first time; kept in ~/.cache/llamabin-build afterwards).
# One code path everywhere: `python -m chat`, the tests, the benchmarks and
# every packaged file run the same portable libraries through the same
# CPU-variant picker. A llama-cpp-python built for this machine's CPU (a
# wheel from pip's cache, say) would run kernels no file ships.
$(VENV)/.llama-lib: $(VENV)/.installed scripts/build-llama-cpp.sh scripts/use-llama-lib.py $(wildcard patches/llama-cpp-*.patch)
	lib=$$(scripts/build-llama-cpp.sh portable) && $(PY) scripts/use-llama-lib.py "$$lib/lib"
	touch $@

$(VENV)/.models: $(VENV)/.installed scripts/fetch-models.sh
	scripts/fetch-models.sh $(PY)
	touch $@

# What only the tests need, beside setup's: keras-hub on jax, to make Keras
# presets (tests/test_keras.py, about 600 MB), and torch with transformers
# for llama.cpp's own converter (tests/test_llama_converter.py: PyPI's torch
# is the CUDA build, 2.9 GB of wheels, 5.6 GB installed, about a minute from
# pip's cache). Both with --no-deps and every package pinned: keras-hub
# would pull tensorflow, and torch a newer setuptools than the venv's.
$(VENV)/.test-extras: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps -c constraints.txt $$($(PY) scripts/dev-requirements.py keras-test torch-test)
	touch $@

test: setup $(VENV)/.test-extras
	$(PY) -m pytest

# The wheels `pip install llamabin` takes: llamabin (the packer) and the
# runtime for this machine (llamabin-runtime, a platform wheel holding the
# runtime frozen from this tree, cached in build/runtime/). Install with
#   pip install --find-links wheelhouse llamabin
wheels: setup
	rm -f wheelhouse/llamabin-*.whl
	$(PY) -m pip wheel -q --no-deps -w wheelhouse .
	scripts/runtime-wheel.sh $(PY) "$$($(PY) -c 'from packager.targets import host_target; print(host_target())')" wheelhouse

# The linux-aarch64 runtime wheel, made on this x86-64 machine: llama.cpp
# cross-compiled, the runtime frozen by an aarch64 Python under qemu-user
# (scripts/freeze-runtime-aarch64.sh; about 7 minutes the first time on 2
# cores, then cached).
# Then: llamabin build model.gguf --target linux-aarch64 --find-links wheelhouse
wheels-aarch64: setup
	scripts/runtime-wheel.sh $(PY) linux-aarch64 wheelhouse

# Types, lint and formatting; CI runs it before the tests.
lint: $(VENV)/.installed
	$(PY) -m mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build dist wheelhouse
