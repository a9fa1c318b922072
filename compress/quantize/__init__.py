"""Post-training quantization and lower-precision conversion of an ONNX model.

One algorithm, one file per backend:
- onnxruntime_backend: onnxruntime.quantization: static QDQ INT8 (calibrated, per-channel weights),
  dynamic INT8 and 4-bit MatMul weights (MatMulNBits);
- openvino_backend: NNCF post-training INT8 quantization and weight compression of the OpenVINO model;
- float16: FP16 weights and compute for ONNX Runtime. (BF16 needs no pass: OpenVINO runs the FP32 IR in
  bf16 when its precision hint asks for it.)

INT8 weights depend on the CPU that runs them (`Int8Config.avoid_saturation`, from
edgeml.measure.cpu_features.int8_scheme): on x86 without VNNI/AMX, 8-bit products summed in pairs into 16 bits
(VPMADDUBSW) can saturate, so weights keep to 7 bits there (onnxruntime's reduce_range; NNCF's
OverflowFix.FIRST_LAYER); CPUs with VNNI, AMX or Arm use the full 8-bit range.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTS = {
    "input": "onnx",
    "precisions": ("int8", "int4", "fp16"),
    "backends": {"onnxruntime": ("onnxruntime",), "openvino": ("openvino", "nncf")},
    # pass: {backend: precisions it produces}
    "passes": {
        "static": {"onnxruntime": ("int8",), "openvino": ("int8",)},     # weights and activations, calibrated
        "dynamic": {"onnxruntime": ("int8",)},                           # activations quantized at run time
        "weight-only": {"onnxruntime": ("int4",), "openvino": ("int8", "int4")},   # MatMul weights only
        "float": {"onnxruntime": ("fp16",)},                             # casts, no calibration
    },
}


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")   # onnxruntime's calibrators


@dataclass(frozen=True)
class Int8Config:
    per_channel: bool = True
    calibration_method: str = "minmax"     # minmax | entropy | percentile (onnxruntime)
    max_calibration_samples: int = 300     # NNCF's default subset size
    # Layers kept in float (mixed precision): ONNX node names for onnxruntime, OpenVINO op names for openvino
    # (each backend's list of the layers it quantizes names them).
    exclude: tuple[str, ...] = ()
    # For CPUs whose int8 kernels can saturate (x86 without VNNI/AMX; edgeml.measure.cpu_features.int8_scheme):
    # 7-bit weights with onnxruntime (reduce_range), NNCF's overflow fix on the first layer with OpenVINO.
    avoid_saturation: bool = False


@dataclass(frozen=True)
class WeightOnlyConfig:
    bits: int = 4                          # 4 | 8
    group_size: int = 128                  # weights along K that share one scale (4 bits; 8 bits is per channel)
