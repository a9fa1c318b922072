"""The language-model builds of the Jetson and GPU targets: TensorRT engines, prepared here and built where they run.

A TensorRT engine only runs on the GPU and the TensorRT version that built it, so a build here writes a hand-off:

    checkpoint/        the model in FP16 (safetensors), its tokenizer and chat template
    build_engine.sh    the commands that make the engine, with its input length and KV-cache capacity:
                       - jetson: TensorRT Edge-LLM (github.com/NVIDIA/TensorRT-Edge-LLM): on a host,
                         `tensorrt-edgellm-quantize-llm` (INT4 AWQ, on an NVIDIA GPU) and `tensorrt-edgellm-export-llm`
                         (ONNX); on the Jetson, `llm_build`
                       - gpu: TensorRT-LLM (github.com/NVIDIA/TensorRT-LLM), on the GPU host: its
                         examples/quantization/quantize.py (FP16, or INT4 AWQ) and `trtllm-build`

Quality is measured here with transformers on the weights the engine computes with: the FP16 checkpoint (FP32
arithmetic here); for INT4, its decoder layers' linear weights rounded to 16 symmetric levels per block of 128 input
channels, as int4_awq stores them. AWQ also rescales channels on calibration text before rounding, which this does
not: the INT4 row is an estimate that AWQ usually improves on, and its method says so.

Speed is predicted from the device profile, never measured here: decode reads every weight the token passes
through, and the KV cache so far, once per token, so a token takes their bytes over the profile's memory bandwidth
(times its memory efficiency); a prompt's first token takes the larger of its multiply-adds over the FP16
tensor-core peak (times the compute efficiency) and one read of the weights. Each of the model's layers adds
KERNELS_PER_LAYER kernel launches of the profile's layer overhead.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeml.inputs.language_model import context_length
from edgeml.profiles import Profile
from edgeml.targets.base import BuildRefused, LanguageModelBuild, LanguageModelCandidate, OnDevice

BLOCK = 128                    # int4_awq's block of input channels per scale
KERNELS_PER_LAYER = 12         # kernel launches of one decoder layer in the engine, assumed (not measured)
KV_CAPACITY = 4096             # the engine's KV cache, at most: tokens of prompt and answer together
WEIGHTS = (".safetensors", ".safetensors.index.json")


def write_checkpoint(source: Path, folder: Path) -> None:
    """The source model in FP16 as a Hugging Face folder, with every other file of the source (tokenizer, chat
    template, generation config) copied as it is."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float16)
    model.save_pretrained(str(folder))
    _copy_the_rest(source, folder)


def round_int4(checkpoint: Path, folder: Path) -> None:
    """A copy of `checkpoint` whose decoder layers' linear weights are rounded as int4_awq stores them: symmetric,
    levels -8..7, one scale (max |w| / 7) per block of BLOCK input channels (a last, shorter block where BLOCK does
    not divide the width). The LM head and the embedding stay in FP16, as int4_awq leaves them."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float16)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
                module.weight.copy_(_rounded(module.weight.float()).half())
    model.save_pretrained(str(folder))
    _copy_the_rest(checkpoint, folder)


def _copy_the_rest(source: Path, folder: Path) -> None:
    """The files of `source` that save_pretrained did not write into `folder`, but its weights."""
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(WEIGHTS) and not (folder / file.name).exists():
            shutil.copy2(file, folder / file.name)


def _rounded(weight):
    import torch

    blocks = []
    for start in range(0, weight.shape[1], BLOCK):
        block = weight[:, start:start + BLOCK]
        scale = block.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 7
        blocks.append(torch.clamp(torch.round(block / scale), -8, 7) * scale)
    return torch.cat(blocks, dim=1)


@dataclass(frozen=True)
class Toolchain:
    """What builds the engine: the runtime's name, the GPUs it builds INT4 AWQ for, and its build_engine.sh."""
    runtime: str
    int4_capability: float          # the lowest compute capability it runs INT4 AWQ on
    script: Callable[[str, int, int], str]     # (quantization, input length, KV capacity) -> build_engine.sh
    least_capability: float = 0.0   # the lowest compute capability it builds for at all
    devices: str = ""               # the devices it builds for, when least_capability refuses one


