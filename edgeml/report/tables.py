"""The report's tables and paragraphs, built from the run record (the dict in report.json) once for both
renderings, markdown.py and html.py: a table is (header, rows of text cells), and text may carry **bold** and
`code`, which both understand."""

from __future__ import annotations

from edgeml.measure.paired_timing import CLOSE
from edgeml.measure.uncertainty import resolution
from edgeml.report.format import DASH, drop, interval, layer_ms, mb, ms, p_value, percent, quality
from edgeml.report.record import paired_speedup

JUDGED = ("ok", "predicted", "needs device")     # rows whose quality was measured here


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
             f"{metric} {quality(chosen['metrics'][metric], metric)} ({_drop_and_ci(chosen, metric, '; ')}); "
             f"not measured here: {chosen['reason']}."),
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
        p50 = f"{ms(chosen['latency']['p50_ms'])} ms" if rounds is None else \
            f"{ms(rounds)} ms in the alternating rounds"
        paragraphs += [
            (f"**Selected: {chosen['name']}** ({chosen['backend']} {chosen['backend_version'] or ''}, "
             f"{chosen['precision']}): p50 {p50}, "
             f"{metric} {quality(chosen['metrics'][metric], metric)} ({_drop_and_ci(chosen, metric, '; ')})"
             + (f"; speed-up (p50) {', '.join(speedups)}." if speedups else "; your model, unchanged.")),
            f"Why: {selection['reason']}.",
        ]
    if not selection.get("within_budget"):
        paragraphs.append(f"> **The accuracy budget was not met.** {selection['reason']}.")
    return paragraphs


def _speedup(selection: dict, base: dict, chosen: dict) -> str:
    """`chosen`'s speed-up over `base`: from the selection's alternating rounds when both were timed there (the
    careful measurement, which decided), else from the candidate table's p50s, each timed once, at its own time."""
    timed = paired_speedup(selection, base["name"])
    if timed is None:
        return _ratio(base, chosen)
    low, high = timed["ci95"]
    return f"{timed['ratio']:.2f}x (95% CI {low:.2f}–{high:.2f}, timed together)"


def _ratio(base: dict, chosen: dict) -> str:
    return f"{base['latency']['p50_ms'] / chosen['latency']['p50_ms']:.2f}x"


def _drop_and_ci(r: dict, metric: str, sep: str, end: str = "") -> str:
    ci = r.get("quality_drop_ci95")
    text = f"drop {drop(r['quality_drop'], metric)}"
    return text + (f"{sep}95% CI {interval(ci, metric)}{end}" if ci else "")


def _drop_cell(r: dict, metric: str) -> str:
    """The drop, with its 95% CI when the record has one: +1.25 pt (95% CI +0.31 to +2.19 pt)."""
    return _drop_and_ci(r, metric, " (", ")").removeprefix("drop ")


def budget_note(run: dict) -> str:
    metric, budget = run["data"]["quality_metric"], run["selection"]["max_accuracy_drop"]
    return (f"budget: {metric} may drop by at most {drop(budget, metric).lstrip('+')} against the original "
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
            quality(r["metrics"][metric], metric) if judged else DASH,
            (DASH if r["role"] == "reference" else _drop_cell(r, metric)) if judged else DASH,
            _p50_cell(run, r) if measured else DASH,
            ms(r["latency"]["p90_ms"]) if measured else DASH,
        ]
        if predicted:
            cells.append(_predicted(r))
        cells += [mb(r["size_bytes"]) if r["size_bytes"] is not None else DASH, _status(r)]
        table.append((r, cells))
    return header, table


def _p50_cell(run: dict, r: dict) -> str:
    """`r`'s p50: from the alternating rounds when it was timed there (marked), else its own measurement."""
    rounds = _rounds_p50(run, r)
    return ms(r["latency"]["p50_ms"]) if rounds is None else f"{ms(rounds)} (rounds)"


def _rounds_p50(run: dict, r: dict) -> float | None:
    """`r`'s p50 in the alternating rounds of the close contenders, when it was timed there."""
    timed = ((run["selection"].get("paired") or {}).get("rows") or {}).get(r["name"])
    return None if timed is None else timed["p50_ms"]


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
    value = (r.get("predicted") or {}).get("ms")
    return DASH if value is None else ms(value)


ROUNDS_MARK_NOTE = ("p50 marked (rounds): the row was one of the close contenders timed again together, and this is "
                    "its p50 in those alternating rounds, the number that decided; the latency table below keeps "
                    "its first measurement.")


def predicted_note(run: dict) -> str | None:
    profile = run.get("profile")
    if not any(r.get("predicted") for r in run["rows"]):
        return None
    return (f"Predicted latencies are a roofline estimate for {profile['display_name']} (`{profile['name']}`): "
            "per-layer MACs and bytes moved, from the ONNX graph, against the profile's peak compute and "
            "memory bandwidth with its efficiency factors. They are not measurements; see the docs for the "
            "method's measured error.")


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
        notes.append(f"The 95% CI of {chosen['name']}'s drop ({interval(ci, metric)}) contains the budget "
                     f"({drop(budget, metric).lstrip('+')}): these {_samples(test)}evaluation samples cannot "
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
                         + (f"; exact McNemar {p_value(p)} (the chance of a split at least this uneven if both "
                            "were equally accurate)" if p is not None else "") + ".")
        else:
            notes.append(f"{chosen['name']} vs the original: the top-1 class changed on {test['worse']} of {n} "
                         "evaluation samples.")
    return notes


