"""What the phases of one `optimize` run share once the original is measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeml.bundle.write import Judged
from edgeml.pipeline.bench import Bench
from edgeml.pipeline.exported import Exported
from edgeml.pipeline.recipe import Recipe
from edgeml.profiles import Profile
from edgeml.progress import Reporter
from edgeml.report.record import Run
from edgeml.runtimes.base import Artifact
from edgeml.targets.base import BuildContext, Candidate, Target

Build = Callable[[Candidate, Path, BuildContext], tuple[Artifact, bool]]   # (artifact, restored from the cache)


@dataclass
class RunContext:
    recipe: Recipe
    target: Target
    profile: Profile | None
    reporter: Reporter
    debug: bool                  # every error ends the run (else a candidate's own error fails that row only)
    run: Run                     # the record the phases fill in
    work: Path                   # builds go here; removed once the bundle is written
    exported: Exported           # the ONNX model candidates are built from
    bench: Bench                 # how rows are judged and timed
    build_context: BuildContext  # what builds may use
    build: Build                 # a candidate's build, through the cache
    original_eligible: bool      # an ONNX input: the original is a candidate itself
    artifacts: dict[str, Artifact] = field(default_factory=dict)   # by row name
    judged: dict[str, Judged] = field(default_factory=dict)        # what judged each artifact, by row name
