"""The sweep's results: OUT/sweep.json (the cells' rows, the Pareto front, the best recipes), sweep.md, sweep.html.

Latencies timed on different CPU models are never ranked against each other: per model, measured cells are
grouped by the CPU that timed them, and the Pareto front (lower p50, higher quality) and the best recipe per
target are found within a group. Cells with only a predicted latency (the runtime is on the device) form their
own group per device profile. When the cells were timed in more than one run of the sweep (`--resume`), the
tables say which run timed each cell.

Language models (rows of kind "language-model", edgeml.sweep.cells) are grouped the same way (measured here, or
predicted for a device profile by a target whose builds run on the device alone). Their latency is the decode time
per token (`ms_per_token`, 1000 / the median decode tokens/s), and their quality is ranked by the perplexity
increase, lower being better: their Pareto front is lower ms per token and lower increase, and their best recipe the
fastest decode within the budget (max_ppl_increase). Each model has its own section, with the columns of its kind.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from edgeml.measure.evaluate import CONTINUOUS
from edgeml.report.html import STYLE
from edgeml.report.markdown import markdown_table
from edgeml.sweep.cells import LANGUAGE_MODEL
from edgeml.sweep.journal import write_atomic

DASH = "—"


def build(sweep_path: Path, rows: list[dict], ray_info: dict) -> dict:
    """The sweep record: every cell's row in the sweep's order, marked where it is on its group's Pareto front,
    and the best recipe of each (model, target, profile) per group."""
    for row in rows:
        row["group"] = group(row)
    done = [r for r in rows if r["status"] == "done"]
    front = set()
    for key in {(r["model"], r["group"]) for r in done}:
        members = [r for r in done if (r["model"], r["group"]) == key]
        front |= {r["cell"] for r in pareto(members)}
    for row in rows:
        row["pareto"] = row["cell"] in front
    return {"sweep": str(sweep_path), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ray": ray_info, "cells": rows, "best": best(done)}


def group(row: dict) -> str | None:
    """What the cell's latency may be ranked within: 'cpu: MODEL' when measured, 'profile: NAME' when only
    predicted; None for a failed cell."""
    if row["status"] != "done":
        return None
    selected = row["selected"]
    if (selected["speed"] == "measured") if is_language_model(row) else selected["p50_ms"] is not None:
        return f"cpu: {row['cpu']}"
    return f"profile: {row['profile_name']}"


def is_language_model(row: dict) -> bool:
    return row.get("kind") == LANGUAGE_MODEL


def latency(row: dict) -> float | None:
    """What the cell is ranked on: a language model's decode ms per token, else the p50 (measured, else predicted)."""
    selected = row["selected"]
    if is_language_model(row):
        return selected["ms_per_token"]
    return selected["p50_ms"] if selected["p50_ms"] is not None else selected["predicted_ms"]


