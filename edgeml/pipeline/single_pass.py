"""`edgeml prune` and `edgeml distill`: one PyTorch pass on its own.

OUT holds `model.pt2` (an ExportedProgram with a symbolic batch size, which `edgeml optimize`
and `edgeml distill --student` take as they are), `report.json` and `report.md`. The pass is
judged on the evaluation data when it is given: quality before and after, against the labels.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from edgeml.compress import torch_passes
from edgeml.compress.distill import DistillConfig
from edgeml.compress.prune import StructuredConfig, UnstructuredConfig
from edgeml.errors import EdgemlError, ExportError, first_line
from edgeml.inputs import data as data_mod
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import SourceModel, load_model
from edgeml.measure.evaluate import compare, predict, quality_metric
from edgeml.outdir import AtomicOutput
from edgeml.progress import Reporter
from edgeml.runtimes.pytorch import open_source
from edgeml.version import __version__

METHODS = ("structured", "unstructured", "2:4")
BATCH = 32


def prune(model=None, *, example: str | None = None, weights=None, input_shapes=(), method: str = "structured",
          structured: StructuredConfig = StructuredConfig(), unstructured: UnstructuredConfig = UnstructuredConfig(),
          data=None, eval_data=None, preprocess: str | None = None, out=None, force: bool = False,
          reporter: Reporter | None = None) -> dict:
    """Prune `model` with `method`; write OUT/model.pt2 and the report. Returns the record."""
    from edgeml.compress.prune.semistructured import prune_2to4
    from edgeml.compress.prune.unstructured import prune_unstructured

    if method not in METHODS:
        raise EdgemlError(f"unknown pruning method '{method}'; use one of {', '.join(METHODS)}")
    reporter = reporter or Reporter()
    with reporter:
        with reporter.step("Load model and data"):
            source, (fit, evaluation) = _load(model, example, weights, input_shapes, preprocess, data, eval_data)
        fit = fit or evaluation
        if fit is None:
            raise EdgemlError("pruning needs example inputs: give --data (or --eval-data)")
        out = _out(out, source, "pruned")
        with AtomicOutput(out, force) as staging:
            with reporter.step(f"Prune ({method})"):
                if method == "structured":
                    pruned, result = torch_passes.prune(source, structured, fit)
                else:
                    module = torch_passes.torch_module(source, "pruning")
                    result = (prune_unstructured(module, unstructured) if method == "unstructured"
                              else prune_2to4(module, structured.ignore))
                    pruned = torch_passes.derived(source, result.model, method.replace(":", "of"), result.notes[0])
            record = _record("prune", source, pruned, evaluation, result.to_dict(), out, reporter)
            _write(staging, pruned, fit, record, reporter)
        return record


def distill(model=None, *, student, student_weights=None, example: str | None = None, weights=None,
            input_shapes=(), train_data=None, eval_data=None, preprocess: str | None = None,
            config: DistillConfig = DistillConfig(), out=None, force: bool = False,
            reporter: Reporter | None = None) -> dict:
    """Distill the teacher `model` into `student`; write OUT/model.pt2 and the report."""
    reporter = reporter or Reporter()
    with reporter:
        with reporter.step("Load teacher, student and data"):
            teacher, (train, evaluation) = _load(model, example, weights, input_shapes, preprocess, train_data,
                                                 eval_data)
            pupil = load_model(student, student_weights, input_shapes)
        if train is None:
            raise EdgemlError("distillation trains on data: give --train-data (labels optional)")
        out = _out(out, pupil, "distilled")
        with AtomicOutput(out, force) as staging:
            with reporter.step("Distill", total=config.epochs) as step:
                trained, result = torch_passes.distill_into(
                    teacher, pupil, train, config,
                    on_epoch=lambda epoch, total, _: (step.advance(), step.describe(f"Distill: epoch {epoch}/{total}")))
            record = _record("distill", teacher, trained, evaluation, result.to_dict(), out, reporter, student=pupil)
            _write(staging, trained, train, record, reporter)
        return record


def _load(model, example, weights, input_shapes, preprocess, fit_data, eval_data
          ) -> tuple[SourceModel, tuple[Dataset | None, Dataset | None]]:
    if (model is None) == (example is None):
        raise EdgemlError("give a MODEL or --example digits (one of them)")
    if example is not None:
        if example != "digits":
            raise EdgemlError(f"unknown example '{example}'; available: digits")
        if fit_data is not None or eval_data is not None:
            raise EdgemlError("--example brings its own data; do not combine it with data options")
        from edgeml.examples import digits_example, digits_source

        ex = digits_example()
        source = digits_source(ex)
        return source, (ex.train, ex.test)
    source = load_model(model, weights, input_shapes)

    def load(path):
        return None if path is None else data_mod.load_data(path, source.inputs, preprocess)
    return source, (load(fit_data), load(eval_data))


def _out(out, source: SourceModel, suffix: str) -> Path:
    return Path(out) if out else Path("edgeml-out") / f"{source.name}-{suffix}"


def _record(command: str, source: SourceModel, result: SourceModel, evaluation: Dataset | None, details: dict,
            out: Path, reporter: Reporter, student: SourceModel | None = None) -> dict:
    record = {"command": command, "edgeml_version": __version__, "output": str(out),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "source": source.describe(), "result": result.describe(), command: details, "evaluation": None}
    if evaluation is not None:
        with reporter.step("Evaluate before and after"):
            done = {"prune": "pruned", "distill": "distilled"}[command]
            models = {"original": source, **({"student as given": student} if student else {}), done: result}
            outputs = {name: predict(open_source(m, torch.get_num_threads()), evaluation, BATCH)
                       for name, m in models.items()}
            reference = outputs["original"]
            metric = quality_metric(reference, evaluation.labels, source=evaluation.source)
            record["evaluation"] = {"data": evaluation.describe(), "metric": metric,
                                    "models": {name: compare(o, reference, evaluation.labels)
                                               for name, o in outputs.items()}}
    record["warnings"] = list(reporter.warnings)
    return record


def _write(staging: Path, model: SourceModel, data: Dataset, record: dict, reporter: Reporter) -> None:
    with reporter.step("Save model.pt2"):
        save_program(model, data, staging / "model.pt2")
    (staging / "report.json").write_text(json.dumps(record, indent=2) + "\n")
    (staging / "report.md").write_text(render(record))


def save_program(model: SourceModel, data: Dataset, path: Path) -> None:
    """torch.export the module with a symbolic batch size and save it as a .pt2 file."""
    example = torch_passes.example_inputs(model, data)
    batch = torch.export.Dim("batch")
    try:
        program = torch.export.export(model.callable, example, dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as e:
        raise ExportError(f"cannot save the result as an ExportedProgram ({first_line(e)})") from e
    torch.export.save(program, str(path))


def render(record: dict) -> str:
    command = record["command"]
    lines = [f"# edgeml {command}: {record['source']['name']}", ""]
    details = record[command]
    if command == "prune":
        macs = (f", MACs {details['macs_before']:,} -> {details['macs_after']:,} ({details['macs_ratio']:.2f}x fewer)"
                if details.get("macs_ratio") else "")
        lines.append(f"- {details['kind']} pruning: parameters {details['params_before']:,} -> "
                     f"{details['params_after']:,}{macs}")
    else:
        lines.append(f"- {len(details['curve'])} epoch(s), stopped by {details['stopped']}; best validation "
                     f"{details['metric']} {details['best_validation']:.4f} at epoch {details['best_epoch']}")
    lines += [f"- {n}" for n in details["notes"]]
    evaluation = record["evaluation"]
    if evaluation:
        metric = evaluation["metric"]
        lines += ["", f"Judged on {evaluation['data']['source']} ({evaluation['data']['samples']} samples):", "",
                  f"| model | {metric} | agreement with the original |", "|---|---|---|"]
        lines += [f"| {name} | {m[metric]:.4f} | {m.get('agreement', float('nan')):.4f} |"
                  for name, m in evaluation["models"].items()]
    else:
        lines += ["", "No evaluation data given (--eval-data): quality before and after was not measured."]
    model = Path(record["output"]) / "model.pt2"
    lines += ["", f"Next: `edgeml optimize {model} ...`, or distill into it: `edgeml distill MODEL --student {model} "
              "--train-data ...`.", ""]
    return "\n".join(lines)
