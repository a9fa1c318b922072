"""`edgeml profile BUNDLE`: time a bundle's artifact on the machine it was shipped to.

The artifact runs with the runtime found here (the manifest's backend), batch 1, timed by
`edgeml.measure.latency.measure_latency` exactly as the build report times its rows, so the two numbers can
sit side by side (`edgeml report RUN_DIR --merge device_report.json`).
"""

from __future__ import annotations

import gc
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgeml.bundle.folder import MISSING, Bundle
from edgeml.bundle.reference import REFERENCE
from edgeml.errors import EdgemlError, first_line
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.machine import machine_info

FORMAT = "edgeml-device-report"
RANDOM_SEED = 0


def profile_bundle(bundle: Path | str, *, threads: int | None = None, measure_seconds: float = 1.0) -> dict:
    """Load BUNDLE's artifact here, time one input, return the device report (see write_device_report)."""
    bundle = Bundle.open(bundle, fields=True)
    if bundle.language_model:
        return profile_language_model(bundle, threads=threads or os.cpu_count() or 1)
    manifest, name, backend = bundle.manifest, bundle.backend_name, bundle.runtime
    if backend is None:
        raise EdgemlError(f"{bundle.folder} needs the {name} runtime, which this edgeml does not know: update edgeml")
    if backend.missing():
        if name == "tensorrt":
            raise EdgemlError("this bundle holds a TensorRT model and TensorRT is not installed here: run "
                              "`edgeml build-engine BUNDLE` and `edgeml profile BUNDLE` on the device (JetPack), "
                              "or on a GPU host with TensorRT")
        raise EdgemlError(f"this bundle runs on {name}, which is not installed here: {backend.install}")
    entry = _entry_sha256(bundle)
    threads = threads or os.cpu_count() or 1
    if threads < 1 or measure_seconds <= 0:
        raise EdgemlError("--threads must be at least 1 and --measure-seconds above 0")
    feeds, source = _input(bundle.folder, manifest)
    try:
        runner = bundle.open_runner(threads)
        runner.run(feeds)
    except Exception as e:
        raise EdgemlError(f"{name} cannot run {manifest['entry']} here: {first_line(e)}") from e
    gc.collect()
    latency = measure_latency(lambda: runner.run(feeds), MeasureConfig(seconds=measure_seconds))
    return {
        "format": FORMAT,
        "bundle": {"candidate": manifest["candidate"], "target": manifest.get("target"),
                   "precision": manifest.get("precision"), "entry": manifest["entry"], "entry_sha256": entry},
        "runtime": {"name": name, "version": backend.version()},
        "machine": machine_info(threads),
        "threads": threads,
        "input": source,
        "latency": latency.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def profile_language_model(bundle: Bundle, *, threads: int, runs: int = 3) -> dict:
    """A language model's bundle timed here with its runtime: time to first token and decode tokens/s after each of
    reference.json's prompts (a warm-up, then `runs` rounds over them), as the build report times its rows."""
    from edgeml.measure.decode_speed import decode_rate, first_token_seconds, summary
    from edgeml.runtimes.generation import GENERATION_RUNTIMES

    manifest = bundle.manifest
    runtime = GENERATION_RUNTIMES.get(manifest["runtime"])
    if runtime is None:
        raise EdgemlError(f"{bundle.folder} needs the {manifest['runtime']} runtime, which this edgeml does not know: "
                          "update edgeml")
    if runtime.missing():
        raise EdgemlError(f"this bundle runs on {runtime.name}, which is not installed here: pip install "
                          f"'{runtime.extra}'")
    changed = [c.path for c in bundle.check_files() if not c.ok]
    if changed:
        raise EdgemlError(f"{bundle.folder}: {', '.join(changed[:5])} missing or changed since it was bundled: ship "
                          "the bundle again")
    if threads < 1:
        raise EdgemlError("--threads must be at least 1")
    prompts = json.loads((bundle.folder / "reference.json").read_text())["prompt_ids"]
    new_tokens = manifest["generation"]["max_new_tokens"]
    try:
        generator = runtime.open(bundle.folder / manifest["model"], threads)
        decode_rate(generator, prompts[0], 8)
        ttft = [1000 * first_token_seconds(generator, ids) for _ in range(runs) for ids in prompts]
        decode = [decode_rate(generator, ids, new_tokens) for _ in range(runs) for ids in prompts]
    except Exception as e:  # a runtime raises many kinds for a model it cannot load or run
        raise EdgemlError(f"{runtime.name} cannot run {manifest['model']} here: {first_line(e)}") from e
    return {
        "format": FORMAT, "kind": "language-model",
        "bundle": {"build": manifest["build"], "target": manifest.get("target"), "precision": manifest.get("precision"),
                   "model": manifest["model"]},
        "runtime": {"name": runtime.name, "version": runtime.version()},
        "machine": machine_info(threads),
        "threads": threads,
        "input": f"reference.json's {len(prompts)} prompts, {runs} rounds, {new_tokens} new tokens each",
        "ttft_ms": summary(ttft),
        "decode_tokens_per_s": summary(decode),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_device_report(report: dict, out: Path | str) -> Path:
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        partial.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(partial, out)
    except OSError as e:
        raise EdgemlError(f"cannot write {out}: {e.strerror or first_line(e)}") from None
    return out


def _entry_sha256(bundle: Bundle) -> str:
    """The manifest's sha256 of the entry file, after checking the file here still has it."""
    entry = bundle.entry
    check = bundle.check_files([entry])
    if not check or check[0].problem in MISSING:
        raise EdgemlError(f"{bundle.folder} lacks its entry file {entry}: ship the bundle again")
    if not check[0].ok:
        raise EdgemlError(f"{bundle.folder / entry} differs from the manifest's sha256: ship the bundle again")
    return next(f.sha256 for f in bundle.files if f.path == entry)


def _input(bundle: Path, manifest: dict) -> tuple[dict[str, np.ndarray], str]:
    """The first sample of reference.npz when the bundle has one, else a seeded random input; and which."""
    specs = manifest.get("inputs") or []
    path = bundle / REFERENCE
    if path.is_file():
        with np.load(path) as data:
            arrays = {k.removeprefix("input/"): data[k] for k in data.files if k.startswith("input/")}
        if arrays and (not specs or {s["name"] for s in specs} <= arrays.keys()):
            batch = {s["name"]: _batch(s) for s in specs}
            return ({k: np.ascontiguousarray(np.resize(v[:1], (batch.get(k, 1),) + v.shape[1:]))
                     for k, v in arrays.items()}, f"{REFERENCE}, first sample")
    if not specs:
        raise EdgemlError(f"{bundle}'s manifest lists no inputs and it has no {REFERENCE}: rebuild the bundle")
    rng = np.random.default_rng(RANDOM_SEED)
    feeds = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"])  # symbolic dims: 1
        dtype = np.dtype(spec["dtype"])
        feeds[spec["name"]] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                               else rng.integers(0, 2, shape).astype(dtype))
    described = ", ".join(f"{k} {'x'.join(map(str, v.shape))} {v.dtype}" for k, v in feeds.items())
    return feeds, f"random (seed {RANDOM_SEED}; no {REFERENCE} in the bundle): {described}"


def _batch(spec: dict) -> int:
    """The input's fixed batch size (a model exported for batch N takes exactly N), else 1."""
    first = spec["shape"][0] if spec.get("shape") else None
    return first if isinstance(first, int) and first > 0 else 1
