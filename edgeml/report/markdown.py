"""The markdown report (report.md) of a run record: the tables and paragraphs of tables.py and search.py as
markdown, with the sections only the markdown report has (device profile, export, pruning, distillation)."""

from __future__ import annotations

from edgeml.report import search, tables
from edgeml.report.format import DASH

TOP_LAYERS = 10                                   # per-layer rows in the markdown report
WORST_CLASSES = 5


def render_markdown(run: dict) -> str:
    rows = run["rows"]
    machine = run["machine"]
    profile = run.get("profile")
    lines = [f"# edgeml: {run['source']['name']} for target `{run['target']}`", ""]
    for paragraph in tables.summary(run):
        lines += [paragraph, ""]

    header, table = tables.candidate_table(run)
    lines += markdown_table(header, [[f"**{r['name']}** ✓" if r["selected"] else cells[0], *cells[1:]]
                                     for r, cells in table])
    if tables.paired_note(run):
        lines += ["", tables.ROUNDS_MARK_NOTE]
    if tables.predicted_note(run):
        lines += ["", tables.predicted_note(run)]
    for note in tables.quality_notes(run):
        lines += ["", note]
    if tables.attempt_notes(run):
        lines += ["", "Builds that needed more than one attempt (each quantizer step's graph is checked; a step that "
                  "breaks it is retried without):", ""] + tables.attempt_notes(run)

    lines += ["", tables.latency_note(machine), ""]
    lines += markdown_table(*tables.latency_table(run))
    if tables.paired_note(run):
        lines += ["", tables.paired_note(run), ""] + markdown_table(*tables.paired_table(run))
    if run.get("device_report"):
        lines += ["", "## Measured on the device", "", tables.device_note(run), ""]
        lines += markdown_table(*tables.device_table(run))
    lines += _per_class(run)
    lines += _layer_times(run.get("layer_times"))

    lines += ["", "## Data", ""] + [f"- {n}" for n in run["data"]["notes"]]
    if profile:
        lines += _profile(profile)
    lines += _export(run["export"])
    lines += _compression(run.get("compression") or {})
    for name, tuning in (run.get("tuning") or {}).items():
        lines += ["", f"## Accuracy budget: {name}", ""] + [f"- {n}" for n in search.tuning_notes(tuning)]
        if tuning.get("sensitivity"):
            lines += [""] + markdown_table(*search.sensitivity_table(tuning))
        if tuning.get("trials"):
            lines += [""] + markdown_table(*search.trials_table(tuning))
    if tables.time_note(run):
        lines += ["", "## Where the time went", "", tables.time_note(run), ""] + markdown_table(*tables.time_table(run))
    lines += ["", "## Candidates", ""]
    lines += [f"- {r['name']}: {r['method']}" for r in rows]
    if run["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run["warnings"]]
    lines += ["", "## Machine", ""] + [f"- {m}" for m in tables.machine_notes(run)] + [""]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


def _per_class(run: dict) -> list[str]:
    result = tables.per_class(run)
    if result is None:
        return []
    lines = ["", "## Per-class accuracy", "", tables.per_class_note(result)]
    worst = sorted((c for c in result["classes"] if c["drop"] > 0), key=lambda c: -c["drop"])[:WORST_CLASSES]
    if not worst:
        return lines + ["", "No class lost accuracy."]
    return lines + ["", f"The {len(worst)} largest drops:", ""] + markdown_table(*tables.per_class_table(result, worst))


def _layer_times(layer_times: dict | None) -> list[str]:
    if layer_times is None:
        return []
    lines = ["", "## Per-layer time", "", tables.layer_note(layer_times)]
    if layer_times["layers"] is not None:
        shown = min(TOP_LAYERS, len(layer_times["layers"]))
        lines += ["", f"Top {shown} of {len(layer_times['layers'])} layers by time:", ""]
        lines += markdown_table(*tables.layer_table(layer_times, TOP_LAYERS))
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


def _export(export: dict | None) -> list[str]:
    if not export:
        return []
    lines = ["", "## Export and parity", "",
             f"- exported with torch.onnx.export ({export['exporter']} exporter)"
             + (" (from cache)" if export.get("cached") else "")]
    lines += [f"- {n}" for n in export["notes"]]
    parity = export.get("parity")
    if parity:
        lines.append(f"- checked against PyTorch on {parity['samples']} evaluation samples:")
        lines += [f"  - `{o['name']}`: max abs error {o['max_abs_error']:.3g}, max relative "
                  f"{o['max_rel_error']:.3g} (tolerance {o['tolerance']:.3g})" for o in parity["outputs"]]
    return lines


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

