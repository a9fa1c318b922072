"""Markdown rendering of a run record (the dict in report.json), and the pieces the HTML report shares.

Tables are built once as (header, rows of text cells) and written as markdown here and as HTML
in html.py. Text may carry **bold** and `code`, which both renderings understand.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeml.errors import EdgemlError
from edgeml.measure.evaluate import CONTINUOUS
from edgeml.measure.paired_timing import CLOSE
from edgeml.measure.uncertainty import resolution
from edgeml.report.record import paired_speedup

DASH = "—"
JUDGED = ("ok", "predicted", "needs device")     # rows whose quality was measured here
TOP_LAYERS = 10                                   # per-layer rows in the markdown report
WORST_CLASSES = 5


def load_run(folder: Path) -> tuple[dict, str]:
    """The run record in FOLDER/report.json (the OUT of `edgeml optimize`), and its text as written."""
    if not folder.is_dir():
        raise EdgemlError(f"{folder} is not a folder: give the OUT folder of `edgeml optimize`")
    path = folder / "report.json"
    if not path.is_file():
        raise EdgemlError(f"{folder} has no report.json: give the OUT folder of `edgeml optimize`")
    text = path.read_text()
    try:
        run = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgemlError(f"{path} is not valid JSON ({e}): rerun `edgeml optimize` to write it again") from e
    if not isinstance(run, dict) or not {"rows", "selection", "data", "target"} <= run.keys():
        raise EdgemlError(f"{path} is not the record of an `edgeml optimize` run (prune and distill reports "
                          "are rendered in their report.md)")
    return run, text


def render_markdown(run: dict) -> str:
    rows = run["rows"]
    machine = run["machine"]
    profile = run.get("profile")
    lines = [f"# edgeml: {run['source']['name']} for target `{run['target']}`", ""]
    for paragraph in summary(run):
        lines += [paragraph, ""]

    header, table = candidate_table(run)
    lines += markdown_table(header, [[f"**{r['name']}** ✓" if r["selected"] else cells[0], *cells[1:]]
                                     for r, cells in table])
    if paired_note(run):
        lines += ["", ROUNDS_MARK_NOTE]
    if predicted_note(run):
        lines += ["", predicted_note(run)]
    for note in quality_notes(run):
        lines += ["", note]
    if attempt_notes(run):
        lines += ["", "Builds that needed more than one attempt (each quantizer step's graph is checked; a step that "
                  "breaks it is retried without):", ""] + attempt_notes(run)

    lines += ["", latency_note(machine), ""]
    lines += markdown_table(*latency_table(run))
    if paired_note(run):
        lines += ["", paired_note(run), ""] + markdown_table(*paired_table(run))
    if run.get("device_report"):
        lines += ["", "## Measured on the device", "", device_note(run), ""] + markdown_table(*device_table(run))
    lines += _per_class(run)
    lines += _layer_times(run.get("layer_times"))

    lines += ["", "## Data", ""] + [f"- {n}" for n in run["data"]["notes"]]
    if profile:
        lines += _profile(profile)
    if run["export"]:
        exp = run["export"]
        lines += ["", "## Export and parity", "",
                  f"- exported with torch.onnx.export ({exp['exporter']} exporter)"
                  + (" (from cache)" if exp.get("cached") else "")]
        lines += [f"- {n}" for n in exp["notes"]]
        parity = exp.get("parity")
        if parity:
            lines.append(f"- checked against PyTorch on {parity['samples']} evaluation samples:")
            lines += [f"  - `{o['name']}`: max abs error {o['max_abs_error']:.3g}, max relative "
                      f"{o['max_rel_error']:.3g} (tolerance {o['tolerance']:.3g})" for o in parity["outputs"]]
    lines += _compression(run.get("compression") or {})
    for name, tuning in (run.get("tuning") or {}).items():
        lines += ["", f"## Accuracy budget: {name}", ""] + [f"- {n}" for n in tuning_notes(tuning)]
        if tuning.get("sensitivity"):
            lines += [""] + markdown_table(*sensitivity_table(tuning))
        if tuning.get("trials"):
            lines += [""] + markdown_table(*trials_table(tuning))
    if time_note(run):
        lines += ["", "## Where the time went", "", time_note(run), ""] + markdown_table(*time_table(run))
    lines += ["", "## Candidates", ""]
    lines += [f"- {r['name']}: {r['method']}" for r in rows]
    if run["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run["warnings"]]
    lines += ["", "## Machine", ""] + [f"- {m}" for m in machine_notes(run)] + [""]
    return "\n".join(lines)


def load_device_report(path: Path) -> dict:
    """A device report written by `edgeml profile`."""
    try:
        device = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgemlError(f"cannot read the device report {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(device, dict) or device.get("format") != "edgeml-device-report":
        raise EdgemlError(f"{path} is not a device report: write one with `edgeml profile BUNDLE` on the device")
    return device


def merge_device_report(run: dict, device: dict) -> dict:
    """The run with `device_report` added, when the device timed this run's bundled artifact."""
    bundle = run.get("bundle") or {}
    entry = next((f["sha256"] for f in bundle.get("files", []) if f["path"] == bundle.get("entry")), None)
    timed = device["bundle"]
    if timed["candidate"] != bundle.get("candidate") or timed["entry_sha256"] != entry:
        raise EdgemlError(f"the device report timed {timed['candidate']} ({timed['entry']} sha256 "
                          f"{timed['entry_sha256'][:12]}), not this run's bundle ({bundle.get('candidate')}, "
                          f"sha256 {(entry or '?')[:12]}): profile the bundle of this run")
    return {**run, "device_report": device}


