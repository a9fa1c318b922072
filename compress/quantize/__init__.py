"""Post-training INT8 quantization of an ONNX model with calibration data.

One algorithm, one file per backend:
- onnxruntime_backend: onnxruntime.quantization static QDQ, per-channel weights;
- openvino_backend: NNCF post-training quantization of the OpenVINO model.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTS = {
    "input": "onnx",
    "precisions": ("int8",),
    "backends": {"onnxruntime": ("onnxruntime",), "openvino": ("openvino", "nncf")},
}


@dataclass(frozen=True)
class Int8Config:
    per_channel: bool = True
    calibration_method: str = "minmax"     # minmax | entropy | percentile (onnxruntime)
    max_calibration_samples: int = 300     # NNCF's default subset size
    exclude: tuple[str, ...] = ()          # ONNX node names kept in float (mixed precision)
