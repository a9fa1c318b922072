"""Language-model builds for llama.cpp (llama-cpp-python, the opt-in `llamacpp` extra: it compiles llama.cpp when it
installs): the model written as an F32 GGUF file (edgeml.targets.gguf_file), then quantized by llama.cpp's own
`llama_model_quantize`, as its `llama-quantize` tool does, without an importance matrix:

- Q8_0: INT8 weights in blocks of 32, one FP16 scale each;
- Q4_K_M: INT4 k-quants, super-blocks of 256 with 6-bit scales and minimums, half of attn_v and ffn_down in Q6_K;
  a matrix whose rows 256 does not divide gets llama.cpp's fallback type (Q5_0, Q5_1 or Q8_0), as llama-quantize
  does;
- Q4_0: INT4 weights in blocks of 32, one scale each.

The token embedding and the output layer are quantized by llama.cpp's rules for each type.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgeml.captured_output import logged
from edgeml.runtimes.llamacpp import MODEL, SETTINGS
from edgeml.targets.base import (
    BuildRefused,
    LanguageModelBuild,
    LanguageModelCandidate,
    cache_length,
    copy_tokenizer_files,
)
from edgeml.targets.build_log import refusing
from edgeml.targets.gguf_file import write_gguf

RUNTIME = "llama-cpp"


def quantize(source: Path, out: Path, file_type: str, threads: int) -> None:
    """llama.cpp's quantizer: `source` (a GGUF file) to `out` in `file_type` (LLAMA_FTYPE_MOSTLY_<file_type>)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}")
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise BuildRefused(f"llama.cpp: llama_model_quantize to {file_type} failed (see the build's log)")


def _build(file_type: str):
    def build(source: Path, out: Path, context: LanguageModelBuild) -> None:
        out.mkdir(parents=True, exist_ok=True)
        with logged(context.log) as log, tempfile.TemporaryDirectory(dir=out.parent) as work:
            full = refusing("llama.cpp: writing GGUF", log, lambda: write_gguf(source, Path(work) / "f32.gguf"))
            refusing(f"llama.cpp: quantizing to {file_type}", log,
                     lambda: quantize(full, out / MODEL, file_type, context.threads))
        (out / SETTINGS).write_text(json.dumps({"n_ctx": cache_length(context.config)}))
        copy_tokenizer_files(source, out)
    return build


def _candidate(name: str, precision: str, file_type: str, method: str) -> LanguageModelCandidate:
    return LanguageModelCandidate(name, RUNTIME, precision, _build(file_type), method=method, needs=("gguf",))


LLAMACPP_LANGUAGE_MODELS = (
    _candidate("llama-cpp-q8_0", "int8", "Q8_0", "llama.cpp Q8_0: INT8 weights in blocks of 32"),
    _candidate("llama-cpp-q4_k_m", "int4", "Q4_K_M",
               "llama.cpp Q4_K_M: INT4 k-quants (blocks of 256, scales and minimums), some layers in Q6_K"),
    _candidate("llama-cpp-q4_0", "int4", "Q4_0", "llama.cpp Q4_0: INT4 weights in blocks of 32, one scale each"),
)