def device_note(run: dict) -> str:
    device = run["device_report"]
    machine = device["machine"]
    return (f"{device['bundle']['candidate']}, this run's bundle, timed by `edgeml profile` on {machine['cpu']} "
            f"({machine['architecture']}, {machine['os']}) with {device['runtime']['name']} "
            f"{device['runtime']['version']}, {device['threads']} thread(s), batch 1, {device['latency']['runs']} "
            f"runs after warm-up, on {device['created']}; input: {device['input']}. The ratio is the device's p50 "
            "divided by the row's.")


def device_table(run: dict) -> tuple[list[str], list[list[str]]]:
    """The device's latency next to the build machine's measurement and the prediction, for the bundled row."""
    device = run["device_report"]["latency"]
    chosen = next(r for r in run["rows"] if r["name"] == run["device_report"]["bundle"]["candidate"])
    header = ["latency", "where", "threads", "p50 ms (95% CI)", "p90 ms", "device p50 / this"]
    lo, hi = device["p50_ci95_ms"]
    table = [["**measured on the device**", run["device_report"]["machine"]["cpu"],
              str(run["device_report"]["threads"]), f"{_ms(device['p50_ms'])} ({_ms(lo)}–{_ms(hi)})",
              _ms(device["p90_ms"]), DASH]]
    if chosen["latency"] is not None:
        built = chosen["latency"]
        lo, hi = built["p50_ci95_ms"]
        table.append(["measured at build time", run["machine"]["cpu"], str(run["machine"]["threads"]),
                      f"{_ms(built['p50_ms'])} ({_ms(lo)}–{_ms(hi)})", _ms(built["p90_ms"]),
                      f"{device['p50_ms'] / built['p50_ms']:.2f}x"])
    predicted = (chosen.get("predicted") or {}).get("ms")
    if predicted is not None:
        table.append([f"predicted ({run['profile']['name']})", run["profile"]["display_name"],
                      str(run["config"]["recipe"]["threads"] or DASH), _ms(predicted), DASH,
                      f"{device['p50_ms'] / predicted:.2f}x"])
    return header, table


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


def summary(run: dict) -> list[str]:
    """The selected candidate and why (and whether the budget was met), as paragraphs."""
    metric = run["data"]["quality_metric"]
    rows = run["rows"]
    selection = run["selection"]
    profile = run.get("profile")
    chosen = next((r for r in rows if r["selected"]), None)
    paragraphs = []
    if chosen and chosen["latency"] is None:
        paragraphs += [
            (f"**Selected: {chosen['name']}** ({chosen['backend']}, {chosen['precision']}): "
             f"{_predicted(chosen)} ms **predicted** for {profile['display_name'] if profile else 'the device'}, "
             f"{metric} {_quality(chosen, metric)} ({_drop_and_ci(chosen, metric, '; ')}); not measured "
             f"here: {chosen['reason']}."),
            f"Why: {selection['reason']}.",
        ]
    elif chosen:
        ref = next(r for r in rows if r["role"] == "reference")
        speedups = [] if chosen is ref else [f"{_speedup(selection, ref, chosen)} vs the original ({ref['backend']})"]
        fp32 = next((r for r in rows if r["role"] == "candidate" and r["backend"] == chosen["backend"]
                     and r["precision"] == "fp32" and r["status"] == "ok" and r is not chosen), None)
        if fp32:
            speedups.append(f"{_speedup(selection, fp32, chosen)} vs {fp32['name']}")
        rounds = _rounds_p50(run, chosen)
        p50 = f"{_ms(chosen['latency']['p50_ms'])} ms" if rounds is None else \
            f"{_ms(rounds)} ms in the alternating rounds"
        paragraphs += [
            (f"**Selected: {chosen['name']}** ({chosen['backend']} {chosen['backend_version'] or ''}, "
             f"{chosen['precision']}): p50 {p50}, "
             f"{metric} {_quality(chosen, metric)} ({_drop_and_ci(chosen, metric, '; ')})"
             + (f"; speed-up (p50) {', '.join(speedups)}." if speedups else "; your model, unchanged.")),
            f"Why: {selection['reason']}.",
        ]
    if not selection.get("within_budget"):
        paragraphs.append(f"> **The accuracy budget was not met.** {selection['reason']}.")
    return paragraphs


