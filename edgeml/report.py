"""Markdown rendering of a run record (the dict in report.json)."""

from __future__ import annotations

DASH = "—"
JUDGED = ("ok", "predicted", "needs device")     # rows whose quality was measured here


def render_markdown(run: dict) -> str:
    metric = run["data"]["quality_metric"]
    rows = run["rows"]
    selection = run["selection"]
    machine = run["machine"]
    lines = [f"# edgeml: {run['source']['name']} for target `{run['target']}`", ""]

    profile = run.get("profile")
    chosen = next((r for r in rows if r["selected"]), None)
    if chosen and chosen["latency"] is None:
        lines += [
            f"**Selected: {chosen['name']}** ({chosen['backend']}, {chosen['precision']}): "
            f"{_predicted(chosen)} ms **predicted** for {profile['display_name'] if profile else 'the device'}, "
            f"{metric} {_quality(chosen, metric)} (drop {_drop(chosen['quality_drop'], metric)}); not measured "
            f"here: {chosen['reason']}.",
            "",
            f"Why: {selection['reason']}.",
            "",
        ]
    elif chosen:
        ref = next(r for r in rows if r["role"] == "reference")
        speedups = [f"{_ratio(ref, chosen)} vs the original ({ref['backend']})"]
        fp32 = next((r for r in rows if r["role"] == "candidate" and r["backend"] == chosen["backend"]
                     and r["precision"] == "fp32" and r["status"] == "ok" and r is not chosen), None)
        if fp32:
            speedups.append(f"{_ratio(fp32, chosen)} vs {fp32['name']}")
        lines += [
            f"**Selected: {chosen['name']}** ({chosen['backend']} {chosen['backend_version'] or ''}, "
            f"{chosen['precision']}): p50 {_ms(chosen['latency']['p50_ms'])} ms, "
            f"{metric} {_quality(chosen, metric)} (drop {_drop(chosen['quality_drop'], metric)}); "
            f"speed-up (p50) {', '.join(speedups)}.",
            "",
            f"Why: {selection['reason']}.",
            "",
        ]
    if not selection.get("within_budget"):
        lines += [f"> **The accuracy budget was not met.** {selection['reason']}.", ""]

    predicted = any(r.get("predicted") for r in rows)
    header = f"| candidate | backend | precision | {metric} | drop | p50 ms (measured here) | p90 ms | "
    if predicted:
        header += f"p50 ms (predicted, {profile['name']}) | "
    lines += [header + "size MB | status |", "|---" * (header.count("|") + 1) + "|"]
    for r in rows:
        judged = r["status"] in JUDGED
        measured = r["latency"] is not None
        name = f"**{r['name']}** ✓" if r["selected"] else r["name"]
        cells = [
            name, r["backend"], r["precision"],
            _quality(r, metric) if judged else DASH,
            (DASH if r["role"] == "reference" else _drop(r["quality_drop"], metric)) if judged else DASH,
            _ms(r["latency"]["p50_ms"]) if measured else DASH,
            _ms(r["latency"]["p90_ms"]) if measured else DASH,
        ]
        if predicted:
            cells.append(_predicted(r))
        cells += [_mb(r["size_bytes"]) if r["size_bytes"] is not None else DASH, _status(r)]
        lines.append("| " + " | ".join(cells) + " |")
    if predicted:
        lines += ["", f"Predicted latencies are a roofline estimate for {profile['display_name']} "
                  f"(`{profile['name']}`): "
                  "per-layer MACs and bytes moved, from the ONNX graph, against the profile's peak compute and "
                  "memory bandwidth with its efficiency factors. They are not measurements; see the docs for the "
                  "method's measured error."]

    lines += [
        "",
        f"Latency is measured on this machine ({machine['cpu']}, {machine['threads']} thread(s)), "
        "batch 1, after warm-up; p50 with its bootstrap 95% confidence interval below.",
        "",
        "| candidate | p50 ms (95% CI) | p99 ms | runs | inferences/s | peak memory MB | build s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["latency"] is None:
            continue
        lat = r["latency"]
        lo, hi = lat["p50_ci95_ms"]
        lines.append("| " + " | ".join([
            r["name"], f"{_ms(lat['p50_ms'])} ({_ms(lo)}–{_ms(hi)})", _ms(lat["p99_ms"]),
            str(lat["runs"]), f"{lat['throughput_per_s']:.0f}",
            _mb(r["peak_memory_bytes"]) if r["peak_memory_bytes"] is not None else "not measured",
            f"{r['build_seconds']:.1f}" if r["build_seconds"] is not None else DASH,
        ]) + " |")

    lines += ["", "## Data", ""] + [f"- {n}" for n in run["data"]["notes"]]
    if profile:
        lines += _profile(profile)
    if run["export"]:
        exp = run["export"]
        lines += ["", "## Export and parity", "",
                  f"- exported with torch.onnx.export ({exp['exporter']} exporter)"]
        lines += [f"- {n}" for n in exp["notes"]]
        parity = exp.get("parity")
        if parity:
            lines.append(f"- checked against PyTorch on {parity['samples']} evaluation samples:")
            lines += [f"  - `{o['name']}`: max abs error {o['max_abs_error']:.3g}, max relative "
                      f"{o['max_rel_error']:.3g} (tolerance {o['tolerance']:.3g})" for o in parity["outputs"]]
    lines += _compression(run.get("compression") or {})
    for name, tuning in (run.get("tuning") or {}).items():
        lines += _tuning(name, tuning)
    lines += ["", "## Candidates", ""]
    lines += [f"- {r['name']}: {r['method']}" for r in rows]
    if run["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run["warnings"]]
    packages = ", ".join(f"{k} {v}" for k, v in run["packages"].items() if v)
    lines += ["", "## Machine", "",
              f"- {machine['cpu']} ({machine['architecture']}), {machine['logical_cores']} logical cores, "
              f"{machine['threads']} thread(s) used",
              f"- {machine['os']}, Python {machine['python']}",
              f"- {packages}",
              f"- edgeml {run['edgeml_version']}, {run['created']}", ""]
    return "\n".join(lines)


def _profile(profile: dict) -> list[str]:
    peaks = ", ".join(f"{p} {v:,.0f}" for p, v in profile["peak_gops"].items())
    runtimes = ", ".join(f"{k} {v}" for k, v in profile["runtimes"].items())
    return ["", "## Device profile", "",
            f"- {profile['display_name']} (`{profile['name']}`, target {profile['target']}); computes in "
            f"{', '.join(profile['precisions'])}; DLA cores: {profile['dla_cores']}",
            f"- peak GOPS: {peaks}; memory bandwidth {profile['memory_bandwidth_gbs']:g} GB/s; memory "
            f"{profile['memory_gb']:g} GB",
            f"- runtimes: {runtimes or DASH}",
            *[f"- source: {s}" for s in profile["sources"]]]


def _compression(compression: dict) -> list[str]:
    lines = []
    prune = compression.get("prune")
    if prune:
        lines += ["", "## Pruning", "",
                  f"- MACs {prune['macs_before']:,} -> {prune['macs_after']:,} ({prune['macs_ratio']:.2f}x fewer), "
                  f"parameters {prune['params_before']:,} -> {prune['params_after']:,} "
                  f"({prune['params_ratio']:.2f}x fewer)"]
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


def _tuning(name: str, tuning: dict) -> list[str]:
    best = tuning["best"]
    metric = tuning["metric"]
    outcome = (f"met the budget with {len(best['excluded'])} layer(s) in fp32 (row {tuning['row']})"
               if tuning["met"] and tuning["row"] else
               "met the budget on the calibration data with every layer in INT8 (no change)" if tuning["met"] else
               f"**could not meet the budget** ({tuning['stopped']}); the best it found drops "
               f"{_drop(best['drop'], metric)} on the calibration data")
    lines = ["", f"## Accuracy budget: {name}", "",
             f"- plain INT8 broke the budget on the evaluation data; the search {outcome}, "
             f"{len(tuning['trials'])} configuration(s) tried in {tuning['seconds']:.1f} s",
             f"- {tuning['data']}; {metric} there"]
    if tuning["sensitivity"]:
        lines += ["", f"| layer | op | {metric} drop when only this layer is INT8 |", "|---|---|---|"]
        lines += [f"| {s['layer']} | {s['op']} | {_drop(s['drop_when_only_this_is_int8'], metric)} |"
                  for s in sorted(tuning["sensitivity"], key=lambda s: -s["drop_when_only_this_is_int8"])]
    lines += ["", f"| trial | layers in fp32 | {metric} drop | p50 ms (short run) | Pareto |", "|---|---|---|---|---|"]
    lines += [f"| {t['purpose']} | {len(t['excluded'])} | {_drop(t['drop'], metric)} | {_ms(t['p50_ms'])} | "
              f"{'yes' if t['pareto'] else ''} |" for t in tuning["trials"]]
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
    return f"{value:.4f}" if metric == "cosine" else f"{value * 100:.2f} %"


def _drop(drop: float, metric: str) -> str:
    return f"{drop:+.4f}" if metric == "cosine" else f"{drop * 100:+.2f} pt"


def _ratio(base: dict, chosen: dict) -> str:
    return f"{base['latency']['p50_ms'] / chosen['latency']['p50_ms']:.2f}x"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _mb(value: int) -> str:
    return f"{value / 1e6:.2f}"
