"""Per-layer time of the selected artifact, from ONNX Runtime's profiler."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from edgeml.report.record import Row
from edgeml.runtimes.base import Artifact

LAYER_PROFILE_SECONDS = 0.2   # about how long the per-layer profile of the selected artifact runs
LAYER_PROFILE_RUNS = (3, 50)  # and its fewest and most profiled runs (after 3 warm-up runs)


def layer_times(row: Row, artifact: Artifact, sample: dict, threads: int) -> dict:
    """Per-layer time of the selected artifact, from ONNX Runtime's profiler: mean per run, largest first.

    `share` is a layer's part of the time spent in kernels (`kernels_ms`); `run_ms` is the whole
    profiled run, session overhead included. Other backends get `layers` None and the reason.
    """
    record = {"artifact": row.name, "backend": artifact.backend, "threads": threads, "layers": None}
    if row.latency is None:
        return {**record, "reason": "the artifact runs on the device only: nothing about it is timed here"}
    if artifact.backend != "onnxruntime":
        return {**record, "reason": f"per-layer time is read from ONNX Runtime's CPU profiler, which does not run "
                                    f"{artifact.backend} artifacts"}
    import onnx
    import onnxruntime as ort

    model = artifact.folder / artifact.entry
    fewest, most = LAYER_PROFILE_RUNS
    runs = max(fewest, min(most, int(LAYER_PROFILE_SECONDS * 1000 / row.latency["p50_ms"])))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(3 + runs):
            session.run(None, sample)
        events = json.loads(Path(session.end_profiling()).read_text())
    timed = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
                   key=lambda e: e["ts"])[-runs:]
    graph = onnx.load(str(model), load_external_data=False).graph
    nodes = {n.name: n for n in graph.node}
    producers = {o: n.name for n in graph.node for o in n.output}
    totals: dict[str, list] = {}                    # name -> [op, µs, added by the runtime]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= timed[0]["ts"]:
            kernel, op = e["name"].removesuffix("_kernel_time"), e["args"]["op_name"]
            node = _model_node(kernel, op, nodes, producers)
            totals.setdefault(node or kernel, [op, 0.0, node is None])[1] += e["dur"]
    kernels_us = sum(t[1] for t in totals.values())
    layers = [{"name": name, "op": op, "ms": round(us / runs / 1000, 6), "share": round(us / kernels_us, 6),
               "added_by_runtime": added}
              for name, (op, us, added) in sorted(totals.items(), key=lambda kv: -kv[1][1])]
    ops: dict[str, dict] = {}
    for layer in layers:
        entry = ops.setdefault(layer["op"], {"op": layer["op"], "ms": 0.0, "share": 0.0, "count": 0})
        entry.update(ms=round(entry["ms"] + layer["ms"], 6), share=round(entry["share"] + layer["share"], 6),
                     count=entry["count"] + 1)
    return {**record, "runs": runs, "kernels_ms": round(kernels_us / runs / 1000, 6),
            "run_ms": round(sum(e["dur"] for e in timed) / runs / 1000, 6), "layers": layers,
            "ops": sorted(ops.values(), key=lambda o: -o["ms"]), "reason": None}


def _model_node(kernel: str, op: str, nodes: dict, producers: dict) -> str | None:
    """The model node an ONNX Runtime kernel computes, or None for a node the runtime added.

    The runtime renames the nodes it rewrites: `fused X` and `X_token_N` keep the node's name;
    NCHWc kernels take their output's, which after a Conv+Relu fusion is the Relu's (the Conv is named).
    """
    base = re.sub(r"^fused |(_token_\d+)+$|_nchwc$", "", kernel)
    if base in nodes:
        return base
    node = producers.get(base)
    upstream = producers.get(nodes[node].input[0]) if node and nodes[node].input else None
    return upstream if upstream and nodes[upstream].op_type == op else node
