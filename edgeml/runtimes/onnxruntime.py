"""Running ONNX models with ONNX Runtime's CPU execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeml.runtimes.base import Artifact, Backend


class OrtRunner:
    def __init__(self, model: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)


def copy_model(source: Path, destination: Path) -> None:
    """Write `source` (with any external weight files) as `destination`, self-contained.

    Weights go into the file itself unless the model is too large for one protobuf (2 GB),
    then into `destination.name + ".data"` beside it.
    """
    import onnx

    proto = onnx.load(str(source), load_external_data=True)
    external = proto.ByteSize() > _PROTOBUF_LIMIT
    onnx.save_model(proto, str(destination), save_as_external_data=external,
                    location=destination.name + ".data" if external else None)


_PROTOBUF_LIMIT = 2**31 - 2**26   # 2 GiB, less a margin for the graph itself


def open_artifact(artifact: Artifact, threads: int) -> OrtRunner:
    return OrtRunner(artifact.folder / artifact.entry, threads)


ONNXRUNTIME = Backend("onnxruntime", ("onnxruntime",), extra="edgeml", open=open_artifact)
