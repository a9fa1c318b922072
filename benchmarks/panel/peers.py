"""The peers' recipes on one panel model, each run in its own process: `python -m benchmarks.panel.peers SPEC`.

SPEC is a JSON file (written by the panel runner) naming the model, the data, the metric, the budget and the
recipe; the result goes to `result.json` beside it. ONNX Runtime static INT8 and NNCF's default quantization
are benchmarks/peers/methods.py's own recipes; NNCF's accuracy-controlled quantization is added here with the
same budget and metric as edgeml, judged during the search on the calibration data (never on evaluation data).
Quality is measured against the input model run in ONNX Runtime FP32 on the evaluation data, and latency the way
edgeml measures its rows (edgeml.measure.latency, batch 1).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from edgeml.batching import batched
from edgeml.errors import first_line
from edgeml.inputs.data import Dataset, load_npz
from edgeml.measure.evaluate import compare, predict, quality_metric
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.runtimes.onnxruntime import OrtRunner

RECIPES = {
    "onnxruntime-fp32": "the input model in ONNX Runtime (`InferenceSession`, FP32): the speed-up baseline",
    "onnxruntime-static-int8": "`quant_pre_process` + `quantize_static(QDQ, per_channel=True)` (benchmarks/peers)",
    "nncf-int8": "`ov.convert_model` + `nncf.quantize` (defaults; transformer model type for transformers), "
                 "compiled with no hints (benchmarks/peers)",
    "nncf-int8-accuracy-control": "`nncf.quantize_with_accuracy_control(max_drop=budget, drop_type=ABSOLUTE)`, "
                                  "validated on the calibration data with the panel's metric",
}


def fixed_batch(model: Path) -> int | None:
    """The batch size a model's inputs fix (the smallest fixed first dimension), None when all are symbolic."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    sizes = [i.type.tensor_type.shape.dim[0].dim_value for i in graph.input
             if i.name not in weights and i.type.tensor_type.shape.dim]
    sizes = [s for s in sizes if s > 0]           # 0: symbolic; -1: written as fixed, meaning any
    return min(sizes) if sizes else None


def batch_of(model: Path) -> tuple[int, bool]:
    fixed = fixed_batch(model)
    return (fixed, True) if fixed else (16, False)


def _ort_accuracy_control(spec: dict, calibration: Dataset, folder: Path):
    import nncf
    import openvino as ov

    from edgeml.runtimes.openvino import OpenVinoRunner

    model_path, metric = Path(spec["model"]), spec["metric"]
    batch, fixed = batch_of(model_path)
    reference = predict(OrtRunner(model_path, spec["threads"]), calibration, batch, fixed)
    samples = [calibration.feeds(i, i + 1) for i in range(len(calibration))]

    def validate(compiled, items) -> float:
        # one sample per item, each output read as edgeml.measure.evaluate.predict reads it (a time-major
        # [T, 1, C] output is one sample's [T, 1, C], not T rows)
        run = batched(lambda feeds: [np.asarray(v) for v in compiled(feeds).to_tuple()], 1)
        outputs = [run(item) for item in items]
        columns = [np.concatenate(column) for column in zip(*outputs)]
        return compare(columns, reference, calibration.labels)[metric]

    started = time.perf_counter()
    model = ov.convert_model(str(model_path))
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(samples), nncf.Dataset(samples), validate, max_drop=spec["budget"],
        drop_type=nncf.DropType.ABSOLUTE,
        model_type=nncf.ModelType.TRANSFORMER if spec["transformer"] else None)
    xml = folder / "model.xml"
    ov.save_model(quantized, str(xml))
    seconds = time.perf_counter() - started
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return OpenVinoRunner(xml, spec["threads"], {}), seconds, size


def build(spec: dict, calibration: Dataset, evaluation: Dataset, folder: Path):
    """(runner, build seconds, size in bytes) of the spec's recipe."""
    from benchmarks.peers.cases import Case
    from benchmarks.peers.methods import Context, _openvino, _ort_static

    model = Path(spec["model"])
    recipe = spec["recipe"]
    if recipe == "onnxruntime-fp32":
        return OrtRunner(model, spec["threads"]), 0.0, model.stat().st_size
    if recipe == "nncf-int8-accuracy-control":
        return _ort_accuracy_control(spec, calibration, folder)
    case = Case(key=spec["key"], title=spec["key"], source=None, model=str(model), weights=None, input_shapes=[],
                calibration=calibration, evaluation=evaluation, files={}, metric=spec["metric"],
                max_drop=spec["budget"], budget="", data="", transformer=spec["transformer"])
    ctx = Context(case=case, folder=folder, threads=spec["threads"], onnx=model, export_seconds=0.0,
                  reference_calibration=[])
    built = _ort_static(ctx) if recipe == "onnxruntime-static-int8" else _openvino(ctx, quantize=True)
    return built.runner, built.build_seconds, built.size_bytes


def run(spec: dict) -> dict:
    folder = Path(spec["folder"])
    calibration, evaluation = load_npz(Path(spec["calib"])), load_npz(Path(spec["eval"]))
    model = Path(spec["model"])
    batch, fixed = batch_of(model)
    runner, seconds, size = build(spec, calibration, evaluation, folder)
    outputs = predict(runner, evaluation, batch, fixed)
    if spec["recipe"] == "onnxruntime-fp32":
        np.savez(folder / "reference.npz", *outputs)
        reference = outputs
    else:
        saved = np.load(spec["reference"])
        reference = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    metric = quality_metric(reference, evaluation.labels, spec["metric"])
    quality = compare(outputs, reference, evaluation.labels)[metric]
    reference_quality = compare(reference, reference, evaluation.labels)[metric]
    feeds = evaluation.feeds(0, batch if fixed else 1)
    latency = measure_latency(lambda: runner.run(feeds), MeasureConfig(seconds=spec["measure_seconds"]))
    return {"status": "ok", "metric": metric, "quality": quality, "reference_quality": reference_quality,
            "quality_drop": reference_quality - quality, "p50_ms": latency.p50_ms, "p50_ci95_ms": latency.p50_ci95_ms,
            "build_seconds": seconds, "size_bytes": size}


def main() -> None:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = run(spec)
    except Exception as error:                      # every failure of a peer's tool is a row of the panel
        frame = traceback.extract_tb(error.__traceback__)[-1]
        result = {"status": "failed", "reason": f"{type(error).__name__}: {first_line(error)} (at "
                                                 f"{Path(frame.filename).name}:{frame.lineno})"}
    (spec_path.parent / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
