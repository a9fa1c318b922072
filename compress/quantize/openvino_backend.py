"""Quantization of an OpenVINO model with NNCF.

- `run`: INT8 post-training quantization of weights and activations, calibrated; with
  `Int8Config.avoid_saturation` (x86 CPUs without VNNI), NNCF's overflow fix on the first layer;
- `run_weight_only`: INT8 or INT4 weights of MatMuls (and embeddings), activations left in float.

`Int8Config.exclude` is not honoured here: it names ONNX nodes, and OpenVINO's ONNX frontend does not
keep those names on the ops that compute (the Convolution or MatMul of a Conv/Gemm with a bias is
'<name>/WithoutBiases', a ConvTranspose becomes 'ConvolutionBackpropData_<n>', a MatMul that yields a
model output takes the output's name).
"""

from __future__ import annotations

import contextlib
import io
import logging

from edgeml.compress.quantize import Int8Config, WeightOnlyConfig
from edgeml.inputs.data import Dataset


def run(model, calibration: Dataset, config: Int8Config = Int8Config(), transformer: bool = False):
    """Quantize an openvino.Model; returns the quantized openvino.Model.

    `transformer` selects NNCF's transformer scheme (model_type=TRANSFORMER): SmoothQuant first, and
    the patterns it keeps in float (Add, LayerNorm parts, the attention scale) for accuracy.
    `config.avoid_saturation` applies NNCF's overflow fix to the first convolutions (half the 8-bit
    range for their weights), which NNCF recommends for AVX2/AVX-512 CPUs without VNNI; otherwise every
    weight uses the full 8-bit range.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.ERROR)
    samples = [calibration.feeds(i, i + 1) for i in range(len(calibration))]
    # NNCF draws its own progress bar on stdout, where edgeml prints its report.
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(model, nncf.Dataset(samples),
                             subset_size=min(len(samples), config.max_calibration_samples),
                             model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                             advanced_parameters=AdvancedQuantizationParameters(
                                 overflow_fix=OverflowFix.FIRST_LAYER if config.avoid_saturation
                                 else OverflowFix.DISABLE))


def run_weight_only(model, config: WeightOnlyConfig = WeightOnlyConfig()):
    """Compress the weights of an openvino.Model; returns the compressed openvino.Model.

    8 bits: asymmetric, one scale per output channel (NNCF's default). 4 bits: symmetric, one scale per
    `config.group_size` weights; a layer whose input size is not a multiple of it gets the largest power
    of two that divides it (at least 32), and NNCF keeps the embeddings and the last layer in 8 bits.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        if config.bits == 8:
            return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        return nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=config.group_size,
            advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST))
