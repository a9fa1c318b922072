"""`edgeml doctor`: what this machine offers edgeml, in one report.

Three parts: the runtime and backend packages (version, or the extra that installs them: every runtime of
edgeml.runtimes.BACKENDS and the tools that build for it, the language-model runtimes, and the packages of sweep,
serve and --track, as edgeml.runtimes.PACKAGES lists them), this
machine (CPU, the instruction sets inference uses and where edgeml.measure.cpu_features found them (detected
or assumed from $EDGEML_CPU_FEATURES, whose names it does not recognise are listed), the INT8 scheme they
call for, memory, GPUs), and for each
candidate of each target whether it is measured here, skipped on this CPU, checked here with its
latency predicted, or not served here. The candidate statuses follow the rules of the optimize
pipeline (Candidate.missing, Target.measures_here, Candidate.check_with, and `applies` rules that read
only the CPU); rules that need a model or a profile are not applied.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeml.errors import first_line
from edgeml.measure import cpu_features
from edgeml.measure.machine import machine_info
from edgeml.runtimes import PACKAGES  # (pip package, import name, what installs it), from the registry
from edgeml.runtimes.base import missing_modules, package_version
from edgeml.runtimes.generation import GENERATION_RUNTIMES
from edgeml.targets import TARGETS
from edgeml.targets.base import Candidate, LanguageModelCandidate, Target
from edgeml.targets.jetson import TEGRA_RELEASE
from edgeml.version import __version__

MEASURED, CHECKED, NOT_SERVED = "measured here", "checked here, latency predicted", "not served here"
SKIPPED = "skipped on this CPU"        # its `applies` rule reads only the CPU (cpu_features.CpuRule), and fails
STATUS_COLOURS = {MEASURED: "green", CHECKED: "yellow", NOT_SERVED: "red", SKIPPED: "red"}


def gather() -> dict:
    """The whole report as plain data (what `edgeml doctor --format json` prints)."""
    return {"edgeml": __version__, "packages": packages(), "machine": machine(), "targets": targets()}


def packages() -> list[dict]:
    rows = []
    for name, module, extra in PACKAGES:
        installed = not missing_modules((module,))
        rows.append({"package": name, "module": module, "installed": installed,
                     "version": package_version(module) if installed else None, "extra": extra,
                     "details": _runtime_details(module) if installed else {}})
    return rows


def _runtime_details(module: str) -> dict:
    """Where an installed runtime can run: ONNX Runtime's execution providers, OpenVINO's devices."""
    try:
        if module == "onnxruntime":
            import onnxruntime

            return {"execution_providers": onnxruntime.get_available_providers()}
        if module == "openvino":
            import openvino

            return {"devices": openvino.Core().available_devices}
    except Exception as e:  # a broken runtime install raises anything on import or on probing
        return {"error": [f"{type(e).__name__}: {first_line(e)}"]}
    return {}


def machine() -> dict:
    info = {key: value for key, value in machine_info(threads=0).items() if key != "threads"}
    cpu = cpu_features.describe()
    return {**info, "cpu_features": cpu["features"], "cpu_features_from": cpu["features_from"],
            "cpu_features_unrecognised": cpu["unrecognised"], "int8_scheme": cpu["int8_scheme"],
            "memory_bytes": memory_bytes(), "gpus": gpus()}


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def gpus() -> list[dict]:
    """CUDA devices torch sees, and the Jetson board release (/etc/nv_tegra_release) when there is one."""
    found = []
    if not missing_modules(("torch",)):
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                found.append({"kind": "cuda", "name": f"cuda:{i} {props.name}", "memory_bytes": props.total_memory})
    if TEGRA_RELEASE.exists():
        release = TEGRA_RELEASE.read_text().splitlines()[0].lstrip("# ")
        found.append({"kind": "jetson", "name": f"Jetson ({release})", "memory_bytes": None})
    return found


def targets() -> list[dict]:
    return [{"name": t.name, "description": t.description,
             "candidates": [{"name": c.name, "backend": c.backend.name, "precision": c.precision,
                             **candidate_status(t, c), "opt_in": c.opt_in}
                            for c in t.candidates],
             "language_models": [{"name": c.name, "runtime": language_model_runtime(c), "precision": c.precision,
                                  **language_model_status(c)} for c in t.language_models]}
            for t in TARGETS.values()]


def language_model_runtime(candidate: LanguageModelCandidate) -> str:
    """What runs the build: on the device for a build the device alone runs."""
    return candidate.on_device.runtime if candidate.on_device else candidate.runtime


def language_model_status(candidate: LanguageModelCandidate) -> dict:
    """Whether this machine builds and times a language-model build (every runtime of one runs here)."""
    missing = candidate.missing()
    if missing:
        return {"status": NOT_SERVED, "detail": f"{', '.join(missing)} not installed "
                                                f"(pip install '{GENERATION_RUNTIMES[candidate.runtime].extra}')"}
    runtime = GENERATION_RUNTIMES[candidate.runtime]
    if candidate.on_device:
        return {"status": CHECKED, "detail": f"runs on the device ({candidate.on_device.runtime}); quality checked "
                                             f"with {runtime.name} {runtime.version()}"}
    return {"status": MEASURED, "detail": f"{runtime.name} {runtime.version()}"}


def candidate_status(target: Target, candidate: Candidate) -> dict:
    """The status of `candidate` on this machine and why, by the pipeline's rules for a model that suits it."""
    missing = candidate.missing()
    if missing:
        return {"status": NOT_SERVED,
                "detail": f"{', '.join(missing)} not installed ({candidate.backend.install})"}
    if isinstance(candidate.applies, cpu_features.CpuRule) and target.measures_here(candidate):
        unsuited = candidate.applies()
        if unsuited:                  # optimize skips it for every model, with this reason
            return {"status": SKIPPED, "detail": unsuited}
    if target.measures_here(candidate):
        return {"status": MEASURED, "detail": f"{candidate.backend.name} {candidate.backend.version()}"}
    if candidate.check_with is not None:
        where = (target.elsewhere and target.elsewhere()) or f"{candidate.backend.name} is not installed here"
        return {"status": CHECKED, "detail": f"{where}: runs on the device; quality checked with "
                                             f"{candidate.check_with.name} {candidate.check_with.version()}"}
    return {"status": NOT_SERVED, "detail": target.elsewhere()}


