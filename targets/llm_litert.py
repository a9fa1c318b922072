"""Language-model builds for LiteRT, the runtime Android and iOS apps embed (LiteRT-LM runs the same file): litert-
torch's Hugging Face exporter (`litert_torch.generative.export_hf`) writes one .tflite whose `prefill_<n>` and
`decode` signatures take the KV cache in and give it back (edgeml.runtimes.litert_llm), and ai-edge-quantizer
quantizes its weights, the activations quantized as they come (dynamic range, by XNNPACK):

- dynamic_wi8: INT8 weights, one scale per output channel (the exporter's default recipe);
- dynamic_wi4b32: INT4 weights of the fully connected layers in blocks of 32; the embedding table and the LM head INT8
  per token (one all-zero row, a padding token's, leaves an INT4 block with a zero scale, which XNNPACK refuses);
- fp32: the float model, for reference.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

from edgeml.captured_output import logged
from edgeml.runtimes.litert_llm import MODEL
from edgeml.targets.base import LanguageModelBuild, LanguageModelCandidate, cache_length, copy_tokenizer_files
from edgeml.targets.build_log import refusing

RUNTIME = "litert"
PREFILL_LENGTHS = (32, 128, 512)     # a prompt runs in the shortest that holds it, or in chunks of the longest


def _recipe(name: str, folder: Path) -> str:
    """The exporter's recipe argument: "none", an ai-edge-quantizer recipe's name, or a JSON file of edgeml's."""
    if name != "dynamic_wi4b32":
        return name
    from ai_edge_quantizer import recipe
    from ai_edge_quantizer.qtyping import TFLOperationName

    layers = recipe.dynamic_wi4b32_afp32(operation_name=TFLOperationName.FULLY_CONNECTED)
    # the LM head as the embedding table, which it may share: a tensor quantized two ways is stored twice
    head = recipe.dynamic_wi8c_afp32(regex=".*logits.*", operation_name=TFLOperationName.FULLY_CONNECTED)
    embedding = recipe.dynamic_wi8c_afp32(operation_name=TFLOperationName.EMBEDDING_LOOKUP)
    path = folder / "recipe.json"
    path.write_text(json.dumps(layers + head + embedding, default=str))
    return str(path)


def _build(recipe: str):
    def build(source: Path, out: Path, context: LanguageModelBuild) -> None:
        out.mkdir(parents=True, exist_ok=True)
        length = cache_length(context.config)
        with logged(context.log) as log, tempfile.TemporaryDirectory(dir=out.parent) as work:
            export = refusing("litert-torch: loading the exporter", log, _exporter)
            refusing("litert-torch: export_hf", log, lambda: export(
                model=str(source), output_dir=work, prefill_lengths=[n for n in PREFILL_LENGTHS if n <= length],
                cache_length=length, quantization_recipe=_recipe(recipe, Path(work)), bundle_litert_lm=False,
                keep_temporary_files=True))
            written = Path(work) / ("model.tflite" if recipe == "none" else "model_quantized.tflite")
            shutil.move(written, out / MODEL)
        copy_tokenizer_files(source, out)
    return build


def _exporter():
    """litert-torch's `export_hf.export`, importable beside transformers 5 with `kernels` installed and without
    TensorFlow (litert-torch 0.10):
    - its patches replace transformers' `use_kernel_forward_from_hub`, after which `kernels`' `use_kernelized_func`
      refuses the rope function ("is not decorated with @use_kernel_forward_from_hub"): it gets transformers' own
      stand-in for when `kernels` is absent;
    - one of its model extensions (bonsai_flux2) imports TensorFlow's flatbuffer schema module at import time: the
      same module of ai-edge-litert stands in while that extension alone imports.
    The build runs in a process of its own, so these stay there."""
    import transformers.integrations
    import transformers.integrations.hub_kernels as hub_kernels

    def use_kernelized_func(*args, **kwargs):
        return lambda cls: cls

    transformers.integrations.use_kernelized_func = hub_kernels.use_kernelized_func = use_kernelized_func
    stand_ins = {}
    if importlib.util.find_spec("tensorflow") is None:
        from ai_edge_litert import schema_py_generated

        tensorflow, lite, python = (types.ModuleType(n) for n in ("tensorflow", "tensorflow.lite",
                                                                   "tensorflow.lite.python"))
        tensorflow.lite, lite.python, python.schema_py_generated = lite, python, schema_py_generated
        stand_ins = {"tensorflow": tensorflow, "tensorflow.lite": lite, "tensorflow.lite.python": python,
                     "tensorflow.lite.python.schema_py_generated": schema_py_generated}
    import litert_torch.generative.export_hf.core.patches  # noqa: F401  (torch and transformers, without them)

    sys.modules.update(stand_ins)
    try:
        import litert_torch.generative.export_hf.model_ext.bonsai_flux2.bonsai_flux2  # noqa: F401
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    from litert_torch.generative.export_hf.export import export

    return export


def _candidate(name: str, precision: str, recipe: str, method: str) -> LanguageModelCandidate:
    return LanguageModelCandidate(name, RUNTIME, precision, _build(recipe), method=method,
                                  needs=("transformers", "litert_torch", "ai_edge_quantizer"))


LITERT_LANGUAGE_MODELS = (
    _candidate("litert-fp32", "fp32", "none", "litert-torch export_hf, FP32 weights, XNNPACK"),
    _candidate("litert-dynamic-int8", "int8", "dynamic_wi8_afp32",
               "litert-torch export_hf, ai-edge-quantizer INT8 weights per channel, activations quantized as they "
               "come (dynamic range), XNNPACK"),
    _candidate("litert-dynamic-int4", "int4", "dynamic_wi4b32",
               "litert-torch export_hf, ai-edge-quantizer INT4 weights in blocks of 32 (embedding INT8), "
               "activations quantized as they come (dynamic range), XNNPACK"),
)
