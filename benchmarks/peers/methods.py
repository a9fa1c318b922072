"""Every method of the benchmark: a way to run the model, and how long its tool took to make it.

The peers follow each tool's documented default recipe; `Method.call` says which call was used. The
ONNX-based peers all start from one FP32 export (`torch.onnx.export`, dynamo exporter, symbolic batch,
via `edgeml.inputs.export.export_onnx`); its time is the ONNX Runtime FP32 row's build time and is not counted
again in the others. edgeml's rows are whole `edgeml.optimize` calls with its build cache off (a cold
run), timed from the PyTorch model to the bundle, whose artifact is then loaded through
`edgeml.runtimes.BACKENDS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.peers.cases import Case
from edgeml.bundle.reference import REFERENCE
from edgeml.bundle.write import RUNNER
from edgeml.compress.distill import DistillConfig
from edgeml.measure.evaluate import compare, predict
from edgeml.report.record import Run
from edgeml.runtimes import BACKENDS
from edgeml.runtimes.base import Artifact, Runner
from edgeml.runtimes.onnxruntime import OrtRunner
from edgeml.runtimes.openvino import OpenVinoRunner
from edgeml.runtimes.pytorch import TorchRunner

DISTILL_SECONDS = 120      # bounds the pruned CNN's distillation
BATCH = 32                 # batch of the calibration, tuning and evaluation passes
# ONNX Runtime's MinMax calibrator keeps every intermediate tensor of every sample until it computes the ranges
# (about 10 MB a sample for EfficientNet-Lite0 at 96 px; its `max_intermediate_outputs` option drops the
# samples instead of merging their ranges), so its peer calibrates on at most this many samples: NNCF's default
# subset size, and edgeml's.
ORT_CALIBRATION_SAMPLES = 300


@dataclass
class Context:
    case: Case
    folder: Path                   # this method's own folder
    threads: int                   # the threads every method runs with
    onnx: Path                     # the FP32 ONNX export
    export_seconds: float          # how long the export took
    reference_calibration: list[np.ndarray]   # PyTorch FP32 outputs on the calibration data


@dataclass
class Built:
    runner: Runner
    precision: str                 # what it computes in
    size_bytes: int                # on disk
    build_seconds: float           # wall time the tool took to make it
    detail: str = ""
    run: Run | None = None         # edgeml's run record, for edgeml rows


@dataclass(frozen=True)
class Method:
    label: str
    tool: str                      # peer | edgeml
    call: str                      # the recipe, as called
    build: Callable[[Context], Built]
    models: tuple[str, ...] | None = None     # the case keys it applies to (None: all)


def _files_size(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def _torch_eager(ctx: Context) -> Built:
    module = ctx.case.source.callable
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return Built(TorchRunner(module, ctx.case.names, ctx.threads), "fp32", size, 0.0,
                 "state_dict size (parameters and buffers)")


def _ort_fp32(ctx: Context) -> Built:
    weights = ctx.onnx.with_name(ctx.onnx.name + ".data")      # the exporter keeps the weights beside the graph
    return Built(OrtRunner(ctx.onnx, ctx.threads), "fp32", _files_size([ctx.onnx, weights]), ctx.export_seconds)


def _reader(case: Case):
    """onnxruntime's CalibrationDataReader over the first ORT_CALIBRATION_SAMPLES calibration samples, one at a
    time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(range(min(len(case.calibration), ORT_CALIBRATION_SAMPLES)))

        def get_next(self):
            i = next(self.samples, None)
            return None if i is None else case.calibration.feeds(i, i + 1)
    return Reader()


def _ort_static(ctx: Context) -> Built:
    from onnxruntime.quantization import QuantFormat, quant_pre_process, quantize_static

    prepared, out = ctx.folder / "prepared.onnx", ctx.folder / "model.onnx"
    started = time.perf_counter()
    quant_pre_process(str(ctx.onnx), str(prepared))
    quantize_static(str(prepared), str(out), _reader(ctx.case), quant_format=QuantFormat.QDQ, per_channel=True)
    seconds = time.perf_counter() - started
    prepared.unlink()
    return Built(OrtRunner(out, ctx.threads), "int8", out.stat().st_size, seconds)


