"""Post-training quantization methods for depthwise CNNs, side by side on the same calibration and evaluation data.

Methods (all INT8, QDQ, run by ONNX Runtime with one thread):
- ORT quantize_static, per-channel weights, MinMax / Entropy / Percentile activation calibration;
- the same after cross-layer equalization (CLE, Nagel et al. 2019) of the FP32 ONNX model: for each
  Conv -> Relu -> Conv pair (BatchNorm already folded by the exporter; depthwise convs included) output channel i
  of the first conv is divided by s_i = sqrt(r1_i / r2_i) and input channel i of the second multiplied by it, where
  r1, r2 are the channels' weight ranges. ReLU is positively homogeneous so FP32 outputs are unchanged. ReLU6 is
  not (ReLU6(x / s) != ReLU6(x) / s), so pairs joined by ReLU6 (Clip 0..6) are skipped, and the count is reported;
- the same plus empirical bias correction: each Conv's bias is shifted by the mean per-channel difference between
  its quantized and FP32 outputs on the calibration data, then the model is quantized again;
- NNCF quantize on the ONNX model: default (fast bias correction), full BiasCorrection, preset MIXED.
aimet-onnx is not run here (see benchmarks/README.md).

Quality: drop against FP32 (digits: accuracy on labelled test digits; EfficientNet-Lite0: top-1 agreement on
photo crops), with the paired-bootstrap 95% CI of edgeml.measure.uncertainty. Latency: p50 of batch-1 runs.

Run: OMP_NUM_THREADS=1 python -m benchmarks.ptq_methods
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------- models and data

def digits_case():
    """A small depthwise-separable CNN trained here on scikit-learn's digits (labelled)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    torch.manual_seed(0)

    def block(cin, cout):
        return [torch.nn.Conv2d(cin, cin, 3, padding=1, groups=cin), torch.nn.BatchNorm2d(cin), torch.nn.ReLU(),
                torch.nn.Conv2d(cin, cout, 1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                *block(16, 32), *block(32, 32), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(30):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return "digits", "depthwise CNN on sklearn digits (accuracy)", model, xtr[:200], xte, yte, "accuracy"


def lite0_case(calibration: int, evaluation: int):
    import torch

    from benchmarks.images import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, photo_crops
    from benchmarks.models import efficientnet_lite0, lite0_weights

    model = efficientnet_lite0()
    model.load_state_dict(torch.load(lite0_weights(), map_location="cpu"))
    model.eval()
    return ("efficientnet-lite0", "EfficientNet-Lite0, photo crops (top-1 agreement with FP32)", model,
            photo_crops(CALIBRATION_PHOTOS, calibration, seed=0), photo_crops(EVALUATION_PHOTOS, evaluation, seed=1),
            None, "agreement")


def export(model, sample: np.ndarray, path: Path) -> onnx.ModelProto:
    """Legacy exporter in eval mode: folds BatchNorm into the convs, which CLE needs."""
    import torch

    torch.onnx.export(model, torch.from_numpy(sample[:1]), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "n"}, "output": {0: "n"}}, opset_version=17, dynamo=False,
                      do_constant_folding=True)
    return onnx.load(str(path))


# ---------------------------------------------------------------- cross-layer equalization

def _single(consumers: dict, name: str):
    nodes = consumers.get(name, [])
    return nodes[0] if len(nodes) == 1 else None


def _zero_pad(node, inits: dict) -> bool:
    """A constant-mode Pad with value 0 commutes with per-channel scaling."""
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
    value = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    return mode == b"constant" and value is not None and not np.any(value)


def _relu_between(conv_out: str, consumers: dict, inits: dict) -> tuple[str, object] | None:
    """('relu'|'relu6', next conv) when `conv_out` feeds one ReLU / Clip(0, 6) node, then (through zero Pads)
    exactly one Conv."""
    node = _single(consumers, conv_out)
    if node is None:
        return None
    if node.op_type == "Relu":
        kind = "relu"
    elif node.op_type == "Clip" and [float(inits[n]) if n in inits else None for n in node.input[1:3]] == [0.0, 6.0]:
        kind = "relu6"
    else:
        return None
    follower = _single(consumers, node.output[0])
    while follower is not None and follower.op_type == "Pad" and _zero_pad(follower, inits):
        follower = _single(consumers, follower.output[0])
    return (kind, follower) if follower is not None and follower.op_type == "Conv" else None


