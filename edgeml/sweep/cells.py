"""One cell of a sweep: an `optimize` run inside a Ray task, and the row the sweep table keeps of it.

The cell's timed runs take the node's timing slot (edgeml.sweep.slot); its builds run beside other cells.
A cell that fails for a reason the user can fix is a row `failed: why`; any other error propagates, so that
the sweep reports it and `--resume` runs the cell again.

A language model's row (kind "language-model") says what its run measured: quality is perplexity, the drop its
relative increase (lower is better) against the budget max_ppl_increase, and the latency the sweep ranks on is the
decode time per token (1000 / the median decode tokens/s, `ms_per_token`), beside decode tokens/s and the time to
first token, all measured here or, for builds that run on the device alone, predicted for its profile (`speed` says
which); its p50_ms and predicted_ms are None.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeml.errors import EdgemlError
from edgeml.sweep.spec import Cell, cell_recipe

LANGUAGE_MODEL = "language-model"          # a run's config["kind"] and a row's "kind" for causal language models


def run_cell(cell: Cell, folder: str, cache_dir: str | None, tracking: dict | None = None) -> dict:
    """Run `cell` into `folder` (its bundle and report); its row. Called in a Ray worker."""
    import ray

    from edgeml.measure import timing_slot
    from edgeml.pipeline.optimize import optimize
    from edgeml.sweep import slot

    node = {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address()}
    this = next(n for n in ray.nodes() if n["NodeID"] == node["id"])
    if not slot.node_has_slot(this):
        raise EdgemlError(f"node {node['ip']} offers no timing slot: start it with "
                          f"ray start ... --resources '{{\"{slot.RESOURCE}\": 1}}'")
    start = time.perf_counter()
    given = dict(cell.given)
    model = given.pop("model", None)
    turns: list[tuple[float, float, float]] = []

    @contextmanager
    def turn() -> Iterator[None]:
        """The node's timing slot, recording when it was asked for, taken and given back (read before the slot is
        released: read after, another cell may already have taken it)."""
        asked = time.time()
        with slot.timing_slot():
            taken = time.time()
            try:
                yield
            finally:
                given = time.time()
        turns.append((asked, taken, given))

    try:
        with timing_slot.guarded_by(turn):
            run = optimize(model, recipe=cell_recipe(cell), out=folder, force=True, cache_dir=cache_dir, **given)
    except EdgemlError as e:
        return failed_row(cell, str(e), node, time.perf_counter() - start)
    row = cell_row(cell, run.to_dict(), node, time.perf_counter() - start)
    row["timing_slot"] = {"turns": len(turns), "waited_s": round(sum(t - a for a, t, _ in turns), 3),
                          "held": [[t, g] for _, t, g in turns]}
    if tracking is not None:
        row["tracked"] = _track(run, Path(folder), tracking)
    return row


def cell_row(cell: Cell, run: dict, node: dict, seconds: float) -> dict:
    """What the sweep keeps of a finished run: the selected row, every row's status and quality, where it ran."""
    metric = run["data"]["quality_metric"]
    language_model = run["config"].get("kind") == LANGUAGE_MODEL
    to_row = _language_model_row if language_model else _row
    rows = [to_row(r, metric) for r in run["rows"] if r["role"] != "stage"]
    return {**_cell(cell), "status": "done", "kind": LANGUAGE_MODEL if language_model else "model", "node": node,
            "cpu": run["machine"]["cpu"], "threads": run["machine"]["threads"], "seconds": round(seconds, 2),
            "metric": metric,
            "budget": run["config"]["recipe"]["max_ppl_increase" if language_model else "max_accuracy_drop"],
            "profile_name": (run["profile"] or {}).get("name"),
            "within_budget": run["selection"].get("within_budget"),
            "selected": next(r for r in rows if r["selected"]), "rows": rows}


def failed_row(cell: Cell, why: str, node: dict | None, seconds: float | None) -> dict:
    return {**_cell(cell), "status": f"failed: {why}", "node": node,
            "seconds": None if seconds is None else round(seconds, 2)}


def _cell(cell: Cell) -> dict:
    return {"cell": cell.id, "model": cell.model, "target": cell.target, "profile": cell.profile,
            "recipe": cell.recipe, "settings": cell.settings}


def _row(r: dict, metric: str) -> dict:
    latency = r["latency"] or {}
    return {"name": r["name"], "backend": r["backend"], "precision": r["precision"], "role": r["role"],
            "status": r["status"] if r["status"] in ("ok", "predicted", "needs device") else
            f"{r['status']}: {r['reason']}", "quality": r["metrics"].get(metric),
            "drop": r["quality_drop"], "drop_ci95": r["quality_drop_ci95"], "within_budget": r["within_budget"],
            "p50_ms": latency.get("p50_ms"), "p50_ci95_ms": latency.get("p50_ci95_ms"),
            "predicted_ms": (r["predicted"] or {}).get("ms"), "size_bytes": r["size_bytes"],
            "selected": r["selected"]}


def _language_model_row(r: dict, metric: str) -> dict:
    """A language-model build's row: perplexity and its relative increase; decode ms per token (what the sweep ranks
    on), decode tokens/s and time to first token, as measured here (medians, with 95% CIs) or, for a build that runs
    on the device alone (status "predicted"), as predicted for the device profile (`speed` says which)."""
    latency = r["latency"] or {}
    predicted = r.get("predicted") or {}
    speed = "measured" if latency.get("decode_tokens_per_s") else "predicted" if predicted.get(
        "decode_tokens_per_s") else None
    if speed == "predicted":
        rate = {"median": predicted["decode_tokens_per_s"], "ci95": None}
        ttft = {str(length): ms for length, ms in (predicted.get("ttft_ms") or {}).items()}
    else:
        rate = latency.get("decode_tokens_per_s") or {}
        ttft = {length: s["median"] for length, s in (latency.get("ttft_ms") or {}).items()}
    return {"name": r["name"], "backend": r["backend"], "precision": r["precision"], "role": r["role"],
            "status": r["status"] if r["status"] in ("ok", "predicted") else f"{r['status']}: {r['reason']}",
            "quality": r["metrics"].get(metric), "quality_ci95": r["metrics"].get(f"{metric}_ci95"),
            "drop": r["quality_drop"], "drop_ci95": r["quality_drop_ci95"], "within_budget": r["within_budget"],
            "top1_agreement": r["metrics"].get("top1_agreement"), "speed": speed,
            "ms_per_token": _per_token(rate.get("median")),
            "ms_per_token_ci95": None if not rate.get("ci95") else [_per_token(x) for x in reversed(rate["ci95"])],
            "decode_tokens_per_s": rate.get("median"), "decode_tokens_per_s_ci95": rate.get("ci95"),
            "ttft_ms": ttft, "p50_ms": None, "p50_ci95_ms": None, "predicted_ms": None,
            "size_bytes": r["size_bytes"], "peak_memory_bytes": r.get("peak_memory_bytes"), "selected": r["selected"]}


def _per_token(tokens_per_s: float | None) -> float | None:
    """Milliseconds per decoded token."""
    return None if not tokens_per_s else 1000 / tokens_per_s


def _track(run, folder: Path, tracking: dict) -> str:
    """Log the cell's run to MLflow as a child of the sweep's run; its run id."""
    from edgeml.report.tracking import track

    os.environ.update(tracking["env"])
    return track(run, folder, "mlflow", parent=tracking["parent"])
