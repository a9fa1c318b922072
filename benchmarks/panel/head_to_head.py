"""edgeml's bundle against every peer model within the budget, timed side by side in one process:
`python -m benchmarks.panel.head_to_head SPEC`.

The panel's rows are timed in separate processes, minutes apart, on a machine shared with other work, and each
speed-up is against its own run of the input model; two of them differ by a few percent from noise alone. The
verdict (is edgeml at least as fast as the fastest peer?) is settled here instead: every model is timed once per
round in alternating rounds (edgeml.measure.paired_timing), on the same input, so that a change in the machine's
load slows all of them alike, and each peer's p50 / edgeml's p50 comes from the rounds' own ratios with a 95% CI.
SPEC (JSON) names the bundle, the peers' model files, the evaluation data, threads, seconds and rounds; the result
goes to `result.json` beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.panel.peers import batch_of
from edgeml.bundle.folder import Bundle
from edgeml.inputs.data import load_npz
from edgeml.measure.latency import MeasureConfig
from edgeml.measure.paired_timing import interleave, round_speedup, summarize
from edgeml.runtimes.onnxruntime import OrtRunner
from edgeml.runtimes.openvino import OpenVinoRunner

EDGEML = "edgeml"


def open_peer(model: Path, threads: int):
    """A peer's model as the panel's peer run opened it: OpenVINO IR with no hints, or ONNX in ONNX Runtime."""
    return OpenVinoRunner(model, threads, {}) if model.suffix == ".xml" else OrtRunner(model, threads)


def run(spec: dict) -> dict:
    threads = spec["threads"]
    runners = {EDGEML: Bundle.open(spec["bundle"]).open_runner(threads)}
    runners.update({name: open_peer(Path(path), threads) for name, path in spec["peers"].items()})
    batch, fixed = batch_of(Path(spec["model"]))
    feeds = load_npz(Path(spec["eval"])).feeds(0, batch if fixed else 1)
    rounds = interleave({name: (lambda r=runner: r.run(feeds)) for name, runner in runners.items()},
                        spec["rounds"], MeasureConfig(seconds=spec["measure_seconds"]))
    summaries = {name: summarize(runs) for name, runs in rounds.items()}
    for summary in summaries.values():
        summary.pop("draws")
    ours = summaries[EDGEML]
    return {"status": "ok", "rounds": spec["rounds"], "p50_ms": {n: s["p50_ms"] for n, s in summaries.items()},
            "p50_ci95_ms": {n: s["p50_ci95_ms"] for n, s in summaries.items()},
            # above 1: edgeml is faster than that peer
            "peer_over_edgeml": {n: round_speedup(s, ours) for n, s in summaries.items() if n != EDGEML}}


def main() -> None:
    spec_path = Path(sys.argv[1])
    result = run(json.loads(spec_path.read_text()))
    (spec_path.parent / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
