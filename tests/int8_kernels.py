"""What this CPU's INT8 kernels compute, asked of the kernels themselves.

ONNX Runtime and OpenVINO pick their kernels by CPUID. Neither $EDGEML_CPU_FEATURES (what edgeml assumes) nor
/proc/cpuinfo under an emulator (qemu-user shows the host's) tells which ones run, so the tests whose
expectations depend on it (marked `kernels`) read it here: a u8 x s8 product whose pairs sum above 32767.
"""

from __future__ import annotations

import functools

K = 64


@functools.cache
def int8_saturates() -> bool:
    """Whether ONNX Runtime's u8*s8 MatMulInteger saturates here: on x86 without VNNI/AMX, VPMADDUBSW adds pairs
    of products in 16 bits (255*127*2 = 64770 becomes 32767); VNNI, AMX and Arm accumulate in 32 bits."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, K]),
                               helper.make_tensor_value_info("b", TensorProto.INT8, [K, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = int(session.run(None, {"a": np.full((1, K), 255, np.uint8), "b": np.full((K, 1), 127, np.int8)})[0].item())
    exact, saturated = 255 * 127 * K, 32767 * K // 2
    assert y in (exact, saturated), f"u8*s8 probe gave {y}: neither exact ({exact}) nor saturated ({saturated})"
    return y == saturated


def int8_context(calibration):
    """The build settings edgeml uses with this CPU's kernels: 7-bit weights where full-range u8*s8 pairs saturate
    (x86 without VNNI/AMX: there the full range loses accuracy in every Conv), the full 8-bit range elsewhere."""
    from edgeml.compress.quantize import Int8Config
    from edgeml.targets.base import BuildContext

    return BuildContext(calibration, int8=Int8Config(avoid_saturation=int8_saturates()))
