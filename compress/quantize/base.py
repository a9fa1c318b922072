"""What every quantizer is: a module of this package with its capability record (`SUPPORTS`, an
edgeml.compress.base.Supports) and static INT8 (`run`), the `Quantizer` protocol; and the settings quantizers take
(`Int8Config`, `Calibration`, `WeightOnlyConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgeml.compress.base import Supports
    from edgeml.inputs.data import Dataset


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
    quantizer lists the ones it offers (Supports.calibrations); the accuracy-budget search tries them, in that order,
    when the default misses the budget."""
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


@runtime_checkable
class Quantizer(Protocol):
    """A quantizer backend: one module, `<tool>_backend.py`, registered in edgeml.compress.quantize.QUANTIZERS.

    Every quantizer has static INT8, weights and activations, the activations' ranges calibrated: `run`. Its model is
    in the form its tool reads (an ONNX file for onnxruntime, an openvino.Model, a .tflite flatbuffer, an
    nn.Module), so apart from the model first and `calibration` and `config`, its arguments are its own. What else it
    offers is a field of SUPPORTS and, where that is a function, the module's function of that name: `dynamic`
    (Supports.dynamic), `run_weight_only` (Supports.weight_only), `run_with_accuracy_control`
    (Supports.accuracy_control).
    """

    SUPPORTS: Supports

    def run(self, model: Any, *args: Any, calibration: Dataset, config: Int8Config, **kwargs: Any) -> Any: ...