def equalize(model: onnx.ModelProto, epsilon: float = 1e-8) -> tuple[onnx.ModelProto, dict]:
    """Cross-layer equalization of Conv -> Relu -> Conv pairs (one pass, in graph order); returns the model and
    counts of pairs equalized and skipped (ReLU6, unsupported grouping, no bias)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    inits.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                  if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    by_name = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    counts = {"equalized": 0, "skipped_relu6": 0, "skipped_other": 0}
    for first in graph.node:
        if first.op_type != "Conv" or first.input[1] not in by_name:
            continue
        act = _relu_between(first.output[0], consumers, inits)
        if act is None or act[1].input[1] not in by_name:
            continue
        if act[0] == "relu6":
            counts["skipped_relu6"] += 1
            continue
        second = act[1]
        w1, w2 = inits[first.input[1]].astype(np.float64), inits[second.input[1]].astype(np.float64)
        group2 = next((a.i for a in second.attribute if a.name == "group"), 1)
        channels = w1.shape[0]
        if len(first.input) < 3 or first.input[2] not in by_name or group2 not in (1, channels):
            counts["skipped_other"] += 1
            continue
        b1 = inits[first.input[2]].astype(np.float64)
        r1 = np.abs(w1.reshape(channels, -1)).max(axis=1)
        if group2 == 1:
            r2 = np.abs(w2.transpose(1, 0, 2, 3).reshape(channels, -1)).max(axis=1)
        else:
            r2 = np.abs(w2.reshape(channels, -1)).max(axis=1)
        scale = np.where((r1 > epsilon) & (r2 > epsilon), np.sqrt(r1 / np.maximum(r2, epsilon)), 1.0)
        w1 = w1 / scale.reshape(-1, 1, 1, 1)
        b1 = b1 / scale
        w2 = w2 * (scale.reshape(1, -1, 1, 1) if group2 == 1 else scale.reshape(-1, 1, 1, 1))
        for name, value in ((first.input[1], w1), (first.input[2], b1), (second.input[1], w2)):
            inits[name] = value.astype(np.float32)
            by_name[name].CopyFrom(numpy_helper.from_array(inits[name], name))
        counts["equalized"] += 1
    return model, counts


# ---------------------------------------------------------------- bias correction

def _conv_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    extra = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in extra.graph.output}
    for name in names:
        if name not in have:
            extra.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return extra


def _channel_means(model: onnx.ModelProto, names: list[str], data: np.ndarray) -> dict[str, np.ndarray]:
    session = _session(_conv_outputs(model, names))
    sums: dict[str, np.ndarray] = {}
    for batch in np.array_split(data, max(1, len(data) // 32)):
        outs = session.run(names, {"input": batch})
        for name, value in zip(names, outs):
            sums[name] = sums.get(name, 0) + value.sum(axis=(0, 2, 3)) / (len(data) * value.shape[2] * value.shape[3])
    return sums


def bias_correct(fp32: onnx.ModelProto, quantized: onnx.ModelProto, data: np.ndarray) -> onnx.ModelProto:
    """FP32 model whose conv biases absorb the mean per-channel output shift the quantized model shows."""
    corrected = onnx.ModelProto.FromString(fp32.SerializeToString())
    inits = {i.name: i for i in corrected.graph.initializer}
    convs = [n for n in corrected.graph.node if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in inits]
    names = [n.output[0] for n in convs]
    qnames = {n.output[0] for n in quantized.graph.node}
    names = [n for n in names if n in qnames]
    reference, shifted = _channel_means(fp32, names, data), _channel_means(quantized, names, data)
    for node in convs:
        name = node.output[0]
        if name not in names:
            continue
        bias = numpy_helper.to_array(inits[node.input[2]]) - (shifted[name] - reference[name]).astype(np.float32)
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), node.input[2]))
    return corrected


# ---------------------------------------------------------------- quantizers

def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_static(model: onnx.ModelProto, data: np.ndarray, method: str) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": data[i:i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
        return onnx.load(str(dst))


def nncf_quantize(model: onnx.ModelProto, data: np.ndarray, variant: str) -> onnx.ModelProto:
    import nncf

    dataset = nncf.Dataset([{"input": data[i:i + 1]} for i in range(len(data))])
    kwargs = {"subset_size": len(data)}
    if variant == "full-bias-correction":
        kwargs["fast_bias_correction"] = False
    if variant == "mixed":
        kwargs["preset"] = nncf.QuantizationPreset.MIXED
    return nncf.quantize(model, dataset, **kwargs)


# ---------------------------------------------------------------- measuring

def evaluate(model: onnx.ModelProto, data: np.ndarray) -> np.ndarray:
    session = _session(model)
    return np.concatenate([session.run(None, {"input": b})[0] for b in np.array_split(data, max(1, len(data) // 32))])


def latency_ms(model: onnx.ModelProto, sample: np.ndarray, seconds: float) -> float:
    session = _session(model)
    feed = {"input": sample[:1]}
    for _ in range(3):
        session.run(None, feed)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 10:
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def run_case(case, seconds: float) -> dict:
    from edgeml.measure.evaluate import sample_scores
    from edgeml.measure.uncertainty import drop_uncertainty

    key, title, torch_model, calib, evaluation, labels, metric = case
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export(torch_model, calib, Path(tmp) / "model.onnx")
    reference = evaluate(fp32, evaluation)
    equalized, counts = equalize(fp32)
    eq_diff = float(np.abs(evaluate(equalized, evaluation) - reference).max())
    variants = {}

    def add(name, build):
        start = time.perf_counter()
        try:
            model = build()
        except Exception as error:  # a method that fails is a result, not a crash of the benchmark
            variants[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            print(f"  {name}: failed: {variants[name]['error']}", flush=True)
            return None
        quantize_s = time.perf_counter() - start
        outputs = evaluate(model, evaluation)
        score = float(sample_scores([outputs], [reference], labels, metric).mean())
        ci = drop_uncertainty([outputs], [reference], labels, metric)
        base = float(sample_scores([reference], [reference], labels, metric).mean())
        variants[name] = {metric: score, "drop": base - score, "ci95": ci["ci95"], "worse": ci["worse"],
                          "better": ci["better"], "p50_ms": latency_ms(model, evaluation, seconds),
                          "quantize_s": quantize_s}
        print(f"  {name}: drop {base - score:+.4f} CI {ci['ci95']} p50 {variants[name]['p50_ms']:.2f} ms", flush=True)
        return model

    print(f"{key}: CLE {counts}, max |FP32 change| {eq_diff:.2e}", flush=True)
    base = float(sample_scores([reference], [reference], labels, metric).mean())
    variants["fp32"] = {metric: base, "drop": 0.0, "ci95": [0.0, 0.0], "p50_ms": latency_ms(fp32, evaluation, seconds)}
    for method in ("MinMax", "Entropy", "Percentile"):
        add(f"ort-{method.lower()}", lambda m=method: ort_static(fp32, calib, m))
    for method in ("MinMax", "Percentile"):
        first = add(f"ort-{method.lower()}+cle", lambda m=method: ort_static(equalized, calib, m))
        if first is not None:
            add(f"ort-{method.lower()}+cle+bias-correction",
                lambda m=method, q=first: ort_static(bias_correct(equalized, q, calib), calib, m))
    for variant in ("default", "full-bias-correction", "mixed"):
        add(f"nncf-{variant}", lambda v=variant: nncf_quantize(fp32, calib, v))
    return {"title": title, "metric": metric, "calibration": len(calib), "evaluation": len(evaluation),
            "cle": counts, "cle_max_fp32_change": eq_diff, "variants": variants}


def render(results: dict) -> str:
    lines = ["# PTQ methods for depthwise CNNs (ONNX Runtime, 1 thread)", "",
             "Written by `python -m benchmarks.ptq_methods`. Drop = FP32 score - INT8 score on the same evaluation "
             "data; CI: paired bootstrap 95%. Latency: p50, batch 1.", ""]
    for key, case in results["cases"].items():
        lines += [f"## {key}: {case['title']}", "",
                  f"Calibration {case['calibration']}, evaluation {case['evaluation']} samples. CLE pairs: "
                  f"{case['cle']}; largest FP32 output change after CLE {case['cle_max_fp32_change']:.1e}.", "",
                  f"| method | {case['metric']} | drop | 95% CI | changed (worse/better) | p50 ms |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, row in case["variants"].items():
            if "error" in row:
                lines.append(f"| {name} | failed: {row['error'][:120]} | | | | |")
                continue
            lines.append(f"| {name} | {row[case['metric']]:.4f} | {row['drop']:+.4f} | "
                         f"[{row['ci95'][0]:+.4f}, {row['ci95'][1]:+.4f}] | {row.get('worse')}/{row.get('better')} | "
                         f"{row['p50_ms']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--evaluation", type=int, default=300)
    parser.add_argument("--measure-seconds", type=float, default=1.0)
    parser.add_argument("--cases", default="digits,efficientnet-lite0")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    factories = {"digits": digits_case, "efficientnet-lite0": lambda: lite0_case(args.calibration, args.evaluation)}
    results = {"cases": {}}
    for key in args.cases.split(","):
        results["cases"][key] = run_case(factories[key](), args.measure_seconds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ptq-methods.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "ptq-methods.md").write_text(render(results))


if __name__ == "__main__":
    main()
