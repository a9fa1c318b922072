"""Language-model builds for ExecuTorch with XNNPACK, the runtime Android and iOS apps embed: the Hugging Face model
with a static KV cache, its weights quantized by torchao, exported by `torch.export` and lowered to one .pte program.

- 8da8w: INT8 weights, one scale per output channel, and INT8 activations quantized per token as they come;
- 8da4w: INT4 weights in blocks of 32 (a layer whose width 32 does not divide gets 8da8w), INT8 activations;
- fp32: the float model, for reference.

The quantized builds also store the embedding table in INT8, one scale per token. Attention is ExecuTorch's own
`llama::custom_sdpa` op, which reads the cache up to the current position (grouped query heads included) instead of
the whole cache through a mask. The program carries the constants ExecuTorch's LLM runner reads (get_max_seq_len,
get_eos_ids, ...), so that the .pte runs in an app as it was judged here.
"""

from __future__ import annotations

from pathlib import Path

from edgeml.captured_output import logged
from edgeml.runtimes.executorch_llm import PROGRAM, register_kernels, set_threads
from edgeml.targets.base import (
    BuildRefused,
    LanguageModelBuild,
    LanguageModelCandidate,
    cache_length,
    copy_tokenizer_files,
)
from edgeml.targets.build_log import refusing

RUNTIME = "executorch"
GROUP = 32                      # INT4 weights per scale
ATTENTION = "edgeml_executorch_sdpa"


def _build(scheme: str | None):
    def build(source: Path, out: Path, context: LanguageModelBuild) -> None:
        out.mkdir(parents=True, exist_ok=True)
        import torch

        with logged(context.log) as log, torch.no_grad():
            set_threads(context.threads)
            model = refusing("executorch: loading", log, lambda: _load(source))
            length = cache_length(context.config)
            _refuse_sliding_windows(model, length)
            if scheme:
                refusing(f"executorch: torchao {scheme} quantization", log, lambda: quantize(model, scheme))
            program = refusing("executorch: torch.export", log, lambda: export(model, length))
            buffer = refusing("executorch: XNNPACK lowering", log,
                              lambda: lower(program, _constants(model, length)))
        (out / PROGRAM).write_bytes(buffer)
        copy_tokenizer_files(source, out)
    return build


def _load(source: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            # only training reads it (no gradient for that row), and with it the quantized embedding is not fused
            # into ExecuTorch's embedding kernel: "Missing out variants: torchao::dequantize_affine"
            module.padding_idx = None
    _register_attention()
    model.set_attn_implementation(ATTENTION)
    model.generation_config.cache_implementation = "static"
    return model


def _refuse_sliding_windows(model, length: int) -> None:
    """BuildRefused for a model with layers that attend to a window shorter than the cache: custom_sdpa attends to
    every earlier token, so the program would compute another model past the window."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    _, settings = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    windows = sorted({s["sliding_window"] for s in settings if (s.get("sliding_window") or length) < length})
    if windows:
        raise BuildRefused(f"executorch: layers with sliding-window attention ({windows[0]} tokens) are not built "
                           f"yet (the program attends to all {length} cached tokens)")


def _register_attention() -> None:
    """Attention by `llama::custom_sdpa`, causal from the position of the first new token; no mask is built."""
    import torch
    from transformers import AttentionInterface, AttentionMaskInterface

    register_kernels()

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # key and value: the whole cache, in its layout (see _InPlaceCache); query: [batch, heads, new tokens, size]
        start = kwargs["cache_position"][0].item() if kwargs.get("cache_position") is not None \
            else kwargs["position_ids"][0][0].item()
        out = torch.ops.llama.custom_sdpa(query.transpose(1, 2), key, value, start, None, 0.0, True, scaling)
        return out, None

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, lambda *args, **kwargs: None)


def quantize(model, scheme: str) -> None:
    """torchao's dynamic-activation configs on the linear layers, INT8 per token on the embedding table."""
    import torch
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.utils import unwrap_tensor_subclass

    def linear(module, name, grouped: bool) -> bool:
        return isinstance(module, torch.nn.Linear) and (module.in_features % GROUP == 0) == grouped

    per_channel = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    if scheme == "8da4w":
        quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                               weight_granularity=PerGroup(GROUP)),
                  filter_fn=lambda m, n: linear(m, n, True))
        quantize_(model, per_channel, filter_fn=lambda m, n: linear(m, n, False))
    else:
        quantize_(model, per_channel, filter_fn=lambda m, n: isinstance(m, torch.nn.Linear))
    quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
              filter_fn=lambda m, n: isinstance(m, torch.nn.Embedding))
    unwrap_tensor_subclass(model)