def _ort_dynamic(ctx: Context) -> Built:
    from onnxruntime.quantization import quant_pre_process, quantize_dynamic

    prepared, out = ctx.folder / "prepared.onnx", ctx.folder / "model.onnx"
    started = time.perf_counter()
    quant_pre_process(str(ctx.onnx), str(prepared))
    quantize_dynamic(str(prepared), str(out))
    seconds = time.perf_counter() - started
    prepared.unlink()
    return Built(OrtRunner(out, ctx.threads), "int8", out.stat().st_size, seconds)


def _openvino(ctx: Context, quantize: bool) -> Built:
    """convert_model + save_model (default: FP16 weights) [+ nncf.quantize], compiled with no hints
    (only the thread count); reports the precision OpenVINO infers in."""
    import openvino as ov

    xml = ctx.folder / "model.xml"
    started = time.perf_counter()
    model = ov.convert_model(str(ctx.onnx))
    if quantize:
        import nncf

        samples = [ctx.case.calibration.feeds(i, i + 1) for i in range(len(ctx.case.calibration))]
        model = nncf.quantize(model, nncf.Dataset(samples),
                              model_type=nncf.ModelType.TRANSFORMER if ctx.case.transformer else None)
    ov.save_model(model, str(xml))
    seconds = time.perf_counter() - started
    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    precision = {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}.get(hint.to_string(), hint.to_string())
    return Built(OpenVinoRunner(xml, ctx.threads, {}), f"int8+{precision}" if quantize else precision,
                 _files_size([xml, xml.with_suffix(".bin")]), seconds,
                 f"OpenVINO infers in {hint.to_string()} by default on this CPU")


def _inc(ctx: Context) -> Built:
    """INC's PT2E export, then autotune over INC's default static INT8 tuning set, judged on the calibration
    data within the budget (INC's tolerable_loss is relative to the FP32 score)."""
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune

    case, threads = ctx.case, torch.get_num_threads()
    example = tuple(torch.from_numpy(case.calibration.inputs[n][:2]) for n in case.names)
    reference = compare(ctx.reference_calibration, ctx.reference_calibration, case.calibration.labels)[case.metric]

    def quality(model) -> float:
        outputs = predict(TorchRunner(model, case.names, threads), case.calibration, BATCH)
        return compare(outputs, ctx.reference_calibration, case.calibration.labels)[case.metric]

    def calibrate(model) -> None:
        predict(TorchRunner(model, case.names, threads), case.calibration, BATCH)

    started = time.perf_counter()
    batch = torch.export.Dim("batch")
    graph = export(case.source.callable, example, dynamic_shapes=tuple({0: batch} for _ in example))
    if graph is None:
        raise RuntimeError("neural_compressor.torch.export.export could not export the model")
    tuning = TuningConfig(config_set=[StaticQuantConfig.get_config_set_for_tuning()],
                          tolerable_loss=case.max_drop / reference)
    model = autotune(graph, tuning, eval_fn=quality, run_fn=calibrate, example_inputs=example)
    seconds = time.perf_counter() - started
    saved = ctx.folder / "saved_results"
    model.save(example, str(saved))            # INC's own format: the .pt2 program and its qconfig.json
    return Built(TorchRunner(model, case.names, ctx.threads), "int8", _files_size(saved.iterdir()), seconds,
                 "size: INC's `q_model.save` (.pt2 + qconfig.json)")


