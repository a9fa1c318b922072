"""`edgeml sweep`: every cell of SWEEP.yaml as a Ray task, journaled as it finishes, then the results tables.

Without an address Ray starts inside this process (every core of this machine, one timing slot); with
`--address auto` or `ray://HOST:PORT` the sweep joins a cluster whose nodes each offer one timing slot
(`ray start ... --resources '{"edgeml_timing": 1}'`). A task whose worker or node dies is run again by Ray
(RETRIES times); the journal makes `--resume` run only the cells that have not finished. Each row records when
the sweep run that timed it started (`run_started`), so a table of cells from several runs says so.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgeml.errors import EdgemlError, first_line
from edgeml.sweep import results, slot
from edgeml.sweep.cells import failed_row, run_cell
from edgeml.sweep.journal import Journal
from edgeml.sweep.spec import Cell, SweepError, load_sweep

RETRIES = 3


def sweep(path: str | Path, out: str | Path, *, address: str | None = None, max_parallel: int | None = None,
          resume: bool = False, track: str | None = None, console: Console | None = None) -> dict:
    """Run the sweep SWEEP.yaml at `path` into `out`; the sweep record (also OUT/sweep.json)."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    spec = load_sweep(path)
    out = Path(out).resolve()
    journal = Journal(out, resume)
    if max_parallel is not None and max_parallel < 1:
        raise SweepError(f"--max-parallel must be at least 1, got {max_parallel}")
    if track is not None:
        from edgeml.report.tracking import check_tracker

        models = sorted({c.model for c in spec.cells if c.language_model})
        if models:
            raise SweepError(f"--track {track} does not log language-model runs (optimize --track refuses them too): "
                             f"drop --track, or sweep {', '.join(models)} apart without it")
        check_tracker(track)
    finished = journal.finished(spec.cells)
    todo = [c for c in spec.cells if c.id not in finished]
    console = console or Console(stderr=True, quiet=True)
    if finished:
        console.print(f"{len(finished)} of {len(spec.cells)} cells already finished (journal in {journal.folder})")
    rows = dict(finished)
    info = {"address": address or "local", "ran": len(todo)}
    if todo:
        with ray_session(address) as cluster, _tracking(track, spec.path, out) as tracking:
            info |= cluster
            limit = max_parallel or cluster["cpus"]
            rows |= _run(todo, out, spec.cache_dir, journal, limit, tracking, console, started)
    record = results.build(spec.path, [rows[c.id] for c in spec.cells], info)
    results.write(out, record)
    return record


@contextmanager
def ray_session(address: str | None) -> Iterator[dict]:
    """Ray, started here (address None) or joined; every node must offer a timing slot."""
    try:
        import ray
    except ImportError:
        raise EdgemlError("edgeml sweep runs on Ray: pip install 'edgeml[scale]'") from None
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        if address is None:
            ray.init(resources={slot.RESOURCE: 1}, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SweepError(f"cannot start or reach Ray{'' if address is None else ' at ' + address}: "
                         f"{first_line(e)}") from None
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        bare = [n["NodeManagerAddress"] for n in nodes if not slot.node_has_slot(n)]
        if bare:
            raise SweepError(f"Ray node(s) {', '.join(bare)} offer no timing slot: start each node with "
                             f"ray start ... --resources '{{\"{slot.RESOURCE}\": 1}}'")
        yield {"nodes": len(nodes), "cpus": max(1, int(ray.cluster_resources().get("CPU", 0)))}
    finally:
        ray.shutdown()


def _run(todo: list[Cell], out: Path, cache_dir: Path | None, journal: Journal, limit: int,
         tracking: dict | None, console: Console, started: str) -> dict[str, dict]:
    """Run `todo` on Ray, at most `limit` at a time; journal each cell that finishes (done, or failed for a reason
    the user can fix), its row marked with `started`, the start of this sweep run; row per cell id.

    The limit matters: Ray lends a task's CPU to others while it waits for the timing slot, so without it more
    cells than cores would build at once."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    task = ray.remote(run_cell).options(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)
    queue, pending, rows = list(todo), {}, {}
    failed = 0
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        bar = progress.add_task("Sweep", total=len(todo), state="")
        while queue or pending:
            while queue and len(pending) < limit:
                cell = queue.pop(0)
                folder = out / "cells" / cell.id
                folder.parent.mkdir(parents=True, exist_ok=True)      # not by two cells at once
                pending[task.remote(cell, str(folder), None if cache_dir is None else str(cache_dir), tracking)] = cell
            progress.update(bar, state=f"running {len(pending)}, failed {failed}")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except RayTaskError as e:
                    kind = "" if isinstance(e.cause, EdgemlError) else "internal error: "
                    row = failed_row(cell, f"{kind}{first_line(e.cause or e)} (rerun with --resume)", None, None)
                except RayError as e:
                    row = failed_row(cell, f"{type(e).__name__} after {RETRIES} retries (rerun with --resume)",
                                     None, None)
                else:
                    row["run_started"] = started
                    journal.record(cell, row)
                rows[cell.id] = row
                failed += row["status"] != "done"
                progress.advance(bar)
                console.print(_line(row))
    return rows


def _line(row: dict) -> str:
    if row["status"] != "done":
        return f"[red]✗[/red] {row['cell']}: {row['status']}"
    s = row["selected"]
    if s.get("ms_per_token") is not None:                       # a language model: decode speed
        ms = f"{s['ms_per_token']:.3f} ms per token ({s['decode_tokens_per_s']:.1f} tokens/s)"
    else:
        ms = f"{s['p50_ms']:.3f} ms" if s["p50_ms"] is not None else (
            f"{s['predicted_ms']:.3f} ms predicted" if s["predicted_ms"] is not None else "no latency")
    where = f"{row['seconds']:.1f} s on {row['node']['ip']}"
    return f"[green]✓[/green] {row['cell']}: {s['name']}, {ms} [dim]({where})[/dim]"


@contextmanager
def _tracking(track: str | None, path: Path, out: Path) -> Iterator[dict | None]:
    """With --track: the MLflow run of the sweep, which every cell's run is logged under, and the environment the
    cells log with."""
    if track is None:
        yield None
        return
    from edgeml.report.tracking import parent_run

    with parent_run(f"sweep-{path.stem}", {"edgeml.sweep": str(path), "edgeml.output": str(out)}) as (
            parent, uri, experiment):
        env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": experiment}
        if uri.startswith("file:"):
            env["MLFLOW_ALLOW_FILE_STORE"] = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "true")
        yield {"parent": parent, "env": env}