def goodness(row: dict) -> float | None:
    """The cell's quality as higher-is-better: a language model's perplexity increase negated, else the quality."""
    selected = row["selected"]
    if is_language_model(row):
        return None if selected["drop"] is None else -selected["drop"]
    return selected["quality"]


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both latency (lower) and quality (`goodness`: higher)."""
    points = [(r, latency(r), goodness(r)) for r in rows if latency(r) is not None and goodness(r) is not None]
    return [r for r, ms, q in points
            if not any(m <= ms and o >= q and (m < ms or o > q) for _, m, o in points)]


def best(done: list[dict]) -> list[dict]:
    """Per (model, target, profile, group): the fastest cell within its accuracy budget."""
    out = []
    keys = sorted({(r["model"], r["target"], r["profile_name"] or "", r["group"]) for r in done})
    for model, target, profile, where in keys:
        members = [r for r in done if (r["model"], r["target"], r["profile_name"] or "", r["group"])
                   == (model, target, profile, where) and r["within_budget"] and latency(r) is not None]
        winner = min(members, key=latency, default=None)
        out.append({"model": model, "target": target, "profile": profile or None, "group": where,
                    "cell": None if winner is None else winner["cell"],
                    "recipe": None if winner is None else winner["recipe"]})
    return out


def write(out: Path, record: dict) -> None:
    """OUT/sweep.json, sweep.md and sweep.html, each written atomically."""
    write_atomic(out / "sweep.json", json.dumps(record, indent=1) + "\n")
    sections = _sections(record)
    write_atomic(out / "sweep.md", render_markdown(sections))
    write_atomic(out / "sweep.html", render_html(sections))


def _sections(record: dict) -> list[tuple[int, str, list[str], list[tuple[list[str], list[list[str]]]]]]:
    """(heading level, heading, paragraphs, tables): what the markdown and the HTML both show."""
    cells = record["cells"]
    failed = [r for r in cells if r["status"] != "done"]
    cpus = sorted({r["cpu"] for r in cells if r["status"] == "done" and r["group"].startswith("cpu")})
    slots = [r["timing_slot"] for r in cells if r.get("timing_slot")]
    languages = any(is_language_model(r) for r in cells)
    intro = [f"{len(cells)} cells: {len(cells) - len(failed)} done, {len(failed)} failed. "
             f"Latency measured on {len(cpus)} CPU model(s): rows timed on different CPUs are never ranked against "
             "each other. ★: on the Pareto front (lower p50, higher quality"
             + ("; language models: lower ms per token, lower perplexity increase" if languages else "")
             + ") of its model and CPU (for predicted latencies: of its model and device profile).",
             f"Each measurement held its node's timing slot: {sum(s['turns'] for s in slots)} measurements, "
             f"{sum(s['waited_s'] for s in slots):.1f} s waited for the slot in all."]
    runs = sorted({_run_started(r) for r in cells if r["status"] == "done"})
    if len(runs) > 1:
        intro.append(f"Timed in {len(runs)} runs of the sweep (`--resume`), started {', '.join(runs)}: the "
                     "\"timed in run\" column says which run timed each cell; timings of different runs were "
                     "taken at different times, under whatever else the machine ran then.")
    sections = [(1, f"Sweep: {Path(record['sweep']).name}", intro, [])]
    for model in dict.fromkeys(r["model"] for r in cells):
        mine = [r for r in cells if r["model"] == model]
        done = [r for r in mine if r["status"] == "done"]
        language = any(is_language_model(r) for r in done)
        metric = done[0]["metric"] if done else "quality"
        sections.append((2, f"{model} (language model: {metric})" if language else f"{model} ({metric})",
                         [LANGUAGE_MODEL_NOTE] if language else [], []))
        table = _language_model_table if language else _cell_table
        for where in dict.fromkeys(r["group"] for r in done):
            sections.append((3, _group_title(where), [], [table([r for r in done if r["group"] == where], metric,
                                                                len(runs) > 1)]))
        if any(r["status"] != "done" for r in mine):
            sections.append((3, "Failed", [], [(["cell", "status"], [[r["cell"], r["status"]] for r in mine
                                                                    if r["status"] != "done"])]))
        winners = [b for b in record["best"] if b["model"] == model]
        by_cell = {r["cell"]: r for r in done}
        if language:
            header = ["target", "latency from", "best recipe", "candidate", "ms per token", "decode tokens/s",
                      "perplexity increase"]
            rows = [[b["target"], b["group"], b["recipe"] or "none within its budget",
                     *(_language_model_winner(by_cell[b["cell"]]) if b["cell"] else [DASH] * 4)] for b in winners]
        else:
            header = ["target", "profile", "latency from", "best recipe", "candidate", "p50 ms", metric]
            rows = [[b["target"], b["profile"] or DASH, b["group"], b["recipe"] or "none within its budget",
                     *(_winner(by_cell[b["cell"]], metric) if b["cell"] else [DASH, DASH, DASH])] for b in winners]
        sections.append((3, "Best recipe per target", [], [(header, rows)]))
    return sections


LANGUAGE_MODEL_NOTE = (
    "Ranked on the decode time per token: ms per token = 1000 / the median decode tokens/s (batch 1, after a "
    "128-token prompt; measured, or predicted where the heading says so). Quality: perplexity on the held-out text, "
    "and its increase over the original's with a 95% CI; within budget: the increase plus one standard error is "
    "within the recipe's max_ppl_increase. ★: on the Pareto front of lower ms per token and lower perplexity "
    "increase. Best recipe per target: the fastest decode within its budget.")


def _group_title(where: str) -> str:
    kind, _, name = where.partition(": ")
    return f"Measured on {name}" if kind == "cpu" else f"Predicted for the `{name}` profile (not measured here)"


def _run_started(row: dict) -> str:
    return row.get("run_started") or "unrecorded"        # journaled by an edgeml that did not record it


def _cell_table(rows: list[dict], metric: str, runs: bool = False) -> tuple[list[str], list[list[str]]]:
    """The cells' table; with `runs`, a column with the start of the sweep run that timed each."""
    header = ["target", "profile", "recipe", "candidate", "precision", metric, "drop (95% CI)",
              "p50 ms (measured)", "p50 ms (predicted)", "size MB", "within budget", "node",
              *(["timed in run"] if runs else []), ""]
    table = []
    for r in rows:
        s = r["selected"]
        table.append([r["target"], r["profile_name"] or DASH, r["recipe"], s["name"], s["precision"],
                      _quality(s["quality"], metric), _drop(s, metric), _ms(s["p50_ms"], s["p50_ci95_ms"]),
                      _ms(s["predicted_ms"]), DASH if s["size_bytes"] is None else f"{s['size_bytes'] / 1e6:.2f}",
                      "yes" if r["within_budget"] else "no", r["node"]["ip"] + " " + r["node"]["id"][:8],
                      *([_run_started(r)] if runs else []), "★" if r["pareto"] else ""])
    return header, table


