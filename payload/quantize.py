"""What `llamabin build --quant` and the runtime agree on: the command the
packer runs inside the runtime (which holds llama.cpp) and the types it
takes, named as llama.cpp's llama-quantize names them."""

COMMAND = "__quantize__"  # RUNTIME __quantize__ SRC DST TYPE [IMATRIX]
# What the command prints on stdout as it goes: "progress DONE TOTAL" per
# tensor, for the packer's progress bar.
PROGRESS = "progress"

QUANT_TYPES = (
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
    "IQ4_NL", "IQ4_XS",
    "F16", "BF16", "F32",
)  # fmt: skip

# Types whose tensors llama.cpp refuses to make without an importance
# matrix (llama-quant.cpp, tensor_requires_imatrix).
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"})

# What a source GGUF may hold: quantizing an already quantized model
# compounds the errors of both, so llama.cpp and llamabin refuse it.
SOURCE_TYPES = frozenset({"F32", "ALL_F32", "F16", "BF16"})
