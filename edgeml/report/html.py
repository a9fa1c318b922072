"""The HTML report: one self-contained file rendered from a run record (the dict in report.json).

It shows what the markdown report shows, with the same tables (built in markdown.py), plus a
latency-against-quality plot. Plots are inline SVG drawn by matplotlib (their text in the viewer's
own sans-serif font), the style sheet is inline, and there are no scripts or links, so the file
opens offline and can be mailed as is.
"""

from __future__ import annotations

import html
import io
import re

from edgeml.measure.evaluate import CONTINUOUS
from edgeml.report import markdown as report

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 1em 2em 3em; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.selected td { background: #e6f4ea; }
tr.failed td, tr.skipped td, tr.unavailable td { color: #777; }
tr.flagged td { background: #fdecea; }
td.bar { background: linear-gradient(90deg, #cfe0fb var(--share), transparent var(--share)); }
.warning { border-left: 4px solid #d93025; background: #fdecea; padding: .4em .8em; }
.note { color: #555; }
code { background: #f3f3f3; padding: 0 3px; }
svg { max-width: 100%; height: auto; }
"""
TOP_LAYERS = 15


def render_html(run: dict) -> str:
    profile = run.get("profile")
    title = f"edgeml: {run['source']['name']} for target `{run['target']}`"
    body = [f"<h1>{_inline(title)}</h1>"]
    body += [_paragraph(p) for p in report.summary(run)]
    body.append(_list([
        report.budget_note(run),
        f"device: {profile['display_name']} (`{profile['name']}`)" if profile else "device: this machine",
        *run["data"]["notes"]]))

    header, table = report.candidate_table(run)
    body += ["<h2>Candidates</h2>", _table(
        header, [[f"**{r['name']}** ✓" if r["selected"] else cells[0], *cells[1:]] for r, cells in table],
        ["selected" if r["selected"] else r["status"] for r, _ in table])]
    if report.paired_note(run):
        body.append(_paragraph(report.ROUNDS_MARK_NOTE, "note"))
    if report.predicted_note(run):
        body.append(_paragraph(report.predicted_note(run), "note"))
    body += [_paragraph(note, "note") for note in report.quality_notes(run)]

    body += ["<h2>Latency against quality</h2>", _tradeoff_plot(run)]
    body += ["<h2>Latency</h2>", _paragraph(report.latency_note(run["machine"])), _table(*report.latency_table(run))]
    if report.paired_note(run):
        body += [_paragraph(report.paired_note(run)), _table(*report.paired_table(run))]
    if run.get("device_report"):
        body += ["<h2>Measured on the device</h2>", _paragraph(report.device_note(run)),
                 _table(*report.device_table(run))]

    layer_times = run.get("layer_times")
    if layer_times:
        body += ["<h2>Per-layer time</h2>", _paragraph(report.layer_note(layer_times))]
        if layer_times["layers"] is not None:
            shown = layer_times["layers"][:TOP_LAYERS]
            body += [_paragraph(f"Top {len(shown)} of {len(layer_times['layers'])} layers by time:"),
                     _table(*report.layer_table(layer_times, TOP_LAYERS), bars=[x["share"] for x in shown]),
                     _paragraph("By op type:"),
                     _table(*report.op_table(layer_times), bars=[o["share"] for o in layer_times["ops"]])]

    classes = report.per_class(run)
    if classes:
        body += ["<h2>Per-class accuracy</h2>", _paragraph(report.per_class_note(classes)),
                 _table(*report.per_class_table(classes, classes["classes"]),
                        ["flagged" if c["flagged"] else "" for c in classes["classes"]])]

    for name, tuning in (run.get("tuning") or {}).items():
        body += [f"<h2>Accuracy budget: {html.escape(name)}</h2>", _list(report.tuning_notes(tuning))]
        if tuning.get("sensitivity"):
            body.append(_table(*report.sensitivity_table(tuning)))
        if tuning.get("trials"):
            body.append(_table(*report.trials_table(tuning)))

    if report.time_note(run):
        body += ["<h2>Where the time went</h2>", _paragraph(report.time_note(run)), _table(*report.time_table(run))]
    body += ["<h2>Candidates: how each was made</h2>", _list([f"{r['name']}: {r['method']}" for r in run["rows"]])]
    if run["warnings"]:
        body += ["<h2>Warnings</h2>", _list(run["warnings"])]
    body += ["<h2>Machine</h2>", _list(report.machine_notes(run))]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title.replace('`', ''))}</title>\n<style>{STYLE}</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _tradeoff_plot(run: dict) -> str:
    """Quality against p50 latency, with the Pareto front; predicted latencies get a panel of their own."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    metric = run["data"]["quality_metric"]
    judged = [r for r in run["rows"] if r["status"] in report.JUDGED]
    measured = [(r, r["latency"]["p50_ms"]) for r in judged if r["latency"] is not None]
    predicted = [(r, r["predicted"]["ms"]) for r in judged if (r.get("predicted") or {}).get("ms") is not None]
    device_only = any(r["latency"] is None for r, _ in predicted)
    panels = [(measured, "p50 ms, measured here (batch 1)",
               f"Measured on this machine ({run['machine']['threads']} thread(s))")]
    if device_only:
        name = run["profile"]["display_name"]
        panels.append((predicted, f"p50 ms, predicted for {name}", f"Predicted for {name}: an estimate, not measured"))
    ref = next(r for r in run["rows"] if r["role"] == "reference")
    budget = ref["metrics"][metric] - run["selection"]["max_accuracy_drop"]
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "edgeml", "font.size": 9}):
        figure = Figure(figsize=(6.5 * len(panels), 4.4), layout="constrained")
        for i, (points, xlabel, title) in enumerate(panels):
            _panel(figure.add_subplot(1, len(panels), i + 1), points, metric, _scale(budget, metric), xlabel, title)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata=dict.fromkeys(("Creator", "Date", "Format", "Type")))
    svg = buffer.getvalue()
    note = ("Each point is a row of the candidate table whose quality was measured here; the dashed line is the "
            "Pareto front (no other row is both faster and better), the dotted line the lowest quality the "
            "budget accepts.")
    if device_only:
        note += (" Rows that run on the device only have no measured latency: they appear only in the right-hand "
                 "panel, against predicted latencies, which are never mixed with measured ones.")
    return svg[svg.index("<svg"):] + _paragraph(note, "note")


def _panel(ax, points: list[tuple[dict, float]], metric: str, budget: float, xlabel: str, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric + ("" if metric in CONTINUOUS else " (%)"))
    ax.axhline(budget, color="#d93025", linestyle=":", linewidth=1, label="lowest quality within the budget")
    if not points:
        ax.text(0.5, 0.5, "no row was measured here", ha="center", va="center", transform=ax.transAxes)
        return
    points = sorted(points, key=lambda p: p[1])
    xy = [(x, _scale(r["metrics"][metric], metric)) for r, x in points]
    front = _pareto(xy)
    # The front holds from each of its points to the next one, and on past the slowest row.
    steps = front + [(xy[-1][0], front[-1][1])]
    ax.step([x for x, _ in steps], [y for _, y in steps], where="post", color="#1a73e8", linestyle="--",
            linewidth=1, label="Pareto front")
    groups = {"selected": {"marker": "*", "s": 160, "color": "#188038", "zorder": 3},
              "reference": {"marker": "s", "s": 45, "color": "#555555"},
              "on the front": {"marker": "o", "s": 35, "color": "#1a73e8"},
              "dominated": {"marker": "o", "s": 35, "color": "#9aa0a6"}}
    kinds = ["selected" if r["selected"] else "reference" if r["role"] == "reference" else
             "on the front" if p in front else "dominated" for (r, _), p in zip(points, xy)]
    for kind, style in groups.items():
        chosen = [p for p, k in zip(xy, kinds) if k == kind]
        if chosen:
            ax.scatter([x for x, _ in chosen], [y for _, y in chosen], label=kind, **style)
    for i, ((r, _), p) in enumerate(zip(points, xy)):      # staggered, so that close names stay readable
        ax.annotate(r["name"], p, xytext=(4, 4 + 9 * (i % 3)), textcoords="offset points", fontsize=7)
    if xy[0][0] > 0 and xy[-1][0] / xy[0][0] > 10:
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.18)                             # room for the names
    ax.legend(loc="lower right", fontsize=7)


def _pareto(xy: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and quality (higher), fastest first."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(xy, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _scale(value: float, metric: str) -> float:
    return value if metric in CONTINUOUS else value * 100


def _inline(text: str) -> str:
    """Escaped text with the report's inline markup (**bold**, `code`) as HTML."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _paragraph(text: str, css: str = "") -> str:
    if text.startswith("> "):
        return f'<p class="warning">{_inline(text[2:])}</p>'
    return f'<p class="{css}">{_inline(text)}</p>' if css else f"<p>{_inline(text)}</p>"


def _list(items: list[str]) -> str:
    return "<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in items) + "\n</ul>"


def _table(header: list[str], rows: list[list[str]], css: list[str] | None = None,
           bars: list[float] | None = None) -> str:
    """A table of text cells; `css` classes the rows, `bars` (fractions) shade each row's last cell."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>"]
    for i, cells in enumerate(rows):
        row_class = f' class="{css[i]}"' if css and css[i] else ""
        tds = [f"<td>{_inline(c)}</td>" for c in cells]
        if bars:
            tds[-1] = f'<td class="bar" style="--share: {bars[i] * 100:.1f}%">{_inline(cells[-1])}</td>'
        lines.append(f"<tr{row_class}>" + "".join(tds) + "</tr>")
    return "\n".join(lines + ["</table>"])