def _samples(test: dict | None) -> str:
    return f"{test['samples']} " if test else ""


def attempt_notes(run: dict) -> list[str]:
    """One line per candidate whose build's first attempt failed: the attempt that worked, and why each earlier
    one failed (or, for a failed row, its reason already says)."""
    lines = []
    for r in run["rows"]:
        tried = r.get("attempts") or []
        if len(tried) > 1:
            lines.append(f"- {r['name']}: {tried[-1]}; before: " + "; ".join(tried[:-1]))
    return lines


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
            r["name"], f"{ms(lat['p50_ms'])} ({ms(lo)}–{ms(hi)})", ms(lat["p99_ms"]),
            str(lat["runs"]), f"{lat['throughput_per_s']:.0f}",
            mb(r["peak_memory_bytes"]) if r["peak_memory_bytes"] is not None else "not measured",
            (f"{r['build_seconds']:.1f}" if r["build_seconds"] is not None else DASH)
            + (" (from cache)" if r.get("cached") else ""),
        ])
    return header, table


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
        rows.append([name, f"{ms(r['p50_ms'])} ({ms(lo)}–{ms(hi)})",
                     DASH if s is None else f"{s['ratio']:.2f}x ({s['ci95'][0]:.2f}–{s['ci95'][1]:.2f})",
                     ", ".join(["selected"] * (name == run["selection"]["candidate"])
                               + ["fastest" if name == paired["fastest"] else "tied" if name in paired["tied"]
                                  else "slower"])])
    return header, rows


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
              str(run["device_report"]["threads"]), f"{ms(device['p50_ms'])} ({ms(lo)}–{ms(hi)})",
              ms(device["p90_ms"]), DASH]]
    if chosen["latency"] is not None:
        built = chosen["latency"]
        lo, hi = built["p50_ci95_ms"]
        table.append(["measured at build time", run["machine"]["cpu"], str(run["machine"]["threads"]),
                      f"{ms(built['p50_ms'])} ({ms(lo)}–{ms(hi)})", ms(built["p90_ms"]),
                      f"{device['p50_ms'] / built['p50_ms']:.2f}x"])
    predicted = (chosen.get("predicted") or {}).get("ms")
    if predicted is not None:
        table.append([f"predicted ({run['profile']['name']})", run["profile"]["display_name"],
                      str(run["config"]["recipe"]["threads"] or DASH), ms(predicted), DASH,
                      f"{device['p50_ms'] / predicted:.2f}x"])
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
    listed = ", ".join(f"**class {c['class']}** ({percent(c['before'])} -> {percent(c['after'])}, drop "
                       f"{drop(c['drop'], 'accuracy')})" for c in flagged)
    return (f"{result['row']} against the original on the evaluation labels, {len(result['classes'])} classes, "
            f"mean drop {drop(result['mean_drop'], 'accuracy')}. A class is flagged when its drop is more than "
            "twice the mean drop, and above 0: " + (listed or "none is") + ".")


def per_class_table(result: dict, classes: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["class", "original", result["row"], "drop", "flagged"]
    return header, [[c["class"], percent(c["before"]), percent(c["after"]), drop(c["drop"], "accuracy"),
                     "yes" if c["flagged"] else ""] for c in classes]


def layer_note(layer_times: dict) -> str:
    if layer_times["layers"] is None:
        return (f"Not available for {layer_times['artifact']} ({layer_times['backend']}): "
                f"{layer_times['reason']}.")
    return (f"{layer_times['artifact']}, ONNX Runtime's profiler, {layer_times['threads']} thread(s), mean of "
            f"{layer_times['runs']} runs of the latency sample: kernels take {ms(layer_times['kernels_ms'])} ms "
            f"of a {ms(layer_times['run_ms'])} ms profiled run (the profiler adds its own overhead; the rest is "
            "the session's). Share = part of the kernel time; layers ONNX Runtime added to the graph (layout "
            "conversions) are marked.")


def layer_table(layer_times: dict, top: int) -> tuple[list[str], list[list[str]]]:
    header = ["layer", "op", "ms per run", "share"]
    return header, [[layer["name"] + (" (added by ONNX Runtime)" if layer["added_by_runtime"] else ""),
                     layer["op"], layer_ms(layer["ms"]), f"{layer['share'] * 100:.1f} %"]
                    for layer in layer_times["layers"][:top]]


def op_table(layer_times: dict) -> tuple[list[str], list[list[str]]]:
    header = ["op", "layers", "ms per run", "share"]
    return header, [[o["op"], str(o["count"]), layer_ms(o["ms"]), f"{o['share'] * 100:.1f} %"]
                    for o in layer_times["ops"]]


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


def machine_notes(run: dict) -> list[str]:
    machine = run["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in run["packages"].items() if v)
    return [(f"{machine['cpu']} ({machine['architecture']}), {machine['logical_cores']} logical cores, "
             f"{machine['threads']} thread(s) used"),
            f"{machine['os']}, Python {machine['python']}",
            packages,
            f"edgeml {run['edgeml_version']}, {run['created']}"]

