"""The bundle of a language model: the runtime's folder, a manifest, the reference prompts with the shipped build's
own greedy outputs, and a standalone run.py that generates (and with --verify checks those outputs again).

    bundle/manifest.json   kind "language-model", runtime, precision, generation settings, quality and speed
                           as measured, sha256 of every file
    bundle/model/          what the runtime loads (its tokenizer and chat template included)
    bundle/reference.json  prompts (text and token ids) and the build's greedy answers to them
    bundle/run.py          python run.py "prompt" [--chat] | --verify

A build the device alone runs (a TensorRT Edge-LLM engine) is bundled as its hand-off (model/checkpoint and
model/build_engine.sh): its manifest has the speed predicted for the device ("predicted") instead of "speed", and
its run.py says how to build it there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeml.bundle.standalone_generate import RUN_PY
from edgeml.hashing import sha256_file
from edgeml.report.record import Row, Run

MANIFEST_VERSION = 2           # 2: "files" is the list of {path, sha256, size} that every bundle has


def write_language_model_bundle(folder: Path, built: Path, row: Row, run: Run, questions: list[str],
                                prompt_ids: list[list[int]], answers: list[list[int]], answer_texts: list[str],
                                max_new_tokens: int, context_length: int) -> dict:
    """Write the bundle of the build in `built` (the row `row` of `run`) into `folder`; returns its manifest.
    `context_length`: the most tokens (prompt and new ones) the build holds."""
    folder.mkdir(parents=True)
    shutil.copytree(built, folder / "model")
    (folder / "reference.json").write_text(json.dumps(
        {"prompts": questions, "prompt_ids": prompt_ids, "output_ids": answers, "outputs": answer_texts,
         "max_new_tokens": max_new_tokens}, indent=1) + "\n")
    (folder / "run.py").write_text(RUN_PY)
    source = run.source
    manifest = {
        "kind": "language-model", "manifest_version": MANIFEST_VERSION, "edgeml_version": run.edgeml_version,
        "name": Path(source["path"]).stem, "target": run.target, "runtime": row.backend,
        "runtime_version": row.backend_version,
        "precision": row.precision, "build": row.name, "method": row.method, "model": "model",
        "source": {k: source.get(k) for k in ("architecture", "model_type", "parameters", "format")},
        "generation": {"max_new_tokens": 128, "context_length": context_length,
                       "eos_token_ids": list(run.data.get("eos_token_ids", []))},
        "quality": {k: row.metrics.get(k) for k in ("perplexity", "perplexity_ci95", "ppl_increase",
                                                    "ppl_increase_ci95", "top1_agreement", "kl", "same_answers")},
        **_speed(row, run),
        "files": [{"path": p.relative_to(folder).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
                  for p in sorted(folder.rglob("*")) if p.is_file()],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"path": str(folder), "runtime": row.backend, "build": row.name,
            "size_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def _speed(row: Row, run: Run) -> dict:
    """The manifest's "speed" as measured here, or "predicted" for the device."""
    if row.status == "predicted":
        p = row.predicted
        return {"predicted": {"profile": p["profile"], "device": p["device"], "ttft_ms": p["ttft_ms"],
                              "decode_tokens_per_s": p["decode_tokens_per_s"]},
                "device_build": "model/build_engine.sh"}
    return {"speed": {"measured_on": run.machine.get("cpu"), "threads": run.config.get("threads"),
                      "ttft_ms": {k: v["median"] for k, v in row.latency["ttft_ms"].items()},
                      "decode_tokens_per_s": row.latency["decode_tokens_per_s"]["median"]}}
