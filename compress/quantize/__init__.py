"""Post-training quantization and lower-precision conversion.

One contract, one file per quantizer backend (base.Quantizer: a `SUPPORTS` record, edgeml.compress.base.Supports, and
static INT8, `run`); `QUANTIZERS` is the one registry of them, by the name `--quantizer` gives:
- onnxruntime_backend (`ort`): onnxruntime.quantization: static QDQ INT8 (calibrated, per-channel weights),
  dynamic INT8 and 4-bit MatMul weights (MatMulNBits), for ONNX Runtime and TensorRT;
- openvino_backend (`openvino`): NNCF post-training INT8 quantization, its accuracy control and weight compression
  of the OpenVINO model;
- litert_backend (`litert`): ai-edge-quantizer's full-integer INT8 of a .tflite model (and its FP16 weights);
- inc_backend (`inc`): Intel Neural Compressor's PT2E static INT8 of the PyTorch model.
What derives from the registry: the `--quantizer` choices (edgeml.pipeline.recipe) and the `--calibration-method` ones
(`CALIBRATION_METHODS`). A new quantizer is its module here (SUPPORTS and `run`), its line in `QUANTIZERS`, the
candidates of a target that use it (edgeml.targets; they read its SUPPORTS) and its tests;
tests/compress/test_quantizer_registry.py checks each one against the runtimes, the targets, pyproject.toml and the
README.

Not quantizers: float16 (FP16 weights and compute for ONNX Runtime; BF16 needs no pass: OpenVINO runs the FP32 IR in
bf16 when its precision hint asks for it) and qat (quantization-aware distillation, then onnxruntime_backend).

INT8 weights depend on the CPU that runs them (`Int8Config.avoid_saturation`, from
edgeml.measure.cpu_features.int8_scheme): on x86 without VNNI/AMX, 8-bit products summed in pairs into 16 bits
(VPMADDUBSW) can saturate, so weights keep to 7 bits there (onnxruntime's reduce_range; NNCF's
OverflowFix.FIRST_LAYER); CPUs with VNNI, AMX or Arm use the full 8-bit range.
"""

from __future__ import annotations

from edgeml.compress.quantize import inc_backend, litert_backend, onnxruntime_backend, openvino_backend
from edgeml.compress.quantize.base import Calibration, Int8Config, Quantizer, WeightOnlyConfig, calibration

QUANTIZERS: dict[str, Quantizer] = {backend.SUPPORTS.name: backend for backend in (
    onnxruntime_backend,
    openvino_backend,
    litert_backend,
    inc_backend,
)}

CALIBRATION_METHODS: tuple[str, ...] = tuple(dict.fromkeys(
    method for backend in QUANTIZERS.values() for method in backend.SUPPORTS.calibration_methods))
"""What `Int8Config.calibration_method` (--calibration-method) may name: the methods the quantizers read."""

__all__ = ["CALIBRATION_METHODS", "QUANTIZERS", "Calibration", "Int8Config", "Quantizer", "WeightOnlyConfig",
           "calibration"]
