"""The CPU target's candidates, built and run for real."""

import numpy as np
import onnxruntime as ort

from edgeml.evaluate import predict
from edgeml.targets import BACKENDS, TARGETS, get_target
from edgeml.targets.base import BuildContext


def test_every_cpu_candidate_builds_and_runs(files, digits, tmp_path):
    reference = ort.InferenceSession(str(files["digits.onnx"])).run(None, digits.test.inputs)[0]
    context = BuildContext(calibration=digits.validation)
    cpu = get_target("cpu")
    assert [c.name for c in cpu.candidates] == [
        "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"]
    for candidate in cpu.candidates:
        assert candidate.missing() == []
        artifact = candidate.build(files["digits.onnx"], tmp_path / candidate.name, context)
        assert (artifact.folder / artifact.entry).is_file() and artifact.size_bytes > 0
        out = predict(candidate.backend.open(artifact, 1), digits.test, 32)[0]
        if candidate.precision == "fp32":
            # f32 hint: OpenVINO must not quietly run in bf16 on CPUs that have it.
            np.testing.assert_allclose(out, reference, atol=1e-4, rtol=1e-4)
        else:
            assert np.mean(out.argmax(1) == reference.argmax(1)) > 0.97


def test_registry():
    assert set(TARGETS) == {"cpu"} and set(BACKENDS) == {"onnxruntime", "openvino"}
    assert BACKENDS["openvino"].extra == "edgeml[cpu]"
