"""INT8 and FP16 passes for LiteRT (.tflite) models, with ai-edge-quantizer.

- `run`: full-integer INT8 (static): int8 symmetric weights (per channel), int8 per-tensor activations and
  model inputs/outputs, their ranges the min/max over the calibration samples run through the FP32 model.
  ai-edge-quantizer's default range update is a moving average over the samples, which clipped the digits
  CNN's logits (6x the output error), hence `min_max_update`. litert-torch's PT2E quantizer was the
  other route: on EfficientNet-Lite0 (upscaled Fashion-MNIST images) it kept FP32's top-1 label on 44%
  of them against 77% here, and its graph kept a transpose around every convolution (twice the latency).
- `float16_weights`: FP16 weights of the convolutions, fully connected layers and embeddings, each
  behind a DEQUANTIZE to FP32 (float casting).
"""

from __future__ import annotations

import os
import warnings

from edgeml.compress.base import Supports
from edgeml.compress.quantize.base import Int8Config
from edgeml.inputs.data import Dataset

# Its model is the .tflite litert-torch converts from the PyTorch model (edgeml.runtimes.litert.convert).
SUPPORTS = Supports(name="litert", input="torch", runtimes=("litert",), precisions=("int8",),
                    modules=("litert_torch", "ai_edge_quantizer"), extra="edgeml[tflite]")


def run(model: bytes, calibration: Dataset, input_names: list[str], config: Int8Config) -> bytes:
    """`model` (a .tflite flatbuffer with a batch of 1, inputs `input_names` in order) in INT8."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, qtyping, recipe_manager
    from ai_edge_quantizer.quantizer import Quantizer
    from ai_edge_quantizer.utils import qsv_utils

    recipe = recipe_manager.RecipeManager()
    recipe.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8,
                             weight_granularity=qtyping.QuantGranularity.CHANNELWISE if config.per_channel
                             else qtyping.QuantGranularity.TENSORWISE)
    # Calibration feeds the model's signature (litert-torch writes one), whose inputs have names of their own.
    interpreter = Interpreter(model_content=model)
    signature = next(iter(interpreter.get_signature_list()))
    order = [d["index"] for d in interpreter.get_input_details()]
    details = interpreter.get_signature_runner(signature).get_input_details()
    args = sorted(details, key=lambda arg: order.index(details[arg]["index"]))
    samples = [{arg: calibration.inputs[name][i:i + 1].astype(details[arg]["dtype"])
                for arg, name in zip(args, input_names)}
               for i in range(min(len(calibration), config.max_calibration_samples))]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")  # calibration reads them all
        ranges = calibrator.Calibrator(model, num_threads=os.cpu_count() or 1,
                                       qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate({signature: samples}, recipe)
        quantized = Quantizer(model, recipe.get_quantization_recipe()).quantize(
            ranges.get_model_qsvs(), enable_progress_bar=False, enable_progress_report=False)
    return bytes(quantized.quantized_model)


def float16_weights(model: bytes) -> bytes:
    """`model` (a .tflite flatbuffer) with FP16 weights."""
    from ai_edge_quantizer import algorithm_manager, qtyping
    from ai_edge_quantizer.quantizer import Quantizer

    quantizer = Quantizer(model)
    quantizer.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                     algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return bytes(quantizer.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
