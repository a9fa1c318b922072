"""RESULTS.md and results/peers.json, both rendered from the same result records."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime

from benchmarks.peers.methods import METHODS
from benchmarks.peers.verdict import fastest_peer
from edgeml.measure.machine import machine_info
from edgeml.profiles import Profile
from edgeml.runtimes.base import package_version

PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "neural-compressor-pt", "torchao", "litert_torch",
            "ai_edge_litert", "ai_edge_quantizer", "transformers", "numpy", "edgeml")


def write(args, results: list[dict], host: Profile, targets: list[dict], seconds: float) -> None:
    machine = machine_info(args.threads)
    command = (f"python -m benchmarks.peers --threads {args.threads} --measure-seconds {args.measure_seconds} "
               f"--rounds {args.rounds} --models {','.join(r['key'] for r in results)}"
               + (" --quick" if args.quick else ""))
    lines = [
        "# edgeml against the tools users would pick instead",
        "",
        f"Command: `{command}` (`make bench` runs it for every case).",
        (f"Measured {datetime.now(UTC).date()} on {machine['cpu']} ({machine['architecture']}, "
         f"{machine['logical_cores']} logical cores, shared with other work), **{args.threads} thread(s)** for every "
         f"method, batch 1, Python {platform.python_version()}. The whole run took {seconds / 60:.1f} minutes."),
        "Packages: " + ", ".join(f"{p} {package_version(p)}" for p in PACKAGES) + ".",
        "",
        "How it is measured:",
        "",
        (f"- **Latency**: per model, every method is timed once per round, {args.rounds} rounds, the order rotated "
         f"each round (`edgeml.measure.latency.measure_latency`: warm-up, then at least {args.measure_seconds:g} s of "
         "single calls). p50 is the median of the rounds' p50s, p90 the median of their p90s; the 95% CIs (of p50s "
         "and of speed-ups) are a two-level bootstrap: rounds, then each round's calls, paired by round between "
         "methods. Every round's p50 is in results/peers.json."),
        ("- **Quality**: on held-out data that no tool calibrated or tuned on (per model below), against PyTorch "
         "FP32. The budgets were fixed before the run; a method outside its budget is marked ✗ and is never the "
         "fastest peer. The drop's 95% CI is the paired bootstrap over the evaluation samples "
         "(`edgeml.measure.uncertainty.drop_uncertainty`); for top-1 metrics \"changed\" counts the samples a "
         "method got wrong that PyTorch FP32 got right (agreement: whose top-1 class changed) and the reverse, with "
         "the exact McNemar p-value for accuracy."),
        ("- **Build s**: the wall time the tool took to make its model. The ONNX-based peers start from one FP32 "
         "export (`torch.onnx.export`, dynamo), whose time is the ONNX Runtime FP32 row's and is not counted again. "
         "edgeml's rows are the whole `edgeml.optimize` call, with its build cache off: loading the model, export "
         "and parity check, the reference row, building, judging and timing (1 s each, plus a memory probe in a "
         "fresh process) every candidate of the target, the accuracy-budget search when a candidate misses the "
         "budget, pruning and distillation when asked, and writing the bundle."),
        ("- **Size**: the model's files on disk (ONNX; OpenVINO IR .xml + .bin; .tflite; .pt2; PyTorch eager: the "
         "state_dict's tensors; edgeml: the bundle's model files, without its reference.npz and run.py)."),
        ("- **edgeml**: each call gets the model's budget as `max_accuracy_drop`, its metric as `metric`, and the "
         "same calibration and evaluation data; its bundle's artifact is loaded through "
         "`edgeml.runtimes.BACKENDS[name].open(Artifact(...))` and timed in the same rounds as the peers. edgeml "
         "judges its candidates on the `eval_data` it is given (here the evaluation data) to pick one; the peers' "
         "recipes are fixed, and INC tunes on the calibration data."),
        "",
        "## Headline",
        "",
        "Speed-up = the fastest peer's p50 / edgeml's p50: **above 1, edgeml is faster**. The fastest peer is the "
        "fastest peer method within the model's budget. Floor: `edgeml.measure.roofline.predict` with this host's "
        f"measured peaks (`measure_host({args.threads})`, best of {args.rounds}: "
        + ", ".join(f"{p} {v:,.0f} GOPS" for p, v in host.peak_gops.items())
        + f", copy {host.memory_bandwidth_gbs:.1f} GB/s) on the FP32 graph at the precision of edgeml's selected "
        "candidate; edgeml's p50 is shown as a multiple of it. The floor is not a strict bound: its memory term "
        "charges copy bandwidth for tensors that stay in cache, so a small model can run below it (see the roofline "
        "calibration in README.md).",
        "",
        ("| model | edgeml | selected | edgeml drop (95% CI) | edgeml p50 ms | fastest peer within budget "
         "| peer p50 ms | speed-up (95% CI) | edgeml / floor |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for h in result["headline"]:
            lines.append("| " + " | ".join(_headline_cells(result, h)) + " |")
    lines += ["", "## Targets", "", "| target | measured | met | reason when missed |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} | {t['reason']} |"
              for t in targets]
    for result in results:
        lines += _model_section(result)
    lines += ["", "## Recipes", "", "| method | call |", "|---|---|"]
    lines += [f"| {m.label} | {m.call} |" for m in METHODS]
    text = "\n".join(lines) + "\n"
    (args.out / "RESULTS.md").write_text(text)
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    raw = {"command": command, "machine": machine, "packages": {p: package_version(p) for p in PACKAGES},
           "seconds": seconds, "host": host.to_dict(), "targets": targets, "models": _without_draws(results)}
    (args.out / "results" / "peers.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(text)


def _headline_cells(result: dict, h: dict) -> list[str]:
    budget = "" if h["within_budget"] or h["status"] != "ok" else " (outside budget)"
    cells = [result["title"], h["edgeml"], h["detail"].removeprefix("selected ") + budget]
    if h["status"] != "ok":
        return cells + ["—", "failed", h["peer"] or "—", "—", "—", "—"]
    speed = h.get("speedup")
    floor = h.get("floor") or {}
    cells += [_drop_ci(h["drop"], h["uncertainty"], result["metric"]), f"{h['p50_ms']:.3f}", h["peer"] or "—",
              "—" if speed is None else f"{h['peer_p50_ms']:.3f}",
              "—" if speed is None else f"**{speed['ratio']:.2f}x** ({speed['ci95'][0]:.2f}–{speed['ci95'][1]:.2f})"]
    if "times_floor" in floor:
        cells.append(f"{floor['times_floor']:.1f}x ({floor['ms']:.3f} ms at {floor['precision']})")
    else:
        cells.append(floor.get("reason", "—").replace("|", "/"))
    return cells


def _model_section(result: dict) -> list[str]:
    peer = fastest_peer(result["rows"])
    lines = ["", f"## {result['title']}", "", f"Data: {result['data']}.", ""]
    if result.get("stress"):
        lines += [_stress(result), ""]
    lines += [
             (f"Budget: {result['budget']} (max drop {_drop(result['max_drop'], result['metric'])}); PyTorch FP32: "
              f"{_quality(result['reference_quality'], result['metric'])}. Export to ONNX: "
              f"{result['export_seconds']:.1f} s."), "",
             (f"| method | precision | {result['metric']} | drop (95% CI) | changed | budget | p50 ms (95% CI) "
              "| p90 ms | vs fastest peer | size MB | build s | notes |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['label']} | — | — | — | — | — | — | — | — | — | — | failed: "
                         f"{row['reason'].replace('|', '/')} |")
            continue
        lat = row["latency"]
        quality = _quality(row["metrics"][result["metric"]], result["metric"])
        if "kl" in row["metrics"] and result["metric"] != "cosine":       # KL of softmax: for classifiers
            quality += f" (KL {row['metrics']['kl']:.4f})"
        versus = "—" if peer is None else f"{peer['latency']['p50_ms'] / lat['p50_ms']:.2f}x"
        lines.append("| " + " | ".join([
            f"**{row['label']}**" if row is peer else row["label"], row["precision"], quality,
            _drop_ci(row["drop"], row["uncertainty"], result["metric"]), _changed(row["uncertainty"]),
            "✓" if row["within_budget"] else "✗",
            f"{lat['p50_ms']:.3f} ({lat['p50_ci95_ms'][0]:.3f}–{lat['p50_ci95_ms'][1]:.3f})", f"{lat['p90_ms']:.3f}",
            versus, f"{row['size_bytes'] / 1e6:.2f}", f"{row['build_seconds']:.1f}", row["detail"]]) + " |")
    lines += ["", ("The fastest peer within budget is in bold; \"vs fastest peer\" is its p50 / the row's p50. "
                   f"Load average (1 min) when the timing rounds began: {result['load_average']:.1f}.")]
    for row in result["rows"]:
        if row["edgeml"] is not None:
            lines += ["", f"{row['label']}: " + _edgeml_notes(row["edgeml"], result["metric"])]
    return lines


def _edgeml_notes(run: dict, benchmark_metric: str) -> str:
    """The candidates an optimize call weighed (with this benchmark's metric where edgeml judged by another),
    and its longest steps."""
    metric = run["quality_metric"]
    parts = []
    for r in run["rows"]:
        if r["role"] != "candidate":
            continue
        if r["status"] not in ("ok", "predicted", "needs device"):
            parts.append(f"{r['name']} {r['status']}")
            continue
        mark = "selected" if r["selected"] else "✓" if r["within_budget"] else "✗"
        latency = "" if r["p50_ms"] is None else f", {r['p50_ms']:.3f} ms"
        other = "" if benchmark_metric == metric else \
            f", {benchmark_metric} {_quality(r['metrics'][benchmark_metric], benchmark_metric)}"
        parts.append(f"{r['name']} ({metric} drop {_drop(r['quality_drop'], metric)}{other}{latency}, {mark})")
    steps = sorted(run["steps"], key=lambda s: -s["seconds"])[:3]
    return (f"judged by {metric} on the evaluation data; candidates (p50 as `optimize` measured it): "
            + "; ".join(parts)
            + ". Longest steps: " + "; ".join(f"{s['step']} {s['seconds']:.0f} s" for s in steps) + ".")


def _stress(result: dict) -> str:
    """Why a case is a stress test, with the FP32 model's confidence and OpenVINO bf16's changes measured here."""
    text = f"**Stress test**: {result['stress']}."
    confidence = result.get("confidence")
    if confidence is not None:
        text += (f" Measured in this run: PyTorch FP32's median top-1 probability on the evaluation data is "
                 f"{confidence['median_top1']:.2f}, and {confidence['margin_under'] * 100:.0f} % of the samples have a "
                 f"top-1 margin (top-1 minus top-2 probability) under {confidence['margin']:g}")
        bf16 = next((r for r in result["rows"] if r["status"] == "ok" and r["tool"] == "peer"
                     and r["precision"] == "bf16"), None)
        if bf16 is not None:
            text += (f"; {bf16['label']} (bf16 alone) changes the top-1 class of "
                     f"{(1 - bf16['metrics']['agreement']) * 100:.2f} % of them")
        text += "."
    return text


def _drop_ci(drop: float, uncertainty: dict | None, metric: str) -> str:
    if uncertainty is None:
        return _drop(drop, metric)
    low, high = uncertainty["ci95"]
    if metric == "cosine":
        return f"{drop:.4f} ({low:.4f}–{high:.4f})"
    return f"{drop * 100:.2f} pt ({low * 100:.2f}–{high * 100:.2f})"


def _changed(uncertainty: dict | None) -> str:
    """Samples made worse / better than PyTorch FP32 (top-1 metrics), with McNemar's p for accuracy."""
    if uncertainty is None or uncertainty["worse"] is None:
        return "—"
    text = f"{uncertainty['worse']} / {uncertainty['better']}"
    return text if uncertainty["mcnemar_p"] is None else f"{text} (p {uncertainty['mcnemar_p']:.2g})"


def _quality(value: float, metric: str) -> str:
    return f"{value:.4f}" if metric == "cosine" else f"{value * 100:.2f} %"


def _drop(drop: float, metric: str) -> str:
    return f"{drop:.4f}" if metric == "cosine" else f"{drop * 100:.2f} pt"


def _without_draws(results: list[dict]) -> list[dict]:
    """The results with the bootstrap draws (kept for ratios) left out."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "draws"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(results)