def render(report: dict, console: Console) -> None:
    packages_table = Table("package", "version", "installed by", "details", title="Installed packages",
                           title_justify="left")
    for p in report["packages"]:
        version = (p["version"] or "version unknown") if p["installed"] else "[red]not installed[/red]"
        details = "; ".join(f"{key.replace('_', ' ')}: {', '.join(values)}" for key, values in p["details"].items())
        packages_table.add_row(p["package"], version, escape(p["extra"]), escape(details))
    console.print(packages_table)

    m = report["machine"]
    features, scheme = m["cpu_features"], m["int8_scheme"]
    machine_table = Table(title="This machine", title_justify="left", show_header=False)
    for label, value in (
        ("CPU", f"{m['cpu']} ({m['architecture']})"),
        ("logical cores", str(m["logical_cores"])),
        ("CPU features", "unknown" if features is None else f"{', '.join(features) or 'none'} "
                                                               f"({m['cpu_features_from']})"),
        *([("not recognised", f"{', '.join(m['cpu_features_unrecognised'])} (in ${cpu_features.ENV}: no CPU "
                              "flag edgeml knows; a typo?)")] if m["cpu_features_unrecognised"] else []),
        ("INT8 scheme", f"{scheme['name']}: {scheme['reason']}"),
        ("memory", _gib(m["memory_bytes"])),
        ("GPUs", "; ".join(_gpu(g) for g in m["gpus"]) or "none"),
        ("OS", m["os"]),
        ("Python", m["python"]),
        ("edgeml", report["edgeml"]),
    ):
        machine_table.add_row(label, escape(value))
    console.print(machine_table)

    targets_table = Table("target", "candidate", "precision", "status here", "detail", title="Targets",
                          title_justify="left",
                          caption="Candidates that do not suit a model or a device profile are skipped by optimize.",
                          caption_justify="left")
    for t in report["targets"]:
        for c in t["candidates"]:
            name = c["name"] + (" (opt-in)" if c["opt_in"] else "")
            status = f"[{STATUS_COLOURS[c['status']]}]{c['status']}[/]"
            targets_table.add_row(t["name"], name, c["precision"], status, escape(c["detail"]))
    console.print(targets_table)


def _gib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 2**30:.1f} GiB"


def _gpu(gpu: dict) -> str:
    return gpu["name"] + ("" if gpu["memory_bytes"] is None else f", {_gib(gpu['memory_bytes'])}")
