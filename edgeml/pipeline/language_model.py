"""`optimize` for causal language models: the same phases as for other models, with a prefill + decode runner.

    load (HF folder or GGUF) -> reference (the original in PyTorch eager, FP32: what every build is judged and
      timed against) -> candidates (each runtime's builds: build, judge on held-out text, time) -> select (the
      fastest decode within --max-ppl-increase) -> bundle + report, all written atomically into OUT.

Quality is perplexity on held-out documents (bootstrap 95% CI over documents), top-1 agreement and KL against the
original's next tokens, and greedy answers to a fixed prompt set; speed is time to first token for 128- and
512-token prompts and decode tokens/s over 128 new tokens at batch 1, against the bandwidth floor.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgeml.bundle.language_model import write_language_model_bundle
from edgeml.errors import EdgemlError, TargetError, first_line
from edgeml.inputs.language_model import LanguageModel, context_length, load_language_model, weight_shapes
from edgeml.inputs.text import Text, default_calibration, default_evaluation, read_text
from edgeml.measure import decode_speed, memory, perplexity
from edgeml.measure.machine import machine_info
from edgeml.measure.paired_timing import CLOSE, FASTER, MOST_CONTENDERS, contest, faster, verdict_text, versus_fastest
from edgeml.outdir import AtomicOutput
from edgeml.pipeline.build_apart import build_apart
from edgeml.pipeline.plan import resolve_profile
from edgeml.pipeline.recipe import Recipe, dump_recipe
from edgeml.pipeline.selection import PRECISION_ORDER, QUALITY_RESOLUTION
from edgeml.profiles import Profile
from edgeml.progress import Reporter
from edgeml.report.language_model import render_language_model
from edgeml.report.record import Row, Run
from edgeml.runtimes.base import package_version
from edgeml.runtimes.generation import GENERATION_RUNTIMES, Generator
from edgeml.targets import TARGETS, get_target
from edgeml.targets.base import BuildRefused, LanguageModelBuild, LanguageModelCandidate
from edgeml.version import __version__

WINDOW = 512                 # tokens of each evaluation document that perplexity is measured on
MOST_WINDOWS = 24
PROMPT_LENGTHS = (128, 512)  # the prompts time to first token is timed for
NEW_TOKENS = 128             # decode tokens/s is timed over this many new tokens
ANSWER_TOKENS = 32           # the greedy answers to PROMPTS compared with the original's
MEMORY_NEW_TOKENS = 16       # peak memory: loading a build and generating this many tokens after the longest prompt
RUNS = 3
CONTEST_SECONDS = 30.0       # the close contenders' alternating rounds (at least MIN_ROUNDS of one generation each)
CONTEST_PROMPTS = 64
PROMPTS = ("What is the capital of France?", "Explain in one sentence what a compiler does.",
           "Name three prime numbers.", "Write one sentence about the sea.")
RECORDED = ("transformers", "torch", "onnxruntime_genai", "openvino_genai", "openvino", "nncf", "executorch", "torchao",
            "llama_cpp", "ai_edge_litert", "litert_torch", "ai_edge_quantizer", "numpy")


class Tokens:
    """The original's tokenizer: every build is judged on the same token ids."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, question: str) -> list[int]:
        """The question in the model's chat template when it has one, else as plain text."""
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                      add_generation_prompt=True)
            return self.encode(text)
        return self.encode(question)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def stop(self) -> set[int]:
        eos = self.tokenizer.eos_token_id
        return set() if eos is None else {eos}


