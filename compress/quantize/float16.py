"""FP16 weights and compute for ONNX Runtime, with onnxruntime's float16 converter.

Inputs and outputs stay float32 (a Cast at each end), so the same data feeds every candidate. An op
without an FP16 kernel in the runtime still runs: ONNX Runtime casts around it (on x86 CPUs without
FP16 arithmetic that is most of them, so it is usually slower than FP32); the weights are halved.

Transposes stay in float32: ONNX Runtime (1.32 in our checks) crashes with a segmentation fault when
it creates a CPU session at the default optimization level for a graph where an FP16 Transpose feeds
a MatMul, as in attention blocks exported from PyTorch. Transposes carry no weights: the size is the same.
"""

from __future__ import annotations

from pathlib import Path


def run(model: Path, output: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True,
                                         op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Transpose"])
    onnx.save_model(converted, str(output))
    return output
