"""The run record: one JSON-serialisable account of an `optimize` run.

Reports and bundle manifests are renderings of this record, never a second source of truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    """One row of the candidate table: the reference (the original model) or a candidate."""
    name: str
    backend: str
    precision: str
    role: str                                  # reference | stage (a PyTorch pass's output) | candidate
    # ok (measured here) | predicted | needs device (runtime only there; no prediction) |
    # unavailable | skipped | failed
    status: str = "ok"
    reason: str | None = None                  # why not measured here
    method: str = ""
    backend_version: str | None = None
    metrics: dict = field(default_factory=dict)    # accuracy, agreement, cosine, max_abs_error
    quality_drop: float | None = None          # reference quality - this row's quality
    quality_drop_ci95: list[float] | None = None   # paired bootstrap 95% CI of quality_drop (uncertainty.py)
    # what else judged the drop: samples, step (1/samples for top-1 metrics), worse/better (changed
    # top-1 verdicts), mcnemar_p (accuracy); uncertainty.drop_uncertainty without ci95
    quality_test: dict | None = None
    within_budget: bool | None = None
    latency: dict | None = None                # measure.latency.Latency.to_dict(): measured here
    predicted: dict | None = None              # roofline prediction for the profile's device (never measured)
    size_bytes: int | None = None
    peak_memory_bytes: int | None = None
    build_seconds: float | None = None         # the time to build it, or to restore it from the cache
    cached: bool = False                       # its build was restored from the cache
    # the build's attempts, one line each, the one that worked last (onnx_attempts: a graph rewrite that broke
    # the graph is retried without it); empty for builds that do not record them
    attempts: list[str] = field(default_factory=list)
    selected: bool = False


@dataclass
class Run:
    edgeml_version: str
    created: str                               # UTC, ISO 8601
    target: str
    config: dict                               # the effective settings of the run
    machine: dict
    packages: dict
    source: dict
    data: dict                                 # calibration, evaluation, quality metric, notes
    profile: dict | None = None                # the device profile the plan was made for (None: this machine)
    export: dict | None = None
    compression: dict = field(default_factory=dict)   # prune / distill results
    tuning: dict = field(default_factory=dict)        # accuracy-budget search per candidate
    rows: list[Row] = field(default_factory=list)
    selection: dict = field(default_factory=dict)
    int8_scheme: dict | None = None            # edgeml.measure.cpu_features: the INT8 scheme for this CPU, and why
    bundle: dict | None = None
    # ONNX Runtime's per-layer profile of the selected artifact: {artifact, backend, threads, runs,
    # kernels_ms, run_ms, layers: [{name, op, ms, share, added_by_runtime}], ops: [{op, ms, share, count}],
    # reason}; for other backends layers is None and reason says why
    layer_times: dict | None = None
    steps: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str | None = None

    @property
    def selected(self) -> Row | None:
        return next((r for r in self.rows if r.selected), None)

    @property
    def reference(self) -> Row:
        return next(r for r in self.rows if r.role == "reference")

    def to_dict(self) -> dict:
        return asdict(self)


def paired_speedup(selection: dict, base: str) -> dict | None:
    """From a recorded selection: the selected row's speed-up over the row named `base` ({ratio, ci95}) in the
    alternating rounds (edgeml.pipeline.selection's record of them), when both were timed there and the selected
    row was the fastest; else None."""
    paired = selection.get("paired") or {}
    if paired.get("fastest") != selection.get("candidate"):
        return None
    return (paired.get("rows", {}).get(base) or {}).get("speedup_of_fastest")
