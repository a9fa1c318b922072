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

from dataclasses import dataclass, replace

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
    # Quantizers of the quantized model reverted to float after quantizing (the accuracy-budget search's finest
    # fallback): for onnxruntime an activation's Q/DQ pair (named by its tensor) or a weight (by its initializer),
    # edgeml.compress.quantize.qdq_quantizers; for openvino an activation's FakeQuantize (fake_quantizers).
    reverted: tuple[str, ...] = ()
    # For CPUs whose int8 kernels can saturate (x86 without VNNI/AMX; edgeml.measure.cpu_features.int8_scheme):
    # 7-bit weights with onnxruntime (reduce_range), NNCF's overflow fix on the first layer with OpenVINO.
    avoid_saturation: bool = False
    # The alternatives the accuracy-budget search tries (`Calibration`); the defaults are each quantizer's own.
    # onnxruntime, min-max calibration: each activation's range is the mean over the calibration samples of each
    # sample's min and max (CalibMovingAverage), not the extremes over all of them: a rare outlier saturates instead
    # of widening every sample's steps. (NNCF already averages per-tensor activation ranges: MEAN_MINMAX.)
    mean_ranges: bool = False
    # NNCF: the range estimator for activations, a name of nncf's RangeEstimatorParametersSet (HISTOGRAM, MINMAX,
    # MEAN_QUANTILE ...); "" for NNCF's default.
    range_estimator: str = ""
    # NNCF: asymmetric activations (preset MIXED; NNCF's default for transformers, symmetric otherwise).
    asymmetric_activations: bool = False
    # NNCF: BiasCorrection (each layer's bias corrected for the error of the quantized layers before it) instead of
    # FastBiasCorrection (each layer's own error only); slower.
    full_bias_correction: bool = False
    # NNCF: ChannelAlignment first (cross-layer equalization of a convolution pair's channel ranges, for depthwise
    # CNNs whose per-channel ranges differ by orders of magnitude); off in NNCF's defaults.
    channel_alignment: bool = False


@dataclass(frozen=True)
class Calibration:
    """A named alternative to a quantizer's default ranges or corrections: the `Int8Config` fields it sets. Each
    quantizer lists the ones it offers (e.g. onnxruntime_backend.CALIBRATIONS); the accuracy-budget search tries
    them, in that order, when the default misses the budget."""
    name: str                                  # what the trial table and the row's method call it
    settings: tuple[tuple[str, object], ...]   # (Int8Config field, value)

    def applied(self, config: Int8Config) -> Int8Config:
        return replace(config, **dict(self.settings))


def calibration(name: str, **settings) -> Calibration:
    return Calibration(name, tuple(settings.items()))


@dataclass(frozen=True)
class WeightOnlyConfig:
    bits: int = 4                          # 4 | 8
    group_size: int = 128                  # weights along K that share one scale (4 bits; 8 bits is per channel)