def paired_note(run: dict) -> str | None:
    """What the close contenders' second timing was, when there was one (records before it have none)."""
    paired = run["selection"].get("paired")
    if not paired:
        return None
    tied = [name for name in paired["tied"] if name != paired["fastest"]]
    clearly = paired.get("clearly_faster_above")
    return (f"The rows within the budget whose p50 was within {CLOSE:g}x of the fastest were timed again together, in "
            f"{paired['rounds']} alternating rounds (p50: the median of the rounds' p50s; speed-up: the median of the "
            f"rounds' own ratios; 95% CIs by a bootstrap over "
            f"rounds). {paired['fastest']} counts as faster than a row when the lower end of its speed-up's "
            f"CI is above {paired['faster_above']:.2f}x"
            + (f", or when its median speed-up is above {clearly:.2f}x however wide the CI" if clearly else "")
            + (f"; tied with it: {', '.join(tied)}." if tied else f"; no row is tied with {paired['fastest']}."))


def paired_table(run: dict) -> tuple[list[str], list[list[str]]]:
    paired = run["selection"]["paired"]
    header = ["contender", "p50 ms in rounds (95% CI)", f"speed-up of {paired['fastest']} (95% CI)", "verdict"]
    rows = []
    for name, r in sorted(paired["rows"].items(), key=lambda kv: kv[1]["p50_ms"]):
        s = r["speedup_of_fastest"]
        lo, hi = r["p50_ci95_ms"]
        rows.append([name, f"{_ms(r['p50_ms'])} ({_ms(lo)}–{_ms(hi)})",
                     DASH if s is None else f"{s['ratio']:.2f}x ({s['ci95'][0]:.2f}–{s['ci95'][1]:.2f})",
                     ", ".join(["selected"] * (name == run["selection"]["candidate"])
                               + ["fastest" if name == paired["fastest"] else "tied" if name in paired["tied"]
                                  else "slower"])])
    return header, rows


ROUNDS_MARK_NOTE = ("p50 marked (rounds): the row was one of the close contenders timed again together, and this is "
                    "its p50 in those alternating rounds, the number that decided; the latency table below keeps "
                    "its first measurement.")


def _rounds_p50(run: dict, r: dict) -> float | None:
    """`r`'s p50 in the alternating rounds of the close contenders, when it was timed there."""
    timed = ((run["selection"].get("paired") or {}).get("rows") or {}).get(r["name"])
    return None if timed is None else timed["p50_ms"]


def _p50_cell(run: dict, r: dict) -> str:
    """`r`'s p50: from the alternating rounds when it was timed there (marked), else its own measurement."""
    rounds = _rounds_p50(run, r)
    return _ms(r["latency"]["p50_ms"]) if rounds is None else f"{_ms(rounds)} (rounds)"


def time_note(run: dict) -> str | None:
    """How long the run's steps took in all (None for a record without steps)."""
    steps = run.get("steps") or []
    total = sum(step["seconds"] for step in steps)
    return f"{total:.1f} s in {len(steps)} steps, the longest first:" if total else None


def time_table(run: dict) -> tuple[list[str], list[list[str]]]:
    """Where the run's time went: each step's seconds and share, the longest first."""
    steps = run["steps"]
    total = sum(step["seconds"] for step in steps)
    return ["step", "seconds", "share"], [[step["step"], f"{step['seconds']:.1f}", f"{step['seconds'] / total:.0%}"]
                                          for step in sorted(steps, key=lambda step: -step["seconds"])]


def budget_note(run: dict) -> str:
    metric, budget = run["data"]["quality_metric"], run["selection"]["max_accuracy_drop"]
    return (f"budget: {metric} may drop by at most {_drop(budget, metric).lstrip('+')} against the original "
            "(drop = original - candidate)")


