"""Static INT8 quantization of a PyTorch module with Intel Neural Compressor 3.x (PT2E).

INC exports the module to an ATen graph, inserts observers with torchao's X86 scheme (uint8 per-tensor
activations, int8 symmetric per-channel weights), calibrates them and converts them into quantize/dequantize
pairs around the float ops. In PyTorch eager those pairs run as reference ops (slower than FP32): only
torch.compile fuses them into INT8 kernels.

Without IPEX, INC 3.x quantizes only an exported graph, hence `neural_compressor.torch.export.export`
before `prepare`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch

from edgeml.compress.base import Supports
from edgeml.compress.quantize.base import Int8Config
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import quality_metric

SUPPORTS = Supports(name="inc", input="torch", runtimes=("torch",), precisions=("int8",),
                    modules=("neural_compressor",), extra="edgeml[inc]", labels="optional")

BATCH = 32
# torchao reports its missing CUDA extensions and torch a deprecated Enum registration when INC loads them.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def run(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], calibration: Dataset,
        config: Int8Config = Int8Config(), max_drop: float | None = None) -> torch.fx.GraphModule:
    """Quantize `module`; returns the converted graph (it takes the inputs in `calibration`'s order).

    With labels and `max_drop`, INC's autotune tries the default configuration, then histogram (KL)
    activation ranges, and keeps the first whose accuracy on the calibration data is within `max_drop`
    (absolute) of FP32, or else the most accurate.
    """
    with _quiet():
        from neural_compressor.torch import quantization as inc
        from neural_compressor.torch.export import export

        batch = torch.export.Dim("batch")
        graph = export(module, example_inputs, dynamic_shapes=tuple({0: batch} for _ in example_inputs))
        _use_module_types(graph)
        samples = min(len(calibration), config.max_calibration_samples)

        def calibrate(model) -> None:
            _outputs(model, calibration, samples)

        def accuracy(model) -> float:
            return _accuracy(_outputs(model, calibration, len(calibration)), calibration.labels)

        reference = _outputs(graph, calibration, len(calibration))
        if max_drop is None or quality_metric(reference, calibration.labels) != "accuracy":
            prepared = inc.prepare(graph, inc.get_default_static_config())
            calibrate(prepared)
            return inc.convert(prepared)
        baseline = _accuracy(reference, calibration.labels)
        configs = [inc.get_default_static_config(), inc.INT8StaticQuantConfig(act_algo="kl")]
        # INC's loss is relative to the FP32 score; with max_trials it returns the best config when none passes.
        tuning = inc.TuningConfig(config_set=configs, tolerable_loss=max_drop / max(baseline, 1e-9),
                                  max_trials=len(configs))
        return inc.autotune(graph, tuning, eval_fn=accuracy, run_fn=calibrate)


def _accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    return float(np.mean(outputs[0].argmax(1) == labels))


def _outputs(model, data: Dataset, count: int) -> list[np.ndarray]:
    """The model's outputs on the first `count` samples, run in batches of BATCH."""
    parts = []
    with torch.no_grad():
        for start in range(0, count, BATCH):
            feeds = data.feeds(start, min(start + BATCH, count))
            out = model(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
            parts.append([o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])])
    return [np.concatenate(column) for column in zip(*parts)]


def _use_module_types(graph: torch.fx.GraphModule) -> None:
    """Let the quantizer see which nn module each op came from.

    torchao finds conv/linear patterns by module type. Re-tracing an already exported graph (a .pt2 model)
    records the ATen op as each node's source instead; without that record torch falls back to the
    nn_module_stack the graph kept.
    """
    for node in graph.graph.nodes:
        stack = node.meta.get("source_fn_stack")
        if stack and isinstance(stack[-1][1], torch._ops.OpOverload):
            del node.meta["source_fn_stack"]


@contextlib.contextmanager
def _quiet():
    """INC, torchao and torch warnings and INC's progress log off the console (edgeml reports on it)."""
    from neural_compressor.common.utils.logger import Logger

    Logger().get_logger().setLevel(logging.ERROR)    # the first Logger() sets INC's level; set it after
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