class Judge:
    """What every build is compared on: evaluation windows with the original's predictions, timing prompts, and
    the original's greedy answers."""

    def __init__(self, tokens: Tokens, evaluation: Text, context: int):
        documents = [tokens.encode(d) for d in evaluation.documents]
        self.windows = perplexity.windows(documents, min(WINDOW, context), MOST_WINDOWS)
        if not self.windows:
            raise EdgemlError("the evaluation text has no document of 16 tokens or more")
        self.documents = len(documents)
        stream = [t for d in documents for t in d]
        room = context - NEW_TOKENS
        self.prompts = {n: decode_speed.distinct_prompts(stream, n, RUNS + 1) for n in PROMPT_LENGTHS
                        if n + RUNS <= min(room, len(stream))}
        # the close contenders' alternating rounds: a prompt of the shortest length for every call
        self.contest_prompts = decode_speed.distinct_prompts(stream, min(PROMPT_LENGTHS), CONTEST_PROMPTS)
        self.questions = [tokens.prompt(q) for q in PROMPTS]
        self.stop = tokens.stop
        self.reference: perplexity.Scored | None = None
        self.answers: list[list[int]] = []

    def remember(self, generator: Generator) -> None:
        """Score the original, keeping its predictions, and its answers."""
        self.reference = perplexity.score(self.windows, generator.logits, self.documents, keep=True)
        self.answers = self.answer(generator)

    def answer(self, generator: Generator) -> list[list[int]]:
        return [list(generator.stream(q, ANSWER_TOKENS, self.stop)) for q in self.questions]

    def judge(self, generator: Generator) -> tuple[dict, list[list[int]]]:
        scored = perplexity.score(self.windows, generator.logits, self.documents)
        metrics = perplexity.quality(self.reference, scored)
        answers = self.answer(generator)
        metrics["same_answers"] = sum(a == b for a, b in zip(answers, self.answers)) / len(answers)
        return metrics, answers


