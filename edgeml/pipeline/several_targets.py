"""`benchmark`: one model through several targets, in one table.

Each target is a full `optimize` run (its own folder under OUT, with bundle and report); the
table puts every candidate of every target side by side: format, status, size, quality, p50
and inferences per second. A p50 is labelled with how it was obtained: measured on this machine,
or predicted for the target's device profile. A target that cannot serve the model here is a
row that says why, and the others still run; bad input (the model, its data, the recipe, OUT) is
the same for every target, so it stops the whole benchmark with its one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeml.errors import DataError, EdgemlError, ExportError, InputSpecError, ModelError, OutputError
from edgeml.measure.evaluate import CONTINUOUS
from edgeml.outdir import AtomicOutput
from edgeml.pipeline.recipe import RecipeError
from edgeml.progress import Reporter
from edgeml.targets import get_target

DASH = "—"
# Errors in what every target shares: no target could do better.
SHARED_INPUT_ERRORS = (ModelError, InputSpecError, DataError, ExportError, OutputError, RecipeError)


def benchmark(model: Any = None, *, targets: list[str], out: str | Path, force: bool = False,
              reporter_factory=Reporter, **optimize_args: Any) -> dict:
    """Run `optimize` for each of `targets` into OUT/<target>/; write OUT/benchmark.{md,json}."""
    from edgeml.pipeline.optimize import optimize

    for name in targets:
        get_target(name)                       # an unknown target fails before any work
    out = Path(out)
    results = []
    with AtomicOutput(out, force) as staging:
        for name in targets:
            try:
                run = optimize(model, target=name, out=staging / name, reporter=reporter_factory(),
                               **optimize_args)
            except SHARED_INPUT_ERRORS:
                raise
            except EdgemlError as e:
                results.append({"target": name, "error": str(e), "rows": []})
                continue
            results.append({"target": name, "profile": (run.profile or {}).get("name"),
                            "quality_metric": run.data["quality_metric"], "machine": run.machine["cpu"],
                            "threads": run.machine["threads"], "rows": [_row(r) for r in run.rows]})
        record = {"targets": results}
        (staging / "benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "benchmark.md").write_text(render(record))
    return record


def _row(row) -> dict:
    predicted = (row.predicted or {}).get("ms")
    return {"name": row.name, "backend": row.backend, "precision": row.precision, "role": row.role,
            "status": row.status, "reason": row.reason, "selected": row.selected, "metrics": row.metrics,
            "size_bytes": row.size_bytes, "measured_ms": row.latency["p50_ms"] if row.latency else None,
            "predicted_ms": predicted}


def render(record: dict) -> str:
    lines = ["| target | candidate | format | precision | status | size MB | quality | p50 ms | FPS |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for t in record["targets"]:
        if "error" in t:
            lines.append(f"| {t['target']} | {DASH} | {DASH} | {DASH} | failed: {t['error']} | {DASH} | {DASH} | "
                         f"{DASH} | {DASH} |")
            continue
        metric = t["quality_metric"]
        notes.append(f"{t['target']}: measured on {t['machine']} ({t['threads']} thread(s))"
                     + (f", predicted for the `{t['profile']}` profile" if t["profile"] else ""))
        for r in t["rows"]:
            if r["role"] == "stage":
                continue
            ms, label = ((r["measured_ms"], "measured") if r["measured_ms"] is not None else
                         (r["predicted_ms"], "predicted") if r["predicted_ms"] is not None else (None, ""))
            quality = r["metrics"].get(metric)
            lines.append("| " + " | ".join([
                t["target"], f"**{r['name']}** ✓" if r["selected"] else r["name"], r["backend"], r["precision"],
                _status(r),
                DASH if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.2f}",
                DASH if quality is None else (f"{quality:.4f} {metric}" if metric in CONTINUOUS
                                              else f"{quality * 100:.2f} % {metric}"),
                DASH if ms is None else f"{ms:.3f} ({label})",
                DASH if ms is None else f"{1000 / ms:.0f}",
            ]) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def _status(row: dict) -> str:
    if row["status"] in ("ok", "predicted", "needs device"):
        status = "measured" if row["status"] == "ok" else row["status"]
        return f"{status}, reference" if row["role"] == "reference" else status
    return f"{row['status']}: {row['reason']}"
