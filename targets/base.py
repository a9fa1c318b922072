"""What every target is made of: candidate recipes, each a runtime (edgeml.runtimes), a precision and a build.

A `Candidate` is one way a target can compile a model: a backend (the runtime that runs the artifact), a
precision and a build function. It is plain data so `edgeml targets`, the pipeline and the docs read the
same table.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeml.compress.quantize import Calibration, Int8Config
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import SourceModel
from edgeml.inputs.text import Text
from edgeml.profiles import Profile
from edgeml.runtimes.base import Artifact, Backend, missing_modules
from edgeml.runtimes.generation import GENERATION_RUNTIMES


@dataclass
class BuildContext:
    """What a build may use: the calibration data (never the evaluation data) and settings."""
    calibration: Dataset
    int8: Int8Config = field(default_factory=Int8Config)
    source: SourceModel | None = None          # the PyTorch model the ONNX was exported from (None for ONNX inputs)
    max_accuracy_drop: float | None = None     # the recipe's budget, for builds that search within it
    profile: Profile | None = None             # the device the build is for (--profile), when one is named


@dataclass(frozen=True)
class AccuracyControl:
    """A quantizer's own search for the layers to keep in float within the budget (NNCF's
    quantize_with_accuracy_control), run next to edgeml's (edgeml.pipeline.repair) and judged like its trials."""
    # (onnx model, out folder, context, tuning data, score) -> the artifact, within context.max_accuracy_drop;
    # score(indices of tuning samples, the model's outputs on them) -> each sample's quality (it may raise: stop).
    build: Callable[[Path, Path, BuildContext, Dataset, Callable], Artifact]
    # (the artifact's model file, the candidate's `layers`) -> those it computes in float
    kept: Callable[[Path, list[tuple[str, str]]], tuple[str, ...]]
    method: str = ""


@dataclass(frozen=True)
class Quantizers:
    """The quantizers of a candidate's quantized build (each activation's and weight's, finer than a layer), which
    the accuracy-budget search ranks and reverts to float; its build reverts those `BuildContext.int8.reverted`
    names."""
    # (the build's model file, the ONNX model it was built from) -> (quantizer, what it quantizes), in graph order
    listed: Callable[[Path, Path], list[tuple[str, str]]]
    # (the build's model file, the ONNX model, quantizers) -> run(feeds, mask): the outputs of the build with each
    # quantizer i reverted where mask[i], all in one compiled model (for ranking, not timing)
    switchable: Callable[[Path, Path, list[str]], Callable[[dict, np.ndarray], list[np.ndarray]]]


@dataclass(frozen=True)
class Candidate:
    name: str
    backend: Backend
    precision: str
    build: Callable[[Path, Path, BuildContext], Artifact]   # (onnx model, out folder, context)
    needs: tuple[str, ...] = ()      # import names its passes need (e.g. nncf)
    method: str = ""                 # one line: how it is made
    quantizer: str | None = None     # ort | openvino | inc: the tool that quantizes it (--quantizer)
    # Why the candidate does not suit this ONNX model (e.g. dynamic INT8 on a model without
    # MatMul), or None when it does; None means it suits every model.
    applies: Callable[[Path], str | None] | None = None
    # For builds that honour BuildContext.int8.exclude: lists the (node name, op type) layers
    # the accuracy-budget search may keep in float, one at a time.
    layers: Callable[[Path], list[tuple[str, str]]] | None = None
    # For models with many layers: (the fully quantized build's model file, calibration data, layers)
    # -> each layer's local error in it, which ranks layers in one pass instead of one build each.
    local_errors: Callable[[Path, Dataset, list[tuple[str, str]]], dict[str, float]] | None = None
    accuracy_control: AccuracyControl | None = None     # searched too, for candidates with `layers`
    # For candidates with `layers`: the alternatives to the default ranges and corrections that its quantizer offers,
    # each a named change of BuildContext.int8, in the order the accuracy-budget search tries them before it keeps
    # layers in float.
    calibrations: tuple[Calibration, ...] = ()
    # For candidates with `layers` whose build honours BuildContext.int8.reverted: its quantizers, which the search
    # reverts one by one instead of keeping whole layers in float.
    quantizers: Quantizers | None = None
    # Its quantizer can start from a model fine-tuned with fake INT8 (edgeml.pipeline.quantization_aware): the
    # last resort when it breaks the budget and training data is given.
    quantization_aware: bool = False
    # (candidate, precision) of the candidates that run this one's model with another runtime config
    # (openvino-int8-bf16): a `-mixed` row of this one is judged and timed with their config too.
    runs_also_as: tuple[tuple[str, str], ...] = ()
    opt_in: bool = False             # built only when --quantizer names its quantizer
    # For artifacts whose runtime lives on the device (TensorRT builds its engine there): the backend
    # that runs the same model file here to check its quality (ONNX Runtime on the QDQ model). When
    # `backend` is missing here, the row's quality is measured with `check_with` and its latency is
    # only predicted from the device profile (status "needs device").
    check_with: Backend | None = None

    needs_dla: bool = False          # runs on an NVIDIA Deep Learning Accelerator core
    needs_source: bool = False       # builds from the PyTorch model (BuildContext.source), not the ONNX model
    computes_in: str | None = None   # the precision its arithmetic runs in, when not `precision` (FP16 storage only)
    # Runs the ONNX model as it is, as the original row does for an ONNX input: then the original itself
    # is the candidate (its bytes unchanged) and this one is skipped.
    as_given: bool = False

    def runs_here(self) -> bool:
        """Whether this machine has the runtime that runs the artifact (else it is checked with `check_with`)."""
        return not self.backend.missing()

    def missing(self) -> list[str]:
        """Modules this machine lacks to build the candidate and run it (or, for device-only runtimes,
        check it with `check_with`)."""
        runner = self.backend if self.check_with is None or self.runs_here() else self.check_with
        return list(dict.fromkeys(runner.missing() + missing_modules(self.needs)))