def candidate_table(run: dict) -> tuple[list[str], list[tuple[dict, list[str]]]]:
    """Header and (row, cells) of the candidate table; the name cell is the plain name."""
    metric = run["data"]["quality_metric"]
    predicted = any(r.get("predicted") for r in run["rows"])
    header = ["candidate", "backend", "precision", metric, "drop", "p50 ms (measured here)", "p90 ms"]
    if predicted:
        header.append(f"p50 ms (predicted, {run['profile']['name']})")
    header += ["size MB", "status"]
    table = []
    for r in run["rows"]:
        judged = r["status"] in JUDGED
        measured = r["latency"] is not None
        cells = [
            r["name"], r["backend"], r["precision"],
            _quality(r, metric) if judged else DASH,
            (DASH if r["role"] == "reference" else _drop_cell(r, metric)) if judged else DASH,
            _p50_cell(run, r) if measured else DASH,
            _ms(r["latency"]["p90_ms"]) if measured else DASH,
        ]
        if predicted:
            cells.append(_predicted(r))
        cells += [_mb(r["size_bytes"]) if r["size_bytes"] is not None else DASH, _status(r)]
        table.append((r, cells))
    return header, table


def quality_notes(run: dict) -> list[str]:
    """Notes under the candidate table on how far its drops can be trusted: the evaluation set too coarse
    for the budget (a warning), the selected row's drop interval straddling the budget, and the changed
    top-1 predictions behind the selected row's drop (with the exact McNemar p for accuracy).
    Records written before drops had intervals get none of them."""
    metric, budget = run["data"]["quality_metric"], run["selection"].get("max_accuracy_drop")
    tests = [r["quality_test"] for r in run["rows"] if r.get("quality_test")]
    notes = []
    coarse = resolution(tests[0]["samples"], metric, budget) if tests and budget is not None else None
    if coarse:
        notes.append(f"> **Too few evaluation samples for the budget:** {coarse}.")
    chosen = next((r for r in run["rows"] if r["selected"]), None)
    if chosen is None or chosen["status"] not in JUDGED or chosen["role"] == "reference":
        return notes                                # nothing to say of the original against itself
    ci, test = chosen.get("quality_drop_ci95"), chosen.get("quality_test")
    if ci and budget is not None and ci[0] <= budget < ci[1]:
        notes.append(f"The 95% CI of {chosen['name']}'s drop ({_interval(ci, metric)}) contains the budget "
                     f"({_drop(budget, metric).lstrip('+')}): these {_samples(test)}evaluation samples cannot "
                     "tell whether it is within; more samples narrow the interval.")
    if test and test.get("worse") is not None:
        n = test["samples"]
        if test["worse"] == test["better"] == 0:
            notes.append(f"{chosen['name']} vs the original: no top-1 verdict changed on these {n} evaluation samples, "
                         f"so the drop's interval is 0 to 0; a true change rate as high as {300 / n:.2g} % (3/{n}) "
                         "would still show none 1 time in 20.")
        elif metric == "accuracy":
            p = test.get("mcnemar_p")
            notes.append(f"{chosen['name']} vs the original on {n} evaluation samples: {test['worse']} became wrong, "
                         f"{test['better']} became right"
                         + (f"; exact McNemar {_p(p)} (the chance of a split at least this uneven if both "
                            "were equally accurate)" if p is not None else "") + ".")
        else:
            notes.append(f"{chosen['name']} vs the original: the top-1 class changed on {test['worse']} of {n} "
                         "evaluation samples.")
    return notes


def attempt_notes(run: dict) -> list[str]:
    """One line per candidate whose build's first attempt failed: the attempt that worked, and why each earlier
    one failed (or, for a failed row, its reason already says)."""
    lines = []
    for r in run["rows"]:
        tried = r.get("attempts") or []
        if len(tried) > 1:
            lines.append(f"- {r['name']}: {tried[-1]}; before: " + "; ".join(tried[:-1]))
    return lines


def predicted_note(run: dict) -> str | None:
    profile = run.get("profile")
    if not any(r.get("predicted") for r in run["rows"]):
        return None
    return (f"Predicted latencies are a roofline estimate for {profile['display_name']} (`{profile['name']}`): "
            "per-layer MACs and bytes moved, from the ONNX graph, against the profile's peak compute and "
            "memory bandwidth with its efficiency factors. They are not measurements; see the docs for the "
            "method's measured error.")


def latency_note(machine: dict) -> str:
    return (f"Latency is measured on this machine ({machine['cpu']}, {machine['threads']} thread(s)), "
            "batch 1, after warm-up; p50 with its bootstrap 95% confidence interval below.")


