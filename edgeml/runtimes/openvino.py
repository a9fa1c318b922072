"""Converting ONNX models to OpenVINO IR and running them on the CPU plugin."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeml.runtimes.base import Artifact, Backend

# Without the f32 hint, OpenVINO runs "f32" models in bf16 on CPUs with AMX/AVX512-BF16, which
# would make the FP32 row quietly lower precision than the original it is compared with. The BF16
# candidate asks for bf16 on purpose, with the same FP32 IR, on CPUs that edgeml.measure.cpu_features says
# have BF16 instructions (without them OpenVINO emulates bf16, slower than f32).
RUNTIME_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


class OpenVinoRunner:
    def __init__(self, model: Path, threads: int, config: dict):
        import openvino as ov

        compiled = ov.Core().compile_model(str(model), "CPU", {**config, "INFERENCE_NUM_THREADS": threads})
        self.request = compiled.create_infer_request()
        self.names = [port.get_any_name() for port in compiled.inputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer({name: feeds[name] for name in self.names})
        return [np.asarray(v) for v in result.to_tuple()]


def open_artifact(artifact: Artifact, threads: int) -> OpenVinoRunner:
    return OpenVinoRunner(artifact.folder / artifact.entry, threads, artifact.runtime_config)


def save_ir(model, folder: Path, precision: str, hint: str = "f32") -> Artifact:
    """Save an openvino.Model as IR (model.xml + model.bin), weights kept as they are; the runner
    compiles it with the inference precision `hint` (f32 | bf16)."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return Artifact("openvino", precision, folder, "model.xml", {**RUNTIME_CONFIG, "INFERENCE_PRECISION_HINT": hint})


def read_onnx(onnx_path: Path):
    """The ONNX model as an openvino.Model after OpenVINO's conversion passes (ov.convert_model): shape subgraphs
    folded, activations fused (HSwish ...). Core.read_model skips them, and NNCF then quantizes the unfused ops
    (Maximum, Divide ...) too: on PP-OCR's detector, 166 FakeQuantize ops against 101 and INT8 30% slower."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


OPENVINO = Backend("openvino", ("openvino",), extra="edgeml[cpu]", open=open_artifact)