def optimize_language_model(model, *, recipe: Recipe, calib_data=None, eval_data=None, out=None, force=False,
                            reporter: Reporter | None = None, unused: dict | None = None) -> Run:
    """Build, judge and time the target's language-model candidates; bundle the fastest within the budget.
    `unused`: the other kinds' arguments, by flag, which must not be given."""
    given = [flag for flag, value in (unused or {}).items() if value not in (None, (), [])]
    if given:
        raise EdgemlError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a language model "
                          "(it takes --calib-data / --eval-data text, --target, --max-ppl-increase, --threads)")
    candidates, profile = language_model_plan(recipe)
    threads = recipe.threads or os.cpu_count() or 1
    reporter = reporter or Reporter()
    out = Path(out) if out else Path("edgeml-out") / f"{Path(str(model)).stem}-{recipe.target}"
    with reporter, AtomicOutput(out, force) as staging:
        work = staging / "work"
        work.mkdir()
        with reporter.step("Load the language model"):
            lm = load_language_model(model, work)
            tokens = Tokens(lm.folder)
        calibration, evaluation = _texts(calib_data, eval_data, reporter)
        judge = Judge(tokens, evaluation, context_length(lm.config))
        config = {"model": str(model), "calib_data": calib_data and str(calib_data),
                  "eval_data": eval_data and str(eval_data)}
        run = _new_run(recipe, config, threads, lm, calibration, evaluation)
        run.profile = profile and profile.to_dict()
        run.data["eos_token_ids"] = sorted(tokens.stop)
        with reporter.step("Reference: the original (transformers, PyTorch eager, FP32)"):
            run.rows.append(_reference(lm, judge, threads))
        floor = decode_speed.bandwidth(threads)
        run.data["bandwidth_bytes_per_s"] = floor
        built: dict[str, Path] = {}
        answers: dict[str, list[list[int]]] = {}
        contexts: dict[str, int] = {}
        for candidate in candidates:
            with reporter.step(f"Candidate {candidate.name}") as step:
                row = _candidate(candidate, lm, judge, calibration, work, threads, recipe, built, answers, contexts,
                                 profile)
                if row.status not in ("ok", "predicted"):
                    step.fail(row.reason or row.status)
                run.rows.append(row)
        for row in run.rows:
            if row.status == "ok" and row.size_bytes:
                rate = row.latency["decode_tokens_per_s"]["median"]
                row.latency["bandwidth_floor_tokens_per_s"] = floor / _weight_bytes(row, built, lm)
                row.latency["fraction_of_floor"] = rate / row.latency["bandwidth_floor_tokens_per_s"]
        paired = _time_contenders(_contenders(run.rows), built, judge, threads, reporter)
        with reporter.step("Select and bundle"):
            run.selection = _select(run.rows, recipe.max_ppl_increase, paired)
            chosen = run.selected
            if not run.selection["within_budget"]:
                reporter.warn(run.selection["reason"])
            shipped = answers[chosen.name]
            run.bundle = write_language_model_bundle(staging / "bundle", built[chosen.name], chosen, run,
                                                     list(PROMPTS), judge.questions, shipped,
                                                     [tokens.decode(a) for a in shipped], ANSWER_TOKENS,
                                                     contexts[chosen.name])
            shutil.rmtree(work)
        run.steps, run.warnings, run.output = list(reporter.steps), list(reporter.warnings), str(out)
        record = run.to_dict()
        (staging / "report.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "report.md").write_text(render_language_model(record))
        (staging / "recipe.yaml").write_text(dump_recipe(recipe))
    return run


def language_model_plan(recipe: Recipe) -> tuple[list[LanguageModelCandidate], Profile | None]:
    """The recipe's target's language-model builds in its precision, and the device profile their speed is
    predicted for (None: they are timed here); a one-line error for what cannot be built (no `llm` extra, a target
    without language-model builds, a precision they lack, an unknown profile)."""
    reference = GENERATION_RUNTIMES["transformers"]
    if reference.missing():
        raise EdgemlError(f"a language model needs {', '.join(reference.missing())}: pip install '{reference.extra}'")
    target = get_target(recipe.target)
    if not target.language_models:
        raise TargetError(f"target '{target.name}' has no builds for language models yet; targets that have: "
                          + ", ".join(t.name for t in TARGETS.values() if t.language_models))
    candidates = [c for c in target.language_models if recipe.precision in ("auto", c.precision)]
    if not candidates:
        raise TargetError(f"target '{target.name}' builds language models in "
                          f"{', '.join(sorted({c.precision for c in target.language_models}))}, not "
                          f"{recipe.precision}")
    # builds that run on the device alone have their speed predicted for its profile
    return candidates, resolve_profile(target, recipe.profile) if any(c.on_device for c in candidates) else None


def _texts(calib_data, eval_data, reporter: Reporter) -> tuple[Text, Text]:
    calibration = read_text(calib_data) if calib_data else default_calibration()
    evaluation = read_text(eval_data) if eval_data else default_evaluation()
    if calib_data is None or eval_data is None:
        reporter.warn("no " + " or ".join(n for n, g in (("--calib-data", calib_data), ("--eval-data", eval_data))
                                           if g is None)
                      + f" given: calibrating on {calibration.origin}, evaluating on {evaluation.origin}")
    return calibration, evaluation


def _new_run(recipe: Recipe, config: dict, threads: int, lm: LanguageModel, calibration: Text,
             evaluation: Text) -> Run:
    return Run(edgeml_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               target=recipe.target, config={**config, "kind": "language-model", "recipe": recipe.to_dict(),
                                             "threads": threads},
               machine=machine_info(threads), packages={p: package_version(p) for p in RECORDED},
               source=lm.describe(),
               data={"calibration": calibration.describe(), "evaluation": evaluation.describe(),
                     "quality_metric": "perplexity",
                     "protocol": {"window_tokens": WINDOW, "prompt_lengths": list(PROMPT_LENGTHS),
                                  "new_tokens": NEW_TOKENS, "runs": RUNS, "answer_tokens": ANSWER_TOKENS,
                                  "prompts": list(PROMPTS)}})


def _reference(lm: LanguageModel, judge: Judge, threads: int) -> Row:
    runtime = GENERATION_RUNTIMES["transformers"]
    generator = runtime.open(lm.folder, threads)
    judge.remember(generator)
    metrics = perplexity.quality(judge.reference, judge.reference)
    metrics["same_answers"] = 1.0
    return Row("original", "transformers", "fp32", "reference", method="PyTorch eager, FP32",
               backend_version=runtime.version(), metrics=metrics, quality_drop=0.0,
               latency=decode_speed.measure_speed(generator, judge.prompts, NEW_TOKENS, RUNS),
               size_bytes=sum(p.stat().st_size for p in lm.folder.glob("*.safetensors")),
               peak_memory_bytes=_peak_memory(runtime.name, lm.folder, judge, threads))


def _candidate(candidate: LanguageModelCandidate, lm: LanguageModel, judge: Judge, calibration: Text, work: Path,
               threads: int, recipe: Recipe, built: dict[str, Path], answers: dict[str, list],
               contexts: dict[str, int], profile: Profile | None) -> Row:
    """Build (in a process of its own: edgeml.pipeline.build_apart, unless the build starts one), judge and time one
    candidate of the recipe's target; one built for the device alone (`on_device`) is judged here on the weights it
    computes with and its speed predicted for `profile` (status "predicted")."""
    runtime, device = GENERATION_RUNTIMES[candidate.runtime], candidate.on_device
    row = Row(candidate.name, device.runtime if device else candidate.runtime, candidate.precision, "candidate",
              method=candidate.method, backend_version=None if device else runtime.version())
    missing = candidate.missing()
    if missing:
        row.status, row.reason = "unavailable", f"needs {', '.join(missing)} ({runtime.extra})"
        return row
    unsuited = device and device.unsuited(profile)
    if unsuited:
        row.status, row.reason = "skipped", unsuited
        return row
    folder = work / candidate.name
    start = time.perf_counter()
    try:
        context = LanguageModelBuild(calibration, lm.config, work / f"{candidate.name}.log", threads)
        if candidate.own_process:
            candidate.build(lm.folder, folder, context)
        else:
            build_apart(recipe.target, candidate.name, lm.folder, folder, context)
        if device:
            row.predicted = device.predict(weight_shapes(lm.folder), lm.config, profile, PROMPT_LENGTHS, NEW_TOKENS)
    except BuildRefused as e:
        row.status, row.reason = "failed", str(e)
        return row
    row.build_seconds = time.perf_counter() - start
    try:
        generator = runtime.open(device.judged(folder, work / f"{candidate.name}-judged") if device else folder,
                                 threads)
        row.metrics, answers[candidate.name] = judge.judge(generator)
        if device:
            row.status = "predicted"
            contexts[candidate.name] = row.predicted["context_tokens"]
        else:
            row.latency = decode_speed.measure_speed(generator, judge.prompts, NEW_TOKENS, RUNS)
            contexts[candidate.name] = min(context_length(lm.config),
                                           getattr(generator, "max_length", None) or 1 << 62)
            del generator                        # its memory, before the peak of a fresh process is measured
            row.peak_memory_bytes = _peak_memory(candidate.runtime, folder, judge, threads)
    except Exception as e:  # a runtime that cannot run what its builder wrote: the row says why
        row.status, row.reason = "failed", f"{candidate.runtime} cannot run the build: {first_line(e)}"[:300]
        return row
    row.quality_drop = row.metrics["ppl_increase"]
    row.quality_drop_ci95 = row.metrics["ppl_increase_ci95"]
    row.within_budget = row.metrics["ppl_increase"] + row.metrics["ppl_increase_se"] <= recipe.max_ppl_increase
    row.size_bytes = (row.predicted["weight_bytes"] if device else
                      sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
    built[candidate.name] = folder
    return row


def _peak_memory(runtime: str, folder: Path, judge: Judge, threads: int) -> int | None:
    """How far a fresh process's peak resident memory rises as it loads the build and generates after the longest
    timing prompt (edgeml.measure.memory): the memory the model needs on the device besides its runtime."""
    prompt = judge.prompts[max(judge.prompts)][0] if judge.prompts else judge.questions[0]
    return memory.measure({"generation": {"runtime": runtime, "folder": str(folder), "new_tokens": MEMORY_NEW_TOKENS},
                           "threads": threads, "runs": 2}, {"ids": np.asarray(prompt, dtype=np.int64)})


def _weight_bytes(row: Row, built: dict[str, Path], lm: LanguageModel) -> int:
    """The bytes of weights a decode step reads: the model files (not the tokenizer or configs)."""
    folder = built.get(row.name, lm.folder)
    suffixes = (".safetensors", ".onnx", ".data", ".bin", ".pte", ".gguf", ".tflite")
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(suffixes)
               and "tokenizer" not in p.name)


def _rate(row: Row) -> float:
    """Decode tokens/s: measured here, or predicted for the device."""
    if row.status == "predicted":
        return row.predicted["decode_tokens_per_s"]
    return row.latency["decode_tokens_per_s"]["median"]


def _contenders(rows: list[Row]) -> list[Row]:
    """The builds within the budget whose decode is within CLOSE of the fastest's, fastest first, at most
    MOST_CONTENDERS: the ones one measurement each cannot order."""
    within = sorted((r for r in rows if r.role == "candidate" and r.status == "ok" and r.within_budget),
                    key=_rate, reverse=True)
    return [r for r in within if _rate(r) * CLOSE >= _rate(within[0])][:MOST_CONTENDERS] if within else []


def _time_contenders(close: list[Row], built: dict[str, Path], judge: Judge, threads: int, reporter: Reporter,
                     seconds: float = CONTEST_SECONDS) -> dict | None:
    """The close contenders timed again together, in alternating rounds (paired_timing.contest): each call
    generates NEW_TOKENS tokens after a prompt no call had before. {name: paired_timing.summarize(...)}, or None
    when fewer than two are close."""
    if len(close) < 2:
        return None
    prompts = itertools.cycle(judge.contest_prompts)

    def generate(generator: Generator) -> None:
        for _ in generator.stream(next(prompts), NEW_TOKENS):
            pass

    with reporter.step("Time the close contenders again, in alternating rounds "
                       f"({', '.join(r.name for r in close)})") as step:
        generators = {r.name: GENERATION_RUNTIMES[r.backend].open(built[r.name], threads) for r in close}
        return contest({name: functools.partial(generate, g) for name, g in generators.items()}, seconds,
                       lambda r, name, _: step.describe(f"Alternating rounds: round {r + 1}, {name}"))


def _select(rows: list[Row], budget: float, paired: dict | None = None) -> dict:
    """The fastest decode among the builds within the budget; with none within it, the one closest to it.

    With the close contenders timed again (`paired`), the builds the fastest of those rounds is not `faster` than
    are tied with it, and the tie goes to the lower perplexity increase (a difference under QUALITY_RESOLUTION of the
    budget is none), then the simpler precision, then the faster rounds."""
    ok = [r for r in rows if r.role == "candidate" and r.status in ("ok", "predicted")]
    if not ok:
        raise EdgemlError("no language-model build could be made: "
                          + "; ".join(f"{r.name}: {r.reason}" for r in rows if r.role == "candidate"))
    within = [r for r in ok if r.within_budget]
    record = None
    if within and paired:
        chosen, record, reason = _settle(ok, paired, budget)
    elif within:
        chosen, fastest = _fastest(within, budget)
        among = (f"of the {len(within)} build(s) within {budget:.1%} perplexity increase (increase + 1 standard "
                 "error)")
        if chosen is fastest:
            reason = f"the fastest decode ({_rate(chosen):.1f} tokens/s{_where(chosen)}) {among}"
        else:
            reason = (f"{_rate(chosen):.1f} tokens/s{_where(chosen)}, within {FASTER:g}x of the fastest prediction "
                      f"({fastest.name}, {_rate(fastest):.1f} tokens/s): predictions that close are tied, and the tie "
                      f"goes to the lower perplexity increase, then the simpler precision; {among}")
    else:
        chosen = min(ok, key=lambda r: r.metrics["ppl_increase"])
        reason = (f"no build is within {budget:.1%} perplexity increase; shipping the closest, {chosen.name} "
                  f"(+{chosen.metrics['ppl_increase']:.1%}): raise --max-ppl-increase or try another target")
    chosen.selected = True
    return {"candidate": chosen.name, "within_budget": bool(within), "reason": reason,
            "max_ppl_increase": budget, "paired": record}


def _fastest(within: list[Row], budget: float) -> tuple[Row, Row]:
    """The pick and the fastest build. Predictions, with no CI to tell them apart, within FASTER of the fastest are
    tied with it; the tie goes to the lower perplexity increase (by QUALITY_RESOLUTION of the budget), then the
    simpler precision."""
    fastest = max(within, key=_rate)
    if fastest.status != "predicted":
        return fastest, fastest
    tied = [r for r in within if r.status == "predicted" and _rate(r) * FASTER >= _rate(fastest)]
    prefer = _tie_preference(tied, budget)
    return min(tied, key=lambda r: (*prefer(r), -_rate(r))), fastest


def _tie_preference(tied: list[Row], budget: float):
    """The order among tied builds: the lower perplexity increase (a difference under QUALITY_RESOLUTION of the
    budget is none), then the simpler precision."""
    best = min(r.metrics["ppl_increase"] for r in tied)

    def prefer(row: Row) -> tuple:
        increase = row.metrics["ppl_increase"]
        return (0.0 if increase <= best + QUALITY_RESOLUTION * budget else increase,
                PRECISION_ORDER.get(row.precision, len(PRECISION_ORDER)))
    return prefer


def _where(row: Row) -> str:
    return f", predicted for {row.predicted['device']}" if row.status == "predicted" else ""


def _settle(rows: list[Row], paired: dict, budget: float) -> tuple[Row, dict, str]:
    """The pick among the contenders timed in alternating rounds, the record of those rounds, and why."""
    by_name = {r.name: r for r in rows if r.name in paired}
    fastest, versus = versus_fastest(paired)
    tied = [fastest] + [name for name, s in versus.items() if not faster(s)]
    order = _tie_preference([by_name[name] for name in tied], budget)

    def prefer(name: str) -> tuple:
        return (*order(by_name[name]), paired[name]["p50_ms"])

    chosen = min(tied, key=prefer)
    rounds = len(paired[fastest]["round_p50_ms"])
    record = {"rounds": rounds, "fastest": fastest, "tied": sorted(tied, key=prefer), "new_tokens": NEW_TOKENS,
              "rows": {name: {"p50_ms": s["p50_ms"], "p50_ci95_ms": s["p50_ci95_ms"],
                              "round_p50_ms": s["round_p50_ms"],
                              "speedup_of_fastest": None if name == fastest else
                              {"ratio": versus[name]["ratio"], "ci95": versus[name]["ci95"],
                               "faster": faster(versus[name])}}
                       for name, s in paired.items()}}
    within = f"within {budget:.1%} perplexity increase (increase + 1 standard error)"
    against = "; ".join(f"{'tied with' if name in tied else 'faster than'} {name} ({verdict_text(s)})"
                        for name, s in versus.items())
    if chosen == fastest:
        reason = (f"the fastest of the close contenders {within}, each generating {NEW_TOKENS} tokens in "
                  f"{rounds} alternating rounds: {against}")
    else:
        reason = (f"tied with the fastest of the close contenders ({fastest}: {verdict_text(versus[chosen])}) in "
                  f"{rounds} alternating rounds, with the lower perplexity increase or the simpler precision; "
                  f"{within}")
    return by_name[chosen], record, reason
