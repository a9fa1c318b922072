"""Stateful models whose recurrent state's batch axis is not the first, and a scalar input without a batch axis:
found in the graph (or given as `?` in --input-shape), fed as the model takes them, and carried through the
optimize run, the bundle, its run.py and serve. The models are trained here (tests/stateful.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import stateful

import edgeml
from edgeml.bundle.reference import relative_error
from edgeml.bundle.verify import verify
from edgeml.errors import DataError, InputSpecError
from edgeml.inputs.data import load_data
from edgeml.inputs.models import load_model
from edgeml.inputs.specs import TensorSpec, parse_input_shape, reconcile, with_batch_axes
from edgeml.serve.decode import InputSpec, decode
from edgeml.serve.model import ServedModel

FAST = {"measure_seconds": 0.05, "threads": 1, "tuning_budget": 20}


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    model = stateful.train_vad()
    path = stateful.export_vad(model, folder / "vad.onnx")
    np.savez(folder / "calib.npz", **stateful.vad_data(model, 64, seed=10))
    np.savez(folder / "eval.npz", **stateful.vad_data(model, 120, seed=11))
    return path


@pytest.fixture(scope="module")
def vad_run(vad):
    out = vad.parent / "out"
    run = edgeml.optimize(vad, calib_data=vad.parent / "calib.npz", eval_data=vad.parent / "eval.npz", out=out,
                          precision="int8", quantizer="ort", **FAST)
    return run, out / "bundle"


def original(path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The ONNX model run directly with ONNX Runtime, on inputs as it takes them."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_batch_axes_are_found_in_the_graph(vad):
    axes = {s.name: s.batch_axis for s in load_model(str(vad)).inputs}
    assert axes == {"input": 0, "state": 1, "sr": None}
    found = with_batch_axes([TensorSpec("audio", (1, 256)), TensorSpec("h0", (2, 1, 24))])
    assert [s.batch_axis for s in found] == [0, 1]                  # a state whose batch is fixed to 1
    kept = with_batch_axes([TensorSpec("x", (None, 576)), TensorSpec("h", (1, 64)), TensorSpec("c", (1, 64))])
    assert [s.batch_axis for s in kept] == [0, 0, 0]               # batch-first state beside a dynamic input
    image = with_batch_axes([TensorSpec("image", (1, 3, None, None)), TensorSpec("scale", (1, 2))])
    assert [s.batch_axis for s in image] == [0, 0]


def test_a_question_mark_gives_the_batch_axis():
    model = [TensorSpec("input", ("n", 256)), TensorSpec("state", ("layers", "b", 32))]
    assert with_batch_axes(model)[1].batch_axis == 0                 # nothing in the graph says otherwise
    given = reconcile(with_batch_axes(model), [parse_input_shape("state:2x?x32")])
    assert given[1] == TensorSpec("state", (2, "b", 32), "float32", 1)
    with pytest.raises(InputSpecError, match="at most one '\\?'"):
        parse_input_shape("state:?x?x32")


def test_data_as_the_model_takes_it_or_one_model_shaped_array_per_sample(vad, tmp_path):
    specs = load_model(str(vad)).inputs
    given = dict(np.load(vad.parent / "eval.npz"))
    as_taken = load_data(vad.parent / "eval.npz", specs)
    assert {k: v.shape for k, v in as_taken.inputs.items()} == {"input": (120, 256), "state": (120, 2, 32),
                                                               "sr": (120,)}
    np.testing.assert_array_equal(as_taken.feeds(3, 5)["state"], given["state"][:, 3:5])
    assert as_taken.feeds(3, 5)["sr"].shape == ()
    per_sample = {"input": given["input"], "state": given["state"].transpose(1, 0, 2)[:, :, None],
                  "sr": np.full(120, given["sr"])}
    np.savez(tmp_path / "per-sample.npz", **per_sample)
    assert load_data(tmp_path / "per-sample.npz", specs).sha256 == as_taken.sha256
    np.savez(tmp_path / "rates.npz", **{**per_sample, "sr": np.arange(120)})
    with pytest.raises(DataError, match="'sr' has shape 120; the model takes one value"):
        load_data(tmp_path / "rates.npz", specs)
    np.savez(tmp_path / "wrong.npz", **{**given, "state": given["state"][:, :, :16]})
    with pytest.raises(DataError, match="samples on dimension 1, its batch axis"):
        load_data(tmp_path / "wrong.npz", specs)


def test_a_stateful_model_optimizes_and_its_bundle_verifies_and_runs(vad, vad_run, tmp_path):
    run, bundle = vad_run
    rows = {r.name: r for r in run.rows}
    built = [r for r in rows.values() if r.precision.startswith("int8") and r.status == "ok"]
    assert {"onnxruntime-int8", "onnxruntime-int8-dynamic"} <= {r.name for r in built}, \
        {r.name: r.reason for r in rows.values()}
    assert all(r.quality_drop <= 0.01 for r in built)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [(i["name"], i.get("batch_axis", 0)) for i in manifest["inputs"]] == [("input", 0), ("state", 1),
                                                                                  ("sr", None)]
    assert verify(bundle, 1).passed

    given = dict(np.load(vad.parent / "eval.npz"))
    feeds = {"input": given["input"][:5], "state": given["state"][:, :5], "sr": given["sr"]}
    np.savez(tmp_path / "in.npz", **feeds)
    done = subprocess.run([sys.executable, bundle / "run.py", tmp_path / "in.npz", "-o", tmp_path / "out.npz"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got, want = np.load(tmp_path / "out.npz"), original(vad, feeds)
    tolerance = manifest["reference"]["tolerance"]
    assert relative_error(got["output"], want[0]) <= tolerance
    assert relative_error(got["stateN"], np.moveaxis(want[1], 1, 0)) <= tolerance    # one sample per row


def test_serve_takes_the_inputs_as_the_model_does_and_batches_only_requests_of_one_rate(vad, vad_run):
    _, bundle = vad_run
    model = ServedModel.load(bundle, threads=1, max_batch=8, max_wait_s=0.05)
    specs = [InputSpec.of(s) for s in json.loads((bundle / "manifest.json").read_text())["inputs"]]
    given = dict(np.load(vad.parent / "eval.npz"))
    requests = [{"input": given["input"][i:i + 2], "state": given["state"][:, i:i + 2], "sr": np.array(rate)}
                for i, rate in ((0, 16000), (2, 8000), (4, 16000))]
    feeds = [decode(json.dumps({"inputs": {k: v.tolist() for k, v in r.items()}}).encode(), "application/json",
                    specs, 64, 1 << 20) for r in requests]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda f: model.submit(f).result(timeout=30), feeds))
    for request, answer in zip(requests, answers):
        assert relative_error(answer[0], original(vad, request)[0]) <= 0.05
    with pytest.raises(Exception, match="shape \\(2,\\)"):
        decode(json.dumps({"inputs": {**{k: v.tolist() for k, v in requests[0].items()}, "sr": [1, 2]}}).encode(),
               "application/json", specs, 64, 1 << 20)


def test_a_gru_state_fixed_to_batch_one_given_with_a_question_mark(edgeml_cli, tmp_path):
    model = stateful.train_gru()
    path = stateful.export_gru(model, tmp_path / "gru.onnx")
    np.savez(tmp_path / "calib.npz", **stateful.gru_data(64, seed=10))
    np.savez(tmp_path / "eval.npz", **stateful.gru_data(60, seed=11))
    result = edgeml_cli("optimize", path, "--input-shape", "h0:2x?x24", "--calib-data", tmp_path / "calib.npz",
                        "--eval-data", tmp_path / "eval.npz", "--precision", "int8", "--quantizer", "ort",
                        "--measure-seconds", "0.05", "--threads", "1", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rows"][0]["status"] == "ok"
    assert any(r["name"] == "onnxruntime-int8" and r["status"] == "ok" for r in report["rows"])
    assert verify(tmp_path / "out" / "bundle", 1).passed