def _language_model_table(rows: list[dict], metric: str, runs: bool = False) -> tuple[list[str], list[list[str]]]:
    """The cells of a language model: perplexity and its increase, decode speed, time to first token, size."""
    header = ["target", "recipe", "candidate", "precision", "perplexity", "increase (95% CI)", "decode tokens/s",
              "ms per token (1000 / tokens/s)", "TTFT 128 ms", "size MB", "within budget", "node",
              *(["timed in run"] if runs else []), ""]
    table = []
    for r in rows:
        s = r["selected"]
        table.append([r["target"], r["recipe"], s["name"], s["precision"],
                      DASH if s["quality"] is None else f"{s['quality']:.2f}", _increase(s),
                      DASH if s["decode_tokens_per_s"] is None else f"{s['decode_tokens_per_s']:.1f}",
                      _ms(s["ms_per_token"], s["ms_per_token_ci95"]), _ms(s["ttft_ms"].get("128")),
                      DASH if s["size_bytes"] is None else f"{s['size_bytes'] / 1e6:.2f}",
                      "yes" if r["within_budget"] else "no", r["node"]["ip"] + " " + r["node"]["id"][:8],
                      *([_run_started(r)] if runs else []), "★" if r["pareto"] else ""])
    return header, table


def _language_model_winner(row: dict) -> list[str]:
    s = row["selected"]
    return [s["name"], _ms(s["ms_per_token"]),
            DASH if s["decode_tokens_per_s"] is None else f"{s['decode_tokens_per_s']:.1f}", _increase(s)]


def _increase(s: dict) -> str:
    """A relative perplexity increase in percent, with its 95% CI."""
    def pct(x: float) -> str:
        return f"{x * 100:+.2f} %"
    if s["drop"] is None:
        return DASH
    ci = s["drop_ci95"]
    return pct(s["drop"]) + (f" ({pct(ci[0])} to {pct(ci[1])})" if ci else "")


def _winner(row: dict, metric: str) -> list[str]:
    s = row["selected"]
    return [s["name"], _ms(s["p50_ms"] if s["p50_ms"] is not None else s["predicted_ms"]),
            _quality(s["quality"], metric)]


def _quality(value: float | None, metric: str) -> str:
    if value is None:
        return DASH
    return f"{value:.4f}" if metric in CONTINUOUS else f"{value * 100:.2f} %"


def _drop(s: dict, metric: str) -> str:
    def pt(x: float) -> str:
        return f"{x:+.4f}" if metric in CONTINUOUS else f"{x * 100:+.2f} pt"
    if s["drop"] is None:
        return DASH
    ci = s["drop_ci95"]
    return pt(s["drop"]) + (f" ({pt(ci[0])} to {pt(ci[1])})" if ci else "")


def _ms(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return DASH
    text = f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return text + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def render_markdown(sections) -> str:
    lines: list[str] = []
    for level, title, paragraphs, tables in sections:
        lines += [f"{'#' * level} {title}", ""]
        for p in paragraphs:
            lines += [p, ""]
        for header, rows in tables:
            lines += [*markdown_table(header, rows), ""]
    return "\n".join(lines)


def render_html(sections) -> str:
    body = []
    for level, title, paragraphs, tables in sections:
        body.append(f"<h{level}>{_code(title)}</h{level}>")
        body += [f"<p>{_code(p)}</p>" for p in paragraphs]
        for header, rows in tables:
            body.append("<table>\n<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>\n"
                        + "\n".join("<tr>" + "".join(f"<td>{_code(c)}</td>" for c in cells) + "</tr>"
                                    for cells in rows) + "\n</table>")
    title = html.escape(sections[0][1])
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style>"
            "</head>\n<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def _code(text: str) -> str:
    parts = html.escape(text, quote=False).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
