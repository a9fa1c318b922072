"""The accuracy-budget search's section of the report (run["tuning"]): its notes and its sensitivity and trial
tables, shared by the markdown and the HTML report."""

from __future__ import annotations

from edgeml.compress.quantize.accuracy import MARGIN_SE
from edgeml.report.format import drop, ms


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
               f"{drop(best['drop'], metric)} on the calibration data")
    cached = tuning.get("cached_builds")
    return [(f"plain INT8 broke the budget on the evaluation data; the search {outcome}, "
             f"{len(tuning['trials'])} configuration(s) tried in {tuning['seconds']:.1f} s"
             + (f" ({cached} build(s) from cache)" if cached else "")),
            f"{tuning['data']}; {metric} there"] + ([_aim_note(tuning, metric)] if tuning.get("aim") else []) + (
        [f"a configuration counts as within the budget there when its drop plus {MARGIN_SE:g} standard error(s) of "
         "it over the tuning samples is (the search stops at the first that looks within, an optimistic estimate)"]
        if any(t.get("drop_se") for t in tuning["trials"]) else []) + (
        [f"**Too few samples to resolve the budget:** {tuning['resolution']}"]
        if tuning.get("resolution") else []) + (
        [_control_note(tuning["accuracy_control"], metric)] if tuning.get("accuracy_control") else []) + (
        [_ranking_note(tuning["ranking"])] if tuning.get("ranking") else []) + [
        f"{f.get('step') or 'calibration ' + f['calibration']} failed, left out: {f['error']}"
        for f in tuning.get("failed") or []] + [
        _contest_note(c) for c in tuning.get("contests") or []] + qat


def _aim_note(tuning: dict, metric: str) -> str:
    """Why the search aimed below the budget on the tuning data (edgeml.compress.quantize.accuracy.aimed)."""
    return (f"aimed at a drop of at most {drop(tuning['aim'], metric).lstrip('+')} there, below the budget: "
            "plain INT8 dropped "
            f"{drop(tuning['trials'][0]['drop'], metric)} there and {drop(tuning['evaluation_drop'], metric)} on "
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
            f"{c['ci95'][1]:.2f}, {c['rounds']} rounds; p50 {ms(c['trial_p50_ms'])} against "
            f"{ms(c['versus_p50_ms'])} ms): {verdict}")


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
            f"drop {drop(control['drop'], metric)} ({'within' if control['met'] else 'over'} the budget), "
            f"{ms(control['p50_ms'])} ms (short run), {control['seconds']:.1f} s; "
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
    return header, [[s["layer"], s["op"], drop(s["drop_when_only_this_is_int8"], metric)]
                    for s in sorted(tuning["sensitivity"], key=lambda s: -s["drop_when_only_this_is_int8"])]


def trials_table(tuning: dict) -> tuple[list[str], list[list[str]]]:
    metric = tuning["metric"]
    header = ["trial", "layers in fp32", f"{metric} drop", "p50 ms (short run)", "Pareto"]
    rows = [[t["purpose"], str(len(t["excluded"])), drop(t["drop"], metric), ms(t["p50_ms"]),
             "yes" if t["pareto"] else ""] for t in tuning["trials"]]
    if any(t.get("drop_se") for t in tuning["trials"]):       # the drop's noise, which the budget check adds
        header.insert(3, "standard error")
        for row, t in zip(rows, tuning["trials"]):
            row.insert(3, drop(t.get("drop_se", 0.0), metric).lstrip("+"))
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
