# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo setup system llama-lib test lint clean

demo: setup
	scripts/demo.sh $(PY)

setup: system $(VENV)/.installed $(VENV)/.models llama-lib

system:
	@scripts/setup-system.sh

# llama.cpp's portable libraries that every file ships (about 9 minutes on
# two cores the first time; kept in ~/.cache/llamabin-build afterwards).
llama-lib: system
	@scripts/build-llama-cpp.sh portable >/dev/null

# pip keeps the llama-cpp-python wheel it builds (about 8 minutes) in its
# cache, so a fresh venv on the same machine installs it in seconds.
# PyInstaller is then replaced by the same version with its bootloader
# patched (patches/): the runtime is unpacked once into the user cache, and
# a full TMPDIR gets a clear error and no leftovers.
$(VENV)/.installed: pyproject.toml constraints.txt $(wildcard patches/pyinstaller-*.patch) scripts/build-pyinstaller.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[build,test,bench]'
	$(PY) -m pip install -q --no-deps --force-reinstall "$$(scripts/build-pyinstaller.sh $(PY))"
	touch $@

$(VENV)/.models: $(VENV)/.installed scripts/fetch-models.sh
	scripts/fetch-models.sh $(PY)
	touch $@

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m mypy

clean:
	rm -rf build dist