def latency_table(run: dict) -> tuple[list[str], list[list[str]]]:
    header = ["candidate", "p50 ms (95% CI)", "p99 ms", "runs", "inferences/s", "peak memory MB", "build s"]
    table = []
    for r in run["rows"]:
        if r["latency"] is None:
            continue
        lat = r["latency"]
        lo, hi = lat["p50_ci95_ms"]
        table.append([
            r["name"], f"{_ms(lat['p50_ms'])} ({_ms(lo)}–{_ms(hi)})", _ms(lat["p99_ms"]),
            str(lat["runs"]), f"{lat['throughput_per_s']:.0f}",
            _mb(r["peak_memory_bytes"]) if r["peak_memory_bytes"] is not None else "not measured",
            (f"{r['build_seconds']:.1f}" if r["build_seconds"] is not None else DASH)
            + (" (from cache)" if r.get("cached") else ""),
        ])
    return header, table


def per_class(run: dict) -> dict | None:
    """Per-class accuracy of the selected candidate against the reference (None without labels).

    A class is flagged when its drop is more than twice the mean drop over the classes, and above 0.
    """
    chosen = next((r for r in run["rows"] if r["selected"]), None)
    ref = next(r for r in run["rows"] if r["role"] == "reference")
    if chosen is None or "per_class" not in chosen["metrics"] or "per_class" not in ref["metrics"]:
        return None
    before, after = ref["metrics"]["per_class"], chosen["metrics"]["per_class"]
    drops = {c: before[c] - after[c] for c in before}
    mean = sum(drops.values()) / len(drops)
    classes = [{"class": c, "before": before[c], "after": after[c], "drop": drops[c],
                "flagged": drops[c] > max(2 * mean, 0.0)} for c in sorted(before, key=int)]
    return {"row": chosen["name"], "mean_drop": mean, "classes": classes}


def per_class_note(result: dict) -> str:
    flagged = [c for c in result["classes"] if c["flagged"]]
    listed = ", ".join(f"**class {c['class']}** ({_percent(c['before'])} -> {_percent(c['after'])}, drop "
                       f"{_drop(c['drop'], 'accuracy')})" for c in flagged)
    return (f"{result['row']} against the original on the evaluation labels, {len(result['classes'])} classes, "
            f"mean drop {_drop(result['mean_drop'], 'accuracy')}. A class is flagged when its drop is more than "
            "twice the mean drop, and above 0: " + (listed or "none is") + ".")