def _edgeml(target: str, **settings) -> Callable[[Context], Built]:
    def build(ctx: Context) -> Built:
        from rich.console import Console

        import edgeml
        from edgeml.progress import Reporter

        case = ctx.case
        files = {k: v for k, v in case.files.items() if k != "train_data" or "prune" in settings}
        started = time.perf_counter()
        run = edgeml.optimize(case.model, weights=case.weights, input_shapes=case.input_shapes, target=target,
                              threads=ctx.threads, max_accuracy_drop=case.max_drop, metric=case.metric, out=ctx.folder,
                              force=True, cache=False,
                              reporter=Reporter(Console()), **files, **settings)
        seconds = time.perf_counter() - started
        bundle = ctx.folder / "bundle"
        manifest = json.loads((bundle / "manifest.json").read_text())
        artifact = Artifact(manifest["backend"]["name"], manifest["precision"], bundle, manifest["entry"],
                            manifest["runtime_config"])
        model_files = [f["size"] for f in manifest["files"] if f["path"] not in (REFERENCE, RUNNER)]
        return Built(BACKENDS[artifact.backend].open(artifact, ctx.threads), artifact.precision, sum(model_files),
                     seconds, f"selected {manifest['candidate']}", run)
    return build


PEERS = (
    Method("PyTorch eager FP32", "peer", "`model(*inputs)` under `torch.inference_mode()`", _torch_eager),
    Method("ONNX Runtime FP32", "peer", "`torch.onnx.export(dynamo=True)`, then `onnxruntime.InferenceSession`",
           _ort_fp32),
    Method("ONNX Runtime static INT8", "peer",
           "`quant_pre_process` + `quantize_static(quant_format=QDQ, per_channel=True)` (MinMax calibration, "
           "QInt8 weights and activations: the defaults), calibrated on the first "
           f"{ORT_CALIBRATION_SAMPLES} calibration samples (NNCF's default subset size)", _ort_static),
    Method("ONNX Runtime dynamic INT8", "peer", "`quant_pre_process` + `quantize_dynamic` (defaults)", _ort_dynamic),
    Method("NNCF INT8 (OpenVINO)", "peer",
           "`ov.convert_model` + `nncf.quantize(model, nncf.Dataset(calibration))` (defaults; "
           "`model_type=nncf.ModelType.TRANSFORMER` for MiniLM) + `ov.save_model`, compiled with no hints",
           lambda ctx: _openvino(ctx, quantize=True)),
    Method("OpenVINO default", "peer", "`ov.convert_model` + `ov.save_model` (defaults), `core.compile_model(xml, "
           "\"CPU\")` with no precision hint", lambda ctx: _openvino(ctx, quantize=False)),
    Method("INC autotune INT8 (PyTorch eager)", "peer",
           "`neural_compressor.torch.export.export` + `autotune(model, TuningConfig(config_set=[StaticQuantConfig."
           "get_config_set_for_tuning()], tolerable_loss=budget), eval_fn, run_fn)`, run in PyTorch eager", _inc),
)
EDGEML = (
    Method("edgeml cpu", "edgeml",
           "`edgeml.optimize(model, target=\"cpu\", max_accuracy_drop=budget, metric=metric)`", _edgeml("cpu")),
    Method("edgeml mobile", "edgeml",
           "`edgeml.optimize(model, target=\"mobile\", max_accuracy_drop=budget, metric=metric)`, "
           "LiteRT measured on this CPU", _edgeml("mobile")),
    Method("edgeml cpu, prune 50 % + distill", "edgeml",
           "`edgeml.optimize(model, target=\"cpu\", prune=0.5, train_data=..., max_accuracy_drop=budget, "
           "metric=metric, "
           f"distill_config=DistillConfig(max_seconds={DISTILL_SECONDS}))`: distillation is on by default when "
           "pruning with training data; its default 30 epochs (early stopping, patience 5) are cut to the epochs that "
           f"start within {DISTILL_SECONDS} s to keep the run short",
           _edgeml("cpu", prune=0.5, distill_config=DistillConfig(max_seconds=DISTILL_SECONDS)), models=("cnn",)),
)
METHODS = PEERS + EDGEML