@dataclass(frozen=True)
class LanguageModelBuild:
    """What a language-model build gets besides the source folder and its output folder."""
    calibration: Text                # text for the data-aware builds (never the evaluation text)
    config: dict                     # the source's config.json
    log: Path                        # where the exporter's own output goes (its last lines explain a refusal)
    threads: int = 1


CACHE_TOKENS = 2048      # a static KV cache's length, at most: such a build holds no longer sequence


def cache_length(config: dict) -> int:
    """The KV cache of a build that allocates it once: the model's context, up to CACHE_TOKENS."""
    from edgeml.inputs.language_model import context_length

    return min(context_length(config.get("text_config", config)), CACHE_TOKENS)


TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja", "special_tokens_map.json", "tokenizer.model")


def copy_tokenizer_files(source: Path, out: Path) -> None:
    """The source's config, generation settings, tokenizer and chat template, for a runtime that reads none of them
    from its model file (run.py tokenizes with tokenizer.json)."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


class BuildRefused(Exception):
    """An exporter refused the model: the message says which and why, in one line, for the report."""


@dataclass(frozen=True)
class OnDevice:
    """A language-model build that the device builds and runs (this machine is not it): judged here with the
    candidate's runtime on the folder `judged` returns (out: the build's folder, judged: a folder it may write),
    its speed predicted for the device profile by `predict` ({name: shape} of the source's weights, its config,
    the Profile, the prompt lengths, the new tokens) -> {decode_tokens_per_s, ttft_ms: {length: ms}, ...}; a
    profile whose device cannot run it (`unsuited`) skips it."""
    runtime: str                     # what runs it there, e.g. tensorrt-edgellm
    judged: Callable[[Path, Path], Path]
    predict: Callable[..., dict]
    unsuited: Callable[[Profile], str | None] = lambda profile: None    # why the profile's device gets none


@dataclass(frozen=True)
class LanguageModelCandidate:
    """One way a target can build a causal language model: a runtime that generates with it
    (edgeml.runtimes.generation), the precision of its weights and a build that writes the runtime's folder."""
    name: str
    runtime: str                     # a GENERATION_RUNTIMES name
    precision: str                   # of the weights: fp32 | int8 | int4
    build: Callable[[Path, Path, LanguageModelBuild], None]    # (source HF folder, out folder, context)
    method: str = ""                 # one line: how it is made
    needs: tuple[str, ...] = ()      # import names the build needs besides the runtime's
    data_aware: bool = False         # reads the calibration text
    on_device: OnDevice | None = None   # built and run on the device; judged here, its speed predicted
    own_process: bool = False        # its build runs the exporter in a process of its own already

    def missing(self) -> list[str]:
        return list(dict.fromkeys(GENERATION_RUNTIMES[self.runtime].missing() + missing_modules(self.needs)))


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    candidates: tuple[Candidate, ...]
    language_models: tuple[LanguageModelCandidate, ...] = ()     # its builds of causal language models
    # Why this machine is not the target's device (then no candidate is timed here, even when its
    # runtime imports: a Jetson engine built on a GPU host would time that host), or None.
    elsewhere: Callable[[], str | None] | None = None

    def measures_here(self, candidate: Candidate) -> bool:
        """Whether `candidate` is run and timed on this machine (else checked with `check_with`)."""
        return candidate.runs_here() and not (self.elsewhere and self.elsewhere())