def per_class_table(result: dict, classes: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["class", "original", result["row"], "drop", "flagged"]
    return header, [[c["class"], _percent(c["before"]), _percent(c["after"]), _drop(c["drop"], "accuracy"),
                     "yes" if c["flagged"] else ""] for c in classes]


def layer_note(layer_times: dict) -> str:
    if layer_times["layers"] is None:
        return (f"Not available for {layer_times['artifact']} ({layer_times['backend']}): "
                f"{layer_times['reason']}.")
    return (f"{layer_times['artifact']}, ONNX Runtime's profiler, {layer_times['threads']} thread(s), mean of "
            f"{layer_times['runs']} runs of the latency sample: kernels take {_ms(layer_times['kernels_ms'])} ms "
            f"of a {_ms(layer_times['run_ms'])} ms profiled run (the profiler adds its own overhead; the rest is "
            "the session's). Share = part of the kernel time; layers ONNX Runtime added to the graph (layout "
            "conversions) are marked.")


def layer_table(layer_times: dict, top: int) -> tuple[list[str], list[list[str]]]:
    header = ["layer", "op", "ms per run", "share"]
    return header, [[layer["name"] + (" (added by ONNX Runtime)" if layer["added_by_runtime"] else ""),
                     layer["op"], _layer_ms(layer["ms"]), f"{layer['share'] * 100:.1f} %"]
                    for layer in layer_times["layers"][:top]]


def op_table(layer_times: dict) -> tuple[list[str], list[list[str]]]:
    header = ["op", "layers", "ms per run", "share"]
    return header, [[o["op"], str(o["count"]), _layer_ms(o["ms"]), f"{o['share'] * 100:.1f} %"]
                    for o in layer_times["ops"]]


def tuning_notes(tuning: dict) -> list[str]:
    """What the accuracy-budget search did; a search that did not run has only a `reason`."""
    qat = [_qat_note(tuning["quantization_aware"])] if tuning.get("quantization_aware") else []
    if "best" not in tuning:
        return [f"plain INT8 broke the budget on the evaluation data; no search ran: {tuning['reason']}"] + qat
    best = tuning["best"]
    metric = tuning["metric"]
    calibration = f" and {best['calibration']}" if best.get("calibration") else ""
    in_float = (f"{len(best['reverted'])} quantizer(s) reverted to fp32" if best.get("reverted") else
                f"{len(best['excluded'])} layer(s) in fp32")
    outcome = (f"met the budget with {in_float}{calibration} (row {tuning['row']})"
               if tuning["met"] and tuning["row"] else
               "met the budget on the calibration data with every layer in INT8 (no change)" if tuning["met"] else
               f"**could not meet the budget** ({tuning['stopped']}); the best it found drops "
               f"{_drop(best['drop'], metric)} on the calibration data")
    cached = tuning.get("cached_builds")
    return [(f"plain INT8 broke the budget on the evaluation data; the search {outcome}, "
             f"{len(tuning['trials'])} configuration(s) tried in {tuning['seconds']:.1f} s"
             + (f" ({cached} build(s) from cache)" if cached else "")),
            f"{tuning['data']}; {metric} there"] + ([_aim_note(tuning, metric)] if tuning.get("aim") else []) + (
        [f"**Too few samples to resolve the budget:** {tuning['resolution']}"]
        if tuning.get("resolution") else []) + (
        [_control_note(tuning["accuracy_control"], metric)] if tuning.get("accuracy_control") else []) + (
        [_ranking_note(tuning["ranking"])] if tuning.get("ranking") else []) + [
        f"{f.get('step') or 'calibration ' + f['calibration']} failed, left out: {f['error']}"
        for f in tuning.get("failed") or []] + [
        _contest_note(c) for c in tuning.get("contests") or []] + qat


def _aim_note(tuning: dict, metric: str) -> str:
    """Why the search aimed below the budget on the tuning data (edgeml.compress.quantize.accuracy.aimed)."""
    return (f"aimed at a drop of at most {_drop(tuning['aim'], metric).lstrip('+')} there, below the budget: "
            "plain INT8 dropped "
            f"{_drop(tuning['trials'][0]['drop'], metric)} there and {_drop(tuning['evaluation_drop'], metric)} on "
            "the evaluation data, and a configuration must meet the budget on data like that too")


def _ranking_note(ranking: dict) -> str:
    """How the search ranked the quantizers (edgeml.compress.quantize.accuracy._revert_quantizers)."""
    return (f"quantizers: {ranking['quantizers']} in the fully quantized build, {ranking['ranked']} ranked by the "
            f"output error each removes when reverted alone, on {ranking['samples']} tuning samples (output error "
            f"with all quantized: {ranking['output_error']:.4f})")


def _contest_note(c: dict) -> str:
    """One decision of the search on speed, from the two builds timed together (edgeml.pipeline.tuning.TrialTiming)."""
    verdict = {"ci": "faster (its CI is above the margin)", "median": "faster (its median is above the margin)",
               None: "not faster"}[c["faster"]]
    return (f"timed together: {c['trial']} against {c['versus']}: {c['ratio']:.2f}x (95% CI {c['ci95'][0]:.2f}–"
            f"{c['ci95'][1]:.2f}, {c['rounds']} rounds; p50 {_ms(c['trial_p50_ms'])} against "
            f"{_ms(c['versus_p50_ms'])} ms): {verdict}")


def _qat_note(qat: dict) -> str:
    """The last resort after the search (edgeml.pipeline.quantization_aware)."""
    if "row" not in qat:
        return f"quantization-aware distillation: {qat['stopped']}"
    return (f"quantization-aware distillation: row {qat['row']}, every layer in INT8, "
            f"{'within' if qat['met'] else 'over'} the budget on the evaluation data, {qat['seconds']:.1f} s"
            + (" (from cache)" if qat["cached"] else "") + "".join(f"; {n}" for n in qat["notes"]))


def _control_note(control: dict, metric: str) -> str:
    """The quantizer's own accuracy control, run next to the search (edgeml.pipeline.repair)."""
    if "drop" not in control:
        return f"{control['method']}, next to the search: no result ({control['stopped']})"
    return (f"{control['method']}, next to the search on the same data: {len(control['excluded'])} layer(s) in fp32, "
            f"drop {_drop(control['drop'], metric)} ({'within' if control['met'] else 'over'} the budget), "
            f"{_ms(control['p50_ms'])} ms (short run), {control['seconds']:.1f} s; "
            + ("it measured better than the search and makes the row" if control["chosen"]
               else "the search's result measured better"))


def sensitivity_table(tuning: dict) -> tuple[list[str], list[list[str]]]:
    """One build per layer (its quality drop alone in INT8), or one pass (its local error: how much the
    relative error of its output exceeds that of its input in the fully quantized model)."""
    metric = tuning["metric"]
    if "gain" in tuning["sensitivity"][0]:
        header = ["quantizer", "what it quantizes", "output error with it alone reverted", "output error it removes"]
        return header, [[s["quantizer"], s["what"], f"{s['output_error']:.4f}", f"{s['gain']:+.4f}"]
                        for s in sorted(tuning["sensitivity"], key=lambda s: -s["gain"])]
    if "local_error" in tuning["sensitivity"][0]:
        header = ["layer", "op", "local error in the fully quantized model (output minus input relative error)"]
        return header, [[s["layer"], s["op"], f"{s['local_error']:+.4f}"]
                        for s in sorted(tuning["sensitivity"], key=lambda s: -s["local_error"])]
    header = ["layer", "op", f"{metric} drop when only this layer is INT8"]
    return header, [[s["layer"], s["op"], _drop(s["drop_when_only_this_is_int8"], metric)]
                    for s in sorted(tuning["sensitivity"], key=lambda s: -s["drop_when_only_this_is_int8"])]


def trials_table(tuning: dict) -> tuple[list[str], list[list[str]]]:
    metric = tuning["metric"]
    header = ["trial", "layers in fp32", f"{metric} drop", "p50 ms (short run)", "Pareto"]
    rows = [[t["purpose"], str(len(t["excluded"])), _drop(t["drop"], metric), _ms(t["p50_ms"]),
             "yes" if t["pareto"] else ""] for t in tuning["trials"]]
    if any(t.get("timed_as") for t in tuning["trials"]):      # timed in several runtime configs: say which won
        header.insert(4, "fastest run as")
        for row, t in zip(rows, tuning["trials"]):
            row.insert(4, t.get("timed_as", ""))
    if any(t.get("reverted") for t in tuning["trials"]):      # quantizers reverted: how many
        header.insert(2, "quantizers reverted")
        for row, t in zip(rows, tuning["trials"]):
            row.insert(2, str(len(t.get("reverted") or ())))
    if any(t.get("calibration") for t in tuning["trials"]):   # alternative calibrations tried: which each build used
        header.insert(2, "calibration")
        for row, t in zip(rows, tuning["trials"]):
            row.insert(2, t.get("calibration") or "default")
    return header, rows


def machine_notes(run: dict) -> list[str]:
    machine = run["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in run["packages"].items() if v)
    return [(f"{machine['cpu']} ({machine['architecture']}), {machine['logical_cores']} logical cores, "
             f"{machine['threads']} thread(s) used"),
            f"{machine['os']}, Python {machine['python']}",
            packages,
            f"edgeml {run['edgeml_version']}, {run['created']}"]


def _per_class(run: dict) -> list[str]:
    result = per_class(run)
    if result is None:
        return []
    lines = ["", "## Per-class accuracy", "", per_class_note(result)]
    worst = sorted((c for c in result["classes"] if c["drop"] > 0), key=lambda c: -c["drop"])[:WORST_CLASSES]
    if not worst:
        return lines + ["", "No class lost accuracy."]
    return lines + ["", f"The {len(worst)} largest drops:", ""] + markdown_table(*per_class_table(result, worst))


def _layer_times(layer_times: dict | None) -> list[str]:
    if layer_times is None:
        return []
    lines = ["", "## Per-layer time", "", layer_note(layer_times)]
    if layer_times["layers"] is not None:
        shown = min(TOP_LAYERS, len(layer_times["layers"]))
        lines += ["", f"Top {shown} of {len(layer_times['layers'])} layers by time:", ""]
        lines += markdown_table(*layer_table(layer_times, TOP_LAYERS))
    return lines


def _profile(profile: dict) -> list[str]:
    peaks = ", ".join(f"{p} {v:,.0f}" for p, v in profile["peak_gops"].items())
    runtimes = ", ".join(f"{k} {v}" for k, v in profile["runtimes"].items())
    return ["", "## Device profile", "",
            (f"- {profile['display_name']} (`{profile['name']}`, target {profile['target']}); computes in "
             f"{', '.join(profile['precisions'])}; DLA cores: {profile['dla_cores']}"),
            (f"- peak GOPS: {peaks}; memory bandwidth {profile['memory_bandwidth_gbs']:g} GB/s; memory "
             f"{profile['memory_gb']:g} GB"),
            f"- runtimes: {runtimes or DASH}",
            *[f"- source: {s}" for s in profile["sources"]]]


def _compression(compression: dict) -> list[str]:
    lines = []
    prune = compression.get("prune")
    if prune:
        lines += ["", "## Pruning", "",
                  (f"- MACs {prune['macs_before']:,} -> {prune['macs_after']:,} ({prune['macs_ratio']:.2f}x fewer), "
                   f"parameters {prune['params_before']:,} -> {prune['params_after']:,} "
                   f"({prune['params_ratio']:.2f}x fewer)")]
        lines += [f"- {n}" for n in prune["notes"]]
        if prune["kind"] == "structured":
            lines += ["", "| layer | kind | input channels | output channels |", "|---|---|---|---|"]
            lines += [f"| {x['name']} | {x['kind']} | {x['in_before']} -> {x['in_after']} | "
                      f"{x['out_before']} -> {x['out_after']} |" for x in prune["layers"]]
    distill = compression.get("distill")
    if distill:
        curve = distill["curve"]
        lines += ["", "## Distillation", "",
                  f"- {len(curve)} epoch(s), stopped by {distill['stopped']}; validation {distill['metric']} "
                  f"{distill['initial_validation']:.4f} before, best {distill['best_validation']:.4f} at epoch "
                  f"{distill['best_epoch']} (those weights are kept); {distill['seconds']:.1f} s"
                  + ("; label-free (the original model's outputs were the only targets)"
                     if distill["label_free"] else "")]
        lines += [f"- {n}" for n in distill["notes"]]
        lines += ["", f"| epoch | train loss | validation {distill['metric']} | validation soft-target loss |",
                  "|---|---|---|---|"]
        lines += [f"| {c['epoch']} | {c['train_loss']:.4f} | {c['validation']:.4f} | {c['validation_loss']:.4f} |"
                  for c in curve]
    return lines


def _status(r: dict) -> str:
    """measured / predicted / needs device / failed: why (and skipped / unavailable: why)."""
    if r["status"] not in JUDGED:
        return f"{r['status']}: {r['reason']}"
    status = "measured" if r["status"] == "ok" else r["status"]
    if r["role"] == "reference":
        return f"{status}, reference"
    if r["role"] == "stage":
        return f"{status}, PyTorch stage"
    return f"{status}, " + ("selected" if r["selected"] else "within budget" if r["within_budget"] else "over budget")


def _predicted(r: dict) -> str:
    ms = (r.get("predicted") or {}).get("ms")
    return DASH if ms is None else _ms(ms)


def _quality(r: dict, metric: str) -> str:
    value = r["metrics"][metric]
    return f"{value:.4f}" if metric in CONTINUOUS else _percent(value)


def _percent(value: float) -> str:
    return f"{value * 100:.2f} %"


def _drop(drop: float, metric: str) -> str:
    return f"{drop:+.4f}" if metric in CONTINUOUS else f"{drop * 100:+.2f} pt"


def _drop_cell(r: dict, metric: str) -> str:
    """The drop, with its 95% CI when the record has one: +1.25 pt (95% CI +0.31 to +2.19 pt)."""
    return _drop_and_ci(r, metric, " (", ")").removeprefix("drop ")


def _drop_and_ci(r: dict, metric: str, sep: str, end: str = "") -> str:
    ci = r.get("quality_drop_ci95")
    text = f"drop {_drop(r['quality_drop'], metric)}"
    return text + (f"{sep}95% CI {_interval(ci, metric)}{end}" if ci else "")


def _interval(ci: list[float], metric: str) -> str:
    lo, hi = ci
    if metric in CONTINUOUS:
        return f"{lo:+.4f} to {hi:+.4f}"
    return f"{lo * 100:+.2f} to {hi * 100:+.2f} pt"


def _samples(test: dict | None) -> str:
    return f"{test['samples']} " if test else ""


def _p(p: float) -> str:
    return f"p = {p:.3g}" if p >= 0.001 else "p < 0.001"


def _ratio(base: dict, chosen: dict) -> str:
    return f"{base['latency']['p50_ms'] / chosen['latency']['p50_ms']:.2f}x"


def _speedup(selection: dict, base: dict, chosen: dict) -> str:
    """`chosen`'s speed-up over `base`: from the selection's alternating rounds when both were timed there (the
    careful measurement, which decided), else from the candidate table's p50s, each timed once, at its own time."""
    timed = paired_speedup(selection, base["name"])
    if timed is None:
        return _ratio(base, chosen)
    low, high = timed["ci95"]
    return f"{timed['ratio']:.2f}x (95% CI {low:.2f}–{high:.2f}, timed together)"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _layer_ms(value: float) -> str:
    """Three significant digits: single layers of small models take microseconds."""
    return f"{value:.3g}"


def _mb(value: int) -> str:
    return f"{value / 1e6:.2f}"
