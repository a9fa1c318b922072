"""edgeml's TensorRT INT8 QDQ model against NVIDIA Model Optimizer's (modelopt.onnx.quantization), judged alike.

TensorRT builds its INT8 engine on the device from a QDQ ONNX model. Here, with no GPU, both QDQ models are
judged as edgeml judges its own (Candidate.check_with): run with ONNX Runtime on the same held-out data, their
quality drop against the FP32 ONNX model with its paired-bootstrap 95% CI (edgeml.measure.uncertainty), and
which ops each quantizes (ops fed by a DequantizeLinear). Both calibrate on the same samples: the first
`Int8Config.max_calibration_samples` of the calibration set, as edgeml's build uses.

modelopt keeps the layers it leaves in float in FP32 here (high_precision_dtype="fp32"), so the comparison is of
quantization alone; on the device both run those layers in FP16 (edgeml's build_engine.sh passes --fp16).

    python -m benchmarks.tensorrt_peers [--quick]     # writes benchmarks/results/tensorrt-peers.md and .json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np

from edgeml.compress.quantize import Int8Config
from edgeml.inputs.data import Dataset
from edgeml.inputs.export import export_onnx
from edgeml.inputs.models import SourceModel
from edgeml.measure.evaluate import compare, sample_scores
from edgeml.measure.uncertainty import bootstrap_mean_ci, drop_uncertainty
from edgeml.targets import get_target
from edgeml.targets.base import BuildContext

RESULTS = Path(__file__).parent / "results"
WORK = Path("edgeml-out") / "tensorrt-peers"
BATCH = 64
QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class Case:
    key: str
    title: str
    source: SourceModel
    calibration: Dataset
    evaluation: Dataset
    metric: str          # accuracy (against labels) | agreement (top-1 with FP32)
    data: str


def digits_case(work: Path, quick: bool) -> Case:
    from edgeml.examples import digits_example, digits_source

    example = digits_example()
    return Case("digits", "digits CNN (edgeml example)", digits_source(example), example.validation, example.test,
                "accuracy", "sklearn digits; calibration: the 359-image validation split; evaluation: the 360-image "
                            "test split (accuracy against labels)")


def fashion_case(work: Path, quick: bool) -> Case:
    from benchmarks.peers.cases import FASHION_MNIST, _fashion_cnn

    work.mkdir(parents=True, exist_ok=True)
    evaluation = 1000 if quick else 10_000
    case = _fashion_cnn(work, {"calibration": 1000, "evaluation": evaluation, "train": 20_000, "epochs": 1},
                        FASHION_MNIST)
    return Case("fashion-cnn", "Fashion-MNIST CNN (benchmarks/fashion_mnist.py)", case.source, case.calibration,
                case.evaluation, "accuracy", case.data)


def lite0_case(work: Path, quick: bool) -> Case:
    from benchmarks.peers.cases import load_case

    case = load_case("efficientnet", work, quick)
    return Case("efficientnet-lite0", "EfficientNet-Lite0 on photo crops", case.source, case.calibration,
                case.evaluation, "agreement", case.data)


CASES = {"digits": digits_case, "fashion-cnn": fashion_case, "efficientnet-lite0": lite0_case}


def calibration_samples(case: Case) -> Dataset:
    count = min(len(case.calibration), Int8Config.max_calibration_samples)
    return case.calibration.subset(np.arange(count), case.calibration.source)


def build_edgeml(fp32: Path, out: Path, calibration: Dataset) -> Path:
    """edgeml's tensorrt-int8 candidate of the jetson target, built as `edgeml optimize --target jetson` does
    (default recipe: minmax calibration)."""
    candidate = next(c for c in get_target("jetson").candidates if c.name == "tensorrt-int8")
    artifact = candidate.build(fp32, out, BuildContext(calibration=calibration, int8=Int8Config()))
    return artifact.folder / artifact.entry


def build_modelopt(fp32: Path, out: Path, calibration: Dataset, method: str) -> Path:
    """modelopt's INT8 PTQ of the FP32 ONNX model, calibrated on the CPU with `method` (entropy | max).

    Run in a fresh process: importing modelopt.onnx patches onnxruntime.quantization's classes, which would
    change every later onnxruntime quantization in this one (edgeml's build included)."""
    out.mkdir(parents=True, exist_ok=True)
    output = out / "model.onnx"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_modelopt_quantize, fp32, output, dict(calibration.inputs), method).result()
    return output


