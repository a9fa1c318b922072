"""A language-model build in a process of its own.

Exporters and lowerings hold several copies of a model's weights while they work (ExecuTorch's lowering of a 135M
model peaks near 7.5 GB), so each build runs in a child process: its memory is given back when it ends, and a build
that the kernel kills for want of memory, or that crashes the interpreter, is a row that says so instead of the end
of the run.

    python -m edgeml.pipeline.build_apart SPEC.json

SPEC: {target, candidate, source, out, log, threads, config, calibration: {documents, names, origin}}. The child
appends its output to `log`, and on a refusal writes its one line to SPEC.json's sibling `<candidate>.refused`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from edgeml.errors import first_line
from edgeml.inputs.text import Text
from edgeml.targets.base import BuildRefused, LanguageModelBuild

REFUSED = 3                   # the child's exit status when the build refused the model


def build_apart(target: str, candidate: str, source: Path, out: Path, context: LanguageModelBuild) -> None:
    """Build `candidate` of `target` as its build would in this process; BuildRefused with the reason when it
    refuses, fails, or its process dies."""
    spec = out.parent / f"{candidate}.build.json"
    refused = spec.with_suffix(".refused")
    spec.write_text(json.dumps({
        "target": target, "candidate": candidate, "source": str(source), "out": str(out), "log": str(context.log),
        "threads": context.threads, "config": context.config, "refused": str(refused),
        "calibration": {"documents": context.calibration.documents, "names": context.calibration.names,
                        "origin": context.calibration.origin}}))
    with context.log.open("a") as log:
        code = subprocess.run([sys.executable, "-m", __name__, str(spec)], stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    if code == 0:
        return
    if code == REFUSED and refused.is_file():
        raise BuildRefused(refused.read_text())
    if code < 0:
        name = signal.Signals(-code).name
        memory = " (the kernel's out-of-memory killer stops a process this way)" if -code == signal.SIGKILL else ""
        raise BuildRefused(f"the build's process was killed by {name}{memory}; its output is in {context.log}")
    raise BuildRefused(f"the build's process ended with exit status {code}; its output is in {context.log}")


def main(argv: list[str]) -> int:
    from edgeml.targets import get_target

    spec = json.loads(Path(argv[0]).read_text())
    calibration = spec["calibration"]
    context = LanguageModelBuild(Text(tuple(calibration["documents"]), tuple(calibration["names"]),
                                      calibration["origin"]), spec["config"], Path(spec["log"]), spec["threads"])
    candidate = next(c for c in get_target(spec["target"]).language_models if c.name == spec["candidate"])
    try:
        candidate.build(Path(spec["source"]), Path(spec["out"]), context)
    except BuildRefused as e:
        Path(spec["refused"]).write_text(str(e))
        return REFUSED
    except Exception as e:  # an exporter's own error: one line for the report, the traceback in the log
        traceback.print_exc()
        Path(spec["refused"]).write_text(f"{candidate.name} failed: {first_line(e)}"[:300])
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