def export(model, length: int):
    """torch.export of the model with a static cache of `length` tokens: (tokens [1, n], positions [n]) -> logits
    [1, n, vocab], n from 1 to length."""
    import torch
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    module = TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=length)
    _in_place_cache(module)
    tokens = torch.export.Dim("tokens", max=length)
    return torch.export.export(module, args=(), kwargs={"input_ids": torch.zeros((1, 3), dtype=torch.long),
                                                         "cache_position": torch.arange(3)},
                               dynamic_shapes={"input_ids": {1: tokens}, "cache_position": {0: tokens}}, strict=True)


def _in_place_cache(module) -> None:
    """The static cache of transformers' exportable module (`module.static_cache`) in ExecuTorch's layout,
    [batch, tokens, heads, size], written in place by `llama::update_cache`. Exported, a static layer's index_copy_
    copies its whole cache every step, and handing its [batch, heads, tokens, size] tensors to custom_sdpa copies
    them again; these layers do neither."""
    import torch
    from transformers.cache_utils import StaticLayer

    class InPlaceLayer(StaticLayer):
        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self.keys = self.keys.transpose(1, 2).contiguous()
            self.values = self.values.transpose(1, 2).contiguous()

        def update(self, key_states, value_states, *args, **kwargs):
            start = self.cumulative_length.item()
            torch.ops.llama.update_cache(key_states.transpose(1, 2), self.keys, start)
            torch.ops.llama.update_cache(value_states.transpose(1, 2), self.values, start)
            self.cumulative_length.add_(key_states.shape[-2])
            return self.keys, self.values

    for i, old in enumerate(module.static_cache.layers):
        layer = InPlaceLayer(old.max_cache_len)
        layer.lazy_initialization(old.keys[:, :, :1], old.values[:, :, :1])
        module.static_cache.layers[i] = layer
        module.register_buffer(f"key_cache_{i}", layer.keys, persistent=False)
        module.register_buffer(f"value_cache_{i}", layer.values, persistent=False)
        module.register_buffer(f"cumulative_length_{i}", layer.cumulative_length, persistent=False)


def lower(program, constants: dict) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=constants,
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False,
                                                                        _skip_dim_order=True))
    return edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True,
                                                      do_quant_fusion_and_const_prop=True)).buffer


def _constants(model, length: int) -> dict:
    """The metadata methods ExecuTorch's LLM runner reads from a program."""
    config = model.config.get_text_config()
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    constants = {"get_max_seq_len": length, "get_max_context_len": length, "get_vocab_size": config.vocab_size,
                 "use_kv_cache": True, "use_sdpa_with_kv_cache": True, "enable_dynamic_shape": True}
    if config.bos_token_id is not None:
        constants["get_bos_id"] = config.bos_token_id
    if eos:
        constants["get_eos_ids"] = eos
    return constants


def _candidate(name: str, precision: str, scheme: str | None, method: str) -> LanguageModelCandidate:
    return LanguageModelCandidate(name, RUNTIME, precision, _build(scheme), method=method,
                                  needs=("transformers", "torchao"))


EXECUTORCH_LANGUAGE_MODELS = (
    _candidate("executorch-xnnpack-fp32", "fp32", None, "torch.export + XNNPACK, FP32 weights"),
    _candidate("executorch-xnnpack-8da8w", "int8", "8da8w",
               "torchao INT8 weights per channel, INT8 activations per token (dynamic), XNNPACK"),
    _candidate("executorch-xnnpack-8da4w", "int4", "8da4w",
               "torchao INT4 weights in blocks of 32, INT8 activations per token (dynamic), XNNPACK"),
)
