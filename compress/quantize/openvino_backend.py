"""INT8 post-training quantization of an OpenVINO model with NNCF."""

from __future__ import annotations

import contextlib
import io
import logging

from edgeml.compress.quantize import Int8Config
from edgeml.data import Dataset


def run(model, calibration: Dataset, config: Int8Config = Int8Config()):
    """Quantize an openvino.Model; returns the quantized openvino.Model."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    samples = [calibration.feeds(i, i + 1) for i in range(len(calibration))]
    # NNCF draws its own progress bar on stdout, where edgeml prints its report.
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(model, nncf.Dataset(samples),
                             subset_size=min(len(samples), config.max_calibration_samples))