def edge_llm_script(quantization: str, input_length: int, kv_capacity: int) -> str:
    """TensorRT Edge-LLM: ONNX exported on a host (after its quantization, for INT4), the engine built on the
    Jetson."""
    lines = [*_head("TensorRT Edge-LLM (github.com/NVIDIA/TensorRT-Edge-LLM)",
                    "on a host with TensorRT Edge-LLM's Python package: ONNX in onnx/",
                    "on the Jetson, with TensorRT Edge-LLM built there: the engine in engine/"),
             'if [ "$STEP" = host ] || [ "$STEP" = all ]; then']
    source = "checkpoint"
    if quantization != "fp16":
        lines += [f"  # {quantization} calibrates on an NVIDIA GPU",
                  f"  tensorrt-edgellm-quantize-llm --model_dir checkpoint --output_dir quantized "
                  f"--quantization {quantization}"]
        source = "quantized"
    return "\n".join(lines + [
        f"  tensorrt-edgellm-export-llm --model_dir {source} --output_dir onnx", "fi",
        'if [ "$STEP" = device ] || [ "$STEP" = all ]; then',
        f"  llm_build --onnxDir onnx --engineDir engine --maxBatchSize 1 --maxInputLen {input_length} "
        f"--maxKVCacheCapacity {kv_capacity}", "fi", ""])


def tensorrt_llm_script(quantization: str, input_length: int, kv_capacity: int) -> str:
    """TensorRT-LLM: its checkpoint made by ModelOpt (quantize.py of its examples) and the engine built, both on
    the GPU host."""
    qformat = "full_prec" if quantization == "fp16" else quantization
    awq = " --awq_block_size 128" if quantization == "int4_awq" else ""
    return "\n".join([
        *_head("TensorRT-LLM (github.com/NVIDIA/TensorRT-LLM)",
               "its checkpoint in trtllm-checkpoint/ (TENSORRT_LLM: a clone of the repository, for its examples)",
               "the engine in engine/"),
        'if [ "$STEP" = host ] || [ "$STEP" = all ]; then',
        f'  python "${{TENSORRT_LLM:?set TENSORRT_LLM to a TensorRT-LLM clone}}/examples/quantization/quantize.py" '
        f"--model_dir checkpoint --dtype float16 --qformat {qformat}{awq} --output_dir trtllm-checkpoint", "fi",
        'if [ "$STEP" = device ] || [ "$STEP" = all ]; then',
        f"  trtllm-build --checkpoint_dir trtllm-checkpoint --output_dir engine --gemm_plugin auto "
        f"--max_batch_size 1 --max_input_len {input_length} --max_seq_len {kv_capacity}", "fi", ""])


def _head(tool: str, host: str, device: str) -> list[str]:
    return ["#!/bin/sh", f"# {tool}: this folder's checkpoint to an engine.",
            f"# ./build_engine.sh host     {host}", f"# ./build_engine.sh device   {device}",
            "# (no argument: both, on a machine that has both)",
            "set -e", 'cd "$(dirname "$0")"', 'STEP="${1:-all}"']


EDGE_LLM = Toolchain("tensorrt-edgellm", 8.7, edge_llm_script, least_capability=8.7,
                     devices="Jetson Orin and Thor")
TENSORRT_LLM = Toolchain("tensorrt-llm", 8.0, tensorrt_llm_script)


def unsuited(toolchain: Toolchain, quantization: str, profile: Profile) -> str | None:
    """Why the profile's GPU gets no such engine, or None."""
    capability = float((profile.gpu or {}).get("compute_capability") or 0)
    if capability < toolchain.least_capability:
        return (f"{toolchain.runtime} builds for {toolchain.devices} (compute capability "
                f"{toolchain.least_capability:g}+); {profile.display_name} has {capability:g}")
    if quantization == "int4_awq" and capability < toolchain.int4_capability:
        return (f"{toolchain.runtime} runs INT4 AWQ on compute capability {toolchain.int4_capability:g}+; "
                f"{profile.display_name} has {capability:g}")
    return None