def _modelopt_quantize(fp32: Path, output: Path, inputs: dict[str, np.ndarray], method: str) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(str(fp32), quantize_mode="int8", calibration_data=inputs, calibration_method=method,
             calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=str(output), log_level="WARNING")


def predict(model: Path, data: Dataset) -> list[np.ndarray]:
    """Outputs of `model` with ONNX Runtime on the CPU (one thread), in batches of BATCH."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    batches = [session.run(None, data.feeds(i, min(i + BATCH, len(data)))) for i in range(0, len(data), BATCH)]
    return [np.concatenate(parts) for parts in zip(*batches)]


def qdq_counts(model: Path) -> dict:
    """Q/DQ nodes and the ops they quantize: each non-Q/DQ node with an input from a DequantizeLinear, by type."""
    import onnx

    graph = onnx.load(str(model)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops = Counter(n.op_type for n in graph.node if n.op_type not in QDQ and dequantized & set(n.input))
    compute = Counter(n.op_type for n in graph.node if n.op_type not in QDQ)
    return {"quantize_linear": sum(n.op_type == "QuantizeLinear" for n in graph.node),
            "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in graph.node),
            "quantized_ops": dict(sorted(ops.items())), "ops": dict(sorted(compute.items()))}


def judge(name: str, outputs: list[np.ndarray], model: Path, case: Case, reference: list[np.ndarray],
          seconds: float) -> dict:
    quality = compare(outputs, reference, case.evaluation.labels)
    value, base = quality[case.metric], compare(reference, reference, case.evaluation.labels)[case.metric]
    return {"method": name, "metric": case.metric, "value": value, "fp32": base, "drop": base - value,
            "kl": quality["kl"], "cosine": quality["cosine"],
            "uncertainty": drop_uncertainty(outputs, reference, case.evaluation.labels, case.metric),
            "build_seconds": round(seconds, 1), "qdq": qdq_counts(model)}


def gap(outputs: list[np.ndarray], edgeml: list[np.ndarray], case: Case, reference: list[np.ndarray]) -> dict:
    """edgeml's drop minus this method's (positive: edgeml loses more), with its paired-bootstrap 95% CI."""
    per_sample = (sample_scores(outputs, reference, case.evaluation.labels, case.metric)
                  - sample_scores(edgeml, reference, case.evaluation.labels, case.metric))
    return {"mean": float(per_sample.mean()), "ci95": list(bootstrap_mean_ci(per_sample))}


METHODS = {
    "edgeml tensorrt-int8": lambda fp32, out, cal: build_edgeml(fp32, out, cal),
    "modelopt int8 (entropy, its default)": lambda fp32, out, cal: build_modelopt(fp32, out, cal, "entropy"),
    "modelopt int8 (max)": lambda fp32, out, cal: build_modelopt(fp32, out, cal, "max"),
}


def run_case(case: Case, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(case.source, work / "fp32.onnx", case.calibration.feeds(0, 2)).path
    reference = predict(fp32, case.evaluation)
    calibration = calibration_samples(case)
    rows, edgeml = [], None
    for i, (name, build) in enumerate(METHODS.items()):
        print(f"[{case.key}] {name}", flush=True)
        start = time.perf_counter()
        model = build(fp32, work / f"method{i}", calibration)
        seconds = time.perf_counter() - start
        outputs = predict(model, case.evaluation)
        rows.append(judge(name, outputs, model, case, reference, seconds))
        if edgeml is None:
            edgeml = outputs
        else:
            rows[-1]["edgeml_minus_this"] = gap(outputs, edgeml, case, reference)
    return {"case": case.key, "title": case.title, "data": case.data, "calibration_samples": len(calibration),
            "evaluation_samples": len(case.evaluation), "fp32_ops": qdq_counts(fp32)["ops"], "rows": rows}


def verdict(result: dict) -> str:
    """edgeml against modelopt's best, by the paired 95% CI of the difference of their drops: less accurate only
    when the whole interval is above zero (a point estimate inside the noise decides nothing)."""
    edgeml, *peers = result["rows"]
    best = min(peers, key=lambda r: r["drop"])
    low, high = best["edgeml_minus_this"]["ci95"]
    if low > 0:
        words, sure = "less accurate than", "significant"
    elif high < 0:
        words, sure = "more accurate than", "significant"
    else:
        words, sure = "as accurate as", "the data cannot tell them apart"
    return (f"edgeml {words} modelopt's best ({best['method']}): drop {_pts(edgeml['drop'])} against "
            f"{_pts(best['drop'])}; difference 95% CI {_pts(low)} to {_pts(high)} ({sure})")


def _pts(value: float) -> str:
    return f"{value * 100:+.2f} pts"


def _ops(counts: dict) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# TensorRT INT8: edgeml's QDQ model against NVIDIA Model Optimizer's", "",
        f"Command: `{meta['command']}`. Measured {meta['date']} on {meta['machine']}; {meta['packages']}.", "",
        "Both QDQ models are run with ONNX Runtime (CPU, 1 thread), as edgeml checks its `tensorrt-int8` candidate "
        "here; the engine itself is built on the device. Drop: the FP32 ONNX model's metric minus the QDQ model's "
        "(points), with its paired-bootstrap 95% CI; worse/better: samples only the FP32 (resp. QDQ) model got "
        "right, or whose top-1 class changed (agreement). KL to FP32: mean KL divergence of the QDQ model's softmax "
        "from the FP32 model's, which sees changes too small to flip a top-1 class. Quantized ops: ops fed by a "
        "DequantizeLinear. "
        "edgeml's drop minus this: paired bootstrap over the samples, between the two QDQ models (positive: edgeml "
        "loses more). "
        "modelopt keeps unquantized layers in FP32 here (`high_precision_dtype=\"fp32\"`).", "",
    ]
    for result in results:
        lines += [f"## {result['title']}", "", f"Data: {result['data']}. Calibration: the first "
                  f"{result['calibration_samples']} calibration samples for every method. FP32 ops: "
                  f"{_ops(result['fp32_ops'])}.", "",
                  f"| method | {result['rows'][0]['metric']} (FP32 {result['rows'][0]['fp32'] * 100:.2f} %) | drop "
                  "(95% CI) | edgeml's drop minus this (95% CI) | worse / better | KL to FP32 | Q / DQ nodes | "
                  "quantized ops | build s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in result["rows"]:
            u = row["uncertainty"]
            low, high = u["ci95"]
            versus = row.get("edgeml_minus_this")
            versus = "-" if versus is None else (f"{versus['mean'] * 100:+.2f} ({versus['ci95'][0] * 100:+.2f} to "
                                                 f"{versus['ci95'][1] * 100:+.2f})")
            lines.append(f"| {row['method']} | {row['value'] * 100:.2f} % | {row['drop'] * 100:+.2f} "
                         f"({low * 100:+.2f} to {high * 100:+.2f}) | {versus} | {u['worse']} / {u['better']} | "
                         f"{row['kl']:.2e} | "
                         f"{row['qdq']['quantize_linear']} / {row['qdq']['dequantize_linear']} | "
                         f"{_ops(row['qdq']['quantized_ops'])} | {row['build_seconds']} |")
        lines += ["", f"Verdict: {verdict(result)}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--quick", action="store_true", help="fewer evaluation samples (a smoke run)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = []
    for key in args.cases:
        case = CASES[key](args.work / key, args.quick)
        results.append(run_case(case, args.work / key))
    meta = {"command": "python -m benchmarks.tensorrt_peers" + (" --quick" if args.quick else ""),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()} ({platform.system()})",
            "packages": ", ".join(f"{p} {version(p)}" for p in ("nvidia-modelopt", "onnxruntime", "onnx", "torch"))}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "tensorrt-peers.json").write_text(json.dumps({"meta": meta, "cases": results}, indent=2) + "\n")
    (args.results / "tensorrt-peers.md").write_text(markdown(results, meta))
    for result in results:
        print(f"{result['case']}: {verdict(result)}")


if __name__ == "__main__":
    main()
