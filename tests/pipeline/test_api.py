import json

import edgeml


def test_python_api_returns_the_record_the_cli_renders(digits, tmp_path, capsys):
    # FP32 only: what is checked here is the API around the run, not the candidates (tests/cli cover those).
    run = edgeml.optimize(digits.model, input_shapes=["input:1x1x8x8"], target="cpu", precision="fp32",
                          out=tmp_path / "out", measure_seconds=0.05, threads=1)
    assert capsys.readouterr().err == ""                      # the API is silent
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == json.loads(json.dumps(run.to_dict()))
    assert run.machine["threads"] == 1 and run.source["kind"] == "module"
    assert run.selected is not None and run.selected.within_budget
    # An in-memory module cannot be reloaded in a child process: its memory is not measured.
    assert run.reference.peak_memory_bytes is None
    assert "not measured" in (tmp_path / "out" / "report.md").read_text()
    assert any("no evaluation data" in w for w in run.warnings)


def test_evaluation_batches_shrink_for_large_inputs():
    from edgeml.inputs.specs import TensorSpec
    from edgeml.pipeline.exported import eval_batch

    assert eval_batch([TensorSpec("x", (None, 1, 28, 28), "float32")]) == (32, False)
    assert eval_batch([TensorSpec("x", (None, 3, 224, 224), "float32")]) == (3, False)
    tokens = [TensorSpec("ids", (None, 128), "int64"), TensorSpec("mask", ("b", 128), "int64")]
    assert eval_batch(tokens) == (32, False)
    assert eval_batch([TensorSpec("x", (4, 3, 224, 224), "float32")]) == (4, True)
    # a recurrent model's state fixes the batch of every input (silero-vad: audio N x 576, h and c 1 x 64)
    state = [TensorSpec("input", (None, 576), "float32"), TensorSpec("h", (1, 64), "float32")]
    assert eval_batch(state) == (1, True)
    # a first dimension fixed but not the batch (a state of 2 layers x batch 1 x 64): still one sample a call
    layers = [TensorSpec("input", (None, 576), "float32"), TensorSpec("h", (2, 1, 64), "float32")]
    assert eval_batch(layers) == (1, True)