def _build(toolchain: Toolchain, quantization: str):
    def build(source: Path, out: Path, context: LanguageModelBuild) -> None:
        capacity = kv_capacity(context.config)
        out.mkdir(parents=True)
        write_checkpoint(source, out / "checkpoint")
        script = out / "build_engine.sh"
        script.write_text(toolchain.script(quantization, capacity // 2, capacity))
        script.chmod(0o755)
    return build


def _judged_fp16(out: Path, judged: Path) -> Path:
    return out / "checkpoint"


def _judged_int4(out: Path, judged: Path) -> Path:
    round_int4(out / "checkpoint", judged)
    return judged


def weight_bytes(shapes: dict[str, tuple[int, ...]], int4: bool) -> dict:
    """Bytes of weights in the engine ("total") and read for one decoded token ("per_token"): every weight but the
    embedding table, of which one row is read (unless the LM head is tied to it, then all of it, as the head).
    In INT4, the decoder layers' 2-D weights take half a byte each and an FP16 scale per BLOCK; the rest is FP16."""
    total = per_token = 0
    tied = "lm_head.weight" not in shapes
    for name, shape in shapes.items():
        count = math.prod(shape)
        quantized = int4 and len(shape) == 2 and ".layers." in f".{name}"
        size = count // 2 + 2 * -(-shape[1] // BLOCK) * shape[0] if quantized else 2 * count
        total += size
        per_token += size if not _embedding(name) or tied else 2 * shape[-1]
    return {"total": total, "per_token": per_token}


def kv_capacity(config: dict) -> int:
    """The tokens (prompt and answer) the engine's KV cache holds: the model's context, at most KV_CAPACITY."""
    return min(context_length(config), KV_CAPACITY)


def kv_bytes_per_token(config: dict) -> int:
    """FP16 K and V of one token in every layer."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * head_dim


def predict(shapes: dict[str, tuple[int, ...]], config: dict, profile: Profile, int4: bool,
            prompt_lengths: tuple[int, ...], new_tokens: int) -> dict:
    """Decode tokens/s and time to first token on the profile's device, and what they rest on; BuildRefused when the
    weights and the KV cache do not fit in the device's memory."""
    weights = weight_bytes(shapes, int4)
    kv = kv_bytes_per_token(config)
    capacity = kv_capacity(config)
    needed = weights["total"] + kv * capacity
    if needed > profile.memory_gb * 1e9:
        raise BuildRefused(f"needs {needed / 1e9:.2f} GB for its weights and a KV cache of {capacity} tokens; "
                           f"{profile.display_name} has {profile.memory_gb:g} GB")
    efficiency = profile.efficiency
    memory = profile.bandwidth() * efficiency.get("memory", 1.0)
    compute = (profile.peak("fp16") or profile.peak("fp32")) * efficiency.get("compute", 1.0)
    overhead = config["num_hidden_layers"] * KERNELS_PER_LAYER * efficiency.get("layer_overhead_us", 0.0) / 1e6
    context = min(prompt_lengths) + new_tokens // 2          # the decode's average context
    step = (weights["per_token"] + kv * context) / memory + overhead
    macs = sum(math.prod(s) for n, s in shapes.items() if len(s) == 2 and not _embedding(n))
    if "lm_head.weight" not in shapes:              # tied: the embedding table is the LM head too
        macs += next(math.prod(s) for n, s in shapes.items() if _embedding(n))
    ttft = {str(n): 1e3 * (max(2 * macs * n / compute, weights["per_token"] / memory) + overhead)
            for n in prompt_lengths}
    return {"profile": profile.name, "device": profile.display_name, "decode_tokens_per_s": 1 / step,
            "context_tokens": capacity,
            "ttft_ms": ttft, "weight_bytes": weights["total"], "bytes_per_token": weights["per_token"] + kv * context,
            "memory_bytes_per_s": memory, "compute_ops_per_s": compute, "kernels_per_layer": KERNELS_PER_LAYER,
            "efficiency_basis": efficiency.get("basis", "unstated")}


def _embedding(name: str) -> bool:
    return "embed_tokens" in name or name.endswith("wte.weight")


def _candidates(toolchain: Toolchain, prefix: str, engine: str) -> tuple[LanguageModelCandidate, ...]:
    def candidate(precision: str, quantization: str, method: str) -> LanguageModelCandidate:
        int4 = quantization == "int4_awq"
        return LanguageModelCandidate(
            f"{prefix}-{precision}{'-awq' if int4 else ''}", "transformers", precision, _build(toolchain, quantization),
            method=f"{engine}, {method}", needs=("transformers",),
            on_device=OnDevice(toolchain.runtime, _judged_int4 if int4 else _judged_fp16,
                               lambda shapes, config, profile, lengths, new: predict(shapes, config, profile, int4,
                                                                                     lengths, new),
                               lambda profile: unsuited(toolchain, quantization, profile)))

    return (candidate("fp16", "fp16", "FP16 weights (judged here: the FP16 checkpoint in transformers)"),
            candidate("int4", "int4_awq", "INT4 AWQ weights in blocks of 128 (judged here: rounded to nearest, "
                                          "without AWQ's scaling, an estimate AWQ usually improves on)"))


TENSORRT_EDGE_LANGUAGE_MODELS = _candidates(EDGE_LLM, "tensorrt-edgellm", "TensorRT Edge-LLM engine")
TENSORRT_LLM_LANGUAGE_MODELS = _candidates(TENSORRT_LLM, "tensorrt-llm", "TensorRT-LLM engine")
