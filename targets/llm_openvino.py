"""Language-model builds for OpenVINO GenAI: the Hugging Face model traced by `openvino.convert_model`, its KV cache
turned into model state (the stateful IR that LLMPipeline reads, as optimum-intel writes it), its weights compressed
by NNCF: INT8, INT4, and INT4 by AWQ with scale estimation on calibration text.

The export is edgeml's own, not optimum-intel's (which pins older transformers): the model is wrapped as a function
of flat tensors (ids, mask, positions, past keys and values) -> (logits, present keys and values), traced, and its
past/present pairs become variables read and assigned inside the model, with a `beam_idx` input that reorders them.
A model it cannot take (a cache that is not one plain key/value pair per layer, a trace OpenVINO cannot convert, an
IR that disagrees with transformers) is refused with one line; the exporter's own output goes to the build's log.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeml.captured_output import logged
from edgeml.runtimes.openvino_genai import device_properties, prefill_inputs
from edgeml.targets.base import BuildRefused, LanguageModelBuild, LanguageModelCandidate
from edgeml.targets.build_log import refusing

RUNTIME = "openvino-genai"
CALIBRATION_SAMPLES = 32          # sequences for AWQ and scale estimation
CALIBRATION_TOKENS = 256          # tokens in each
EXAMPLE = {"batch": 2, "past": 5, "new": 3}     # the traced shapes: distinct, so that no size is mistaken for another
PARITY = 1e-3                     # the largest |logit difference| allowed against transformers, relative to the range


def build_int8(source: Path, out: Path, context: LanguageModelBuild) -> None:
    _build(source, out, context, lambda model: _compress(model, "INT8_ASYM"))


def build_int4(source: Path, out: Path, context: LanguageModelBuild) -> None:
    _build(source, out, context, lambda model: _compress(model, "INT4_ASYM", group_size=group_size(context.config)))


def build_int4_awq(source: Path, out: Path, context: LanguageModelBuild) -> None:
    def compress(model):
        dataset = calibration_inputs(source, context)
        return _compress(model, "INT4_ASYM", group_size=group_size(context.config), dataset=dataset, awq=True,
                         scale_estimation=True, subset_size=len(dataset))
    _build(source, out, context, compress)


def group_size(config: dict) -> int:
    """The largest INT4 block (128, 64 or 32 weights) that divides the hidden size, else -1: one scale per output
    channel. Other widths that a block does not divide (an MLP's) get NNCF's adjusted block."""
    hidden = config.get("text_config", config)["hidden_size"]
    return next((size for size in (128, 64, 32) if hidden % size == 0), -1)


def calibration_inputs(source: Path, context: LanguageModelBuild) -> list[dict[str, np.ndarray]]:
    """Up to CALIBRATION_SAMPLES sequences of CALIBRATION_TOKENS tokens of the calibration text, tokenized by the
    source's tokenizer, spread evenly over it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    windows = []
    for document in context.calibration.documents:
        ids = tokenizer(document)["input_ids"]
        windows += [ids[i:i + CALIBRATION_TOKENS] for i in range(0, len(ids), CALIBRATION_TOKENS)]
    windows = [w for w in windows if len(w) >= 16] or windows
    if not windows:
        raise BuildRefused("openvino: the calibration text has no tokens")
    picked = np.unique(np.linspace(0, len(windows) - 1, CALIBRATION_SAMPLES).round().astype(int))
    return [prefill_inputs(windows[i]) for i in picked]


def _build(source: Path, out: Path, context: LanguageModelBuild, compress: Callable) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with logged(context.log) as log:
        model = refusing("openvino: export", log, lambda: export(source, context.threads))
        model = refusing("openvino: NNCF weight compression", log, lambda: compress(model))
        refusing("openvino: tokenizer conversion", log, lambda: save_tokenizers(source, out))
    save(model, source, out)


def export(source: Path, threads: int = 1):
    """The stateful openvino.Model of the Hugging Face causal LM in `source`, checked against transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, attn_implementation="sdpa").eval()
    ov_model = _traced(model)
    make_stateful(ov_model)
    check_parity(ov_model, model)
    return ov_model


def _flat(model):
    """The causal LM as a function of flat tensors, the signature OpenVINO traces: (input_ids, attention_mask,
    position_ids, key 0, value 0, key 1, ...) -> (logits, present key 0, present value 0, ...)."""
    import torch
    from transformers import DynamicCache

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for layer, key, value in zip(cache.layers, past[0::2], past[1::2]):
                # filled as it is, not concatenated to an empty tensor (which OpenVINO cannot convert)
                layer.lazy_initialization(key, value)
                layer.keys, layer.values = key, value
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True)
            return (out.logits, *[t for layer in cache.layers for t in (layer.keys, layer.values)])

    return Flat()


def _plain_cache(model) -> list:
    """The example past keys and values: one [batch, heads, past, head size] pair per layer, from running the model.
    A cache of another shape (sliding windows, recurrent states) is refused."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        kinds = sorted({type(layer).__name__ for layer in cache.layers} - {"DynamicLayer"})
        raise BuildRefused(f"openvino: the exporter takes a plain key/value cache, not {', '.join(kinds)}")
    ids = torch.ones((EXAMPLE["batch"], EXAMPLE["past"]), dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=ids, cache=cache, use_cache=True)
    return [t.clone() for layer in cache.layers for t in (layer.keys, layer.values)]


def _traced(model):
    import openvino as ov
    import torch

    past = _plain_cache(model)
    batch, length, new = EXAMPLE["batch"], EXAMPLE["past"], EXAMPLE["new"]
    example = (torch.ones((batch, new), dtype=torch.long), torch.ones((batch, length + new), dtype=torch.long),
               torch.arange(length, length + new).expand(batch, new), *past)
    shapes = [([-1, -1], ov.Type.i64)] * 3 + [([-1, t.shape[1], -1, t.shape[3]], ov.Type.f32) for t in past]
    with torch.no_grad():
        ov_model = ov.convert_model(_flat(model), example_input=example,
                                    input=[(ov.PartialShape(s), t) for s, t in shapes])
    layers = len(past) // 2
    names = ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    for port, name in zip(ov_model.inputs, names):
        port.get_tensor().set_names({name})
    outputs = ["logits"] + [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    for port, name in zip(ov_model.outputs, outputs):
        port.get_tensor().set_names({name})
    return ov_model


def make_stateful(ov_model) -> None:
    """Hide the past/present pairs in the model as variables (ReadValue/Assign), initialised to an empty cache, and
    add the `beam_idx` input that gathers them along the batch before each step (LLMPipeline feeds it)."""
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    past = [p for p in ov_model.inputs if p.get_any_name().startswith("past_key_values.")]
    batch = ov_model.input("input_ids").get_partial_shape()[0]
    beam_idx = opset13.parameter(ov.PartialShape([batch]), ov.Type.i32, name="beam_idx")
    beam_idx.output(0).get_tensor().set_names({"beam_idx"})
    ov_model.add_parameters([beam_idx])
    for port in past:
        consumers = port.get_target_inputs()
        gather = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gather.output(0))
    ov_model.validate_nodes_and_infer_types()
    pairs = {p.get_any_name(): p.get_any_name().replace("past_key_values.", "present.") for p in past}
    apply_make_stateful_transformation(ov_model, pairs)
    _empty_initial_state(ov_model)


def _empty_initial_state(ov_model) -> None:
    """Start every variable as zeros of [batch of input_ids, heads, 0, head size]: an empty cache."""
    from openvino import opset13

    ids_shape = opset13.shape_of(ov_model.input("input_ids"), output_type="i64")
    batch = opset13.gather(ids_shape, opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() == "ReadValue":
            dims = [batch if i == 0 else opset13.constant(np.array([d.get_min_length()], dtype=np.int64))
                    for i, d in enumerate(op.get_output_partial_shape(0))]
            zeros = opset13.broadcast(opset13.constant(0.0, dtype=op.get_output_element_type(0)),
                                      opset13.concat(dims, axis=0))
            op.set_arguments([zeros])
    ov_model.validate_nodes_and_infer_types()


def check_parity(ov_model, model) -> None:
    """Refuse an IR whose logits disagree with transformers on a prefill of 6 tokens followed by one decode step."""
    import openvino as ov
    import torch

    ids = [1, 5, 9, 2, 7, 3, 4]
    with torch.inference_mode():
        expected = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    request = ov.Core().compile_model(ov_model, "CPU", device_properties(1)).create_infer_request()
    request.reset_state()
    request.infer(prefill_inputs(ids[:6]))
    prefill = np.array(request.get_tensor("logits").data[0])
    request.infer({"input_ids": np.array([ids[6:]], dtype=np.int64), "attention_mask": np.ones((1, 7), np.int64),
                   "position_ids": np.array([[6]], dtype=np.int64), "beam_idx": np.zeros(1, np.int32)})
    got = np.concatenate([prefill, np.array(request.get_tensor("logits").data[0])])
    error = float(np.abs(got - expected).max() / max(np.ptp(expected), 1e-6))
    if not error <= PARITY:
        raise BuildRefused(f"openvino: the exported model disagrees with transformers (relative error {error:.2g})")


def _compress(model, mode: str, **options):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    if "dataset" in options:
        options["dataset"] = nncf.Dataset(options["dataset"])
    if mode.startswith("INT4"):
        options["advanced_parameters"] = AdvancedCompressionParameters(
            group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
    return nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode), **options)


def save_tokenizers(source: Path, out: Path) -> None:
    """openvino_tokenizer.xml and openvino_detokenizer.xml, converted from the source's tokenizer."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    tokenizer, detokenizer = convert_tokenizer(AutoTokenizer.from_pretrained(str(source)), with_detokenizer=True)
    ov.save_model(tokenizer, str(out / "openvino_tokenizer.xml"))
    ov.save_model(detokenizer, str(out / "openvino_detokenizer.xml"))


def save(model, source: Path, out: Path) -> None:
    """openvino_model.xml/.bin (float weights kept in f32) and the source's config.json and generation_config.json."""
    import openvino as ov

    ov.save_model(model, str(out / "openvino_model.xml"), compress_to_fp16=False)
    for name in ("config.json", "generation_config.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def _candidate(name: str, precision: str, build: Callable, method: str, data_aware: bool = False):
    return LanguageModelCandidate(name, RUNTIME, precision, build, method=method,
                                  needs=("nncf", "openvino_tokenizers", "transformers"), data_aware=data_aware)


OPENVINO_LANGUAGE_MODELS = (
    _candidate("openvino-genai-int8", "int8", build_int8, "NNCF INT8 weights (asymmetric, per channel)"),
    _candidate("openvino-genai-int4", "int4", build_int4,
               "NNCF INT4 weights (asymmetric, blocks of 128/64/32), embeddings and LM head in INT8"),
    _candidate("openvino-genai-int4-awq", "int4", build_int4_awq,
               "NNCF INT4 weights by AWQ and scale estimation on calibration text, embeddings and LM head in INT8",
               data_aware=True),
)
