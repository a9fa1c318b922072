"""The Jetson and GPU targets: what is prepared here for TensorRT, checked for real (graphs, calibration
cache, build script); building engines and the CUDA candidates run where TensorRT or
a CUDA GPU exists, and are skipped here with the reason."""

import importlib.util
import json
import os
import struct
import subprocess
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgeml.compress.quantize import Int8Config
from edgeml.compress.quantize.onnxruntime_backend import prepare
from edgeml.errors import TargetError
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import compare
from edgeml.profiles import Profile
from edgeml.targets.base import BuildContext
from edgeml.targets.gpu import GPU
from edgeml.targets.jetson import JETSON
from edgeml.targets.tensorrt import (
    TENSORRT_FP16,
    TENSORRT_INT8_DLA,
    quantize,
    tensorrt_version_number,
    write_calibration_cache,
)

NO_TENSORRT = importlib.util.find_spec("tensorrt") is None
NO_CUDA = not torch.cuda.is_available()


def jetson(name: str, dla_cores: int, memory_gb: float) -> Profile:
    return Profile(name=name, display_name=f"NVIDIA Jetson {name}", target="jetson", cpu={"arch": "arm64"},
                   gpu={"arch": "ampere", "compute_capability": "8.7"},
                   runtimes={"jetpack": "6.2", "tensorrt": "10.3", "cuda": "12.6"},
                   precisions=("fp32", "fp16", "int8"), dla_cores=dla_cores,
                   peak_gops={"fp32": 2000.0, "fp16": 16000.0, "int8": 32000.0}, memory_bandwidth_gbs=102.0,
                   memory_gb=memory_gb)


ORIN_NX = jetson("jetson-orin-nx", dla_cores=2, memory_gb=16)
ORIN_NANO = jetson("jetson-orin-nano", dla_cores=0, memory_gb=8)


@pytest.fixture(scope="module")
def built(files, digits, tmp_path_factory):
    """Every Jetson candidate built for the Orin NX, and the GPU ones for the Orin Nano: {(profile, name): artifact}."""
    out = tmp_path_factory.mktemp("tensorrt")
    artifacts = {}
    for profile in (ORIN_NX, ORIN_NANO):
        context = BuildContext(calibration=digits.validation, profile=profile)
        for candidate in JETSON.candidates:
            if candidate.needs_dla and profile.dla_cores == 0:
                continue
            artifacts[profile.name, candidate.name] = candidate.build(
                files["digits.onnx"], out / profile.name / candidate.name, context)
    return artifacts


def trtexec_arguments(script, tmp_path) -> list[str]:
    """Run a build_engine.sh with a stand-in trtexec that records its arguments, one per line."""
    fake, record = tmp_path / "trtexec", tmp_path / "arguments"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    fake.chmod(0o755)
    subprocess.run(["bash", str(script)], check=True, env={**os.environ, "TRTEXEC": str(fake)})
    return record.read_text().splitlines()


def test_candidates():
    assert [c.name for c in JETSON.candidates] == ["tensorrt-fp16", "tensorrt-int8", "tensorrt-int8-dla"]
    assert [c.name for c in GPU.candidates] == ["tensorrt-fp16", "tensorrt-int8", "torch-cuda-fp16", "onnxruntime-cuda"]
    for candidate in JETSON.candidates:
        assert candidate.backend.name == "tensorrt" and candidate.check_with.name == "onnxruntime"
        assert candidate.missing() == []        # checked here with ONNX Runtime when TensorRT is missing
    assert "JetPack" in JETSON.candidates[0].backend.extra


def test_build_engine_scripts(built, tmp_path):
    common = ["--onnx=model.onnx", "--saveEngine=model.engine"]
    end = ["--shapes=input:1x1x8x8"]        # the digits model's batch is dynamic
    expected = {
        ("jetson-orin-nx", "tensorrt-fp16"): [*common, "--fp16", *end, "--memPoolSize=workspace:4096M"],
        ("jetson-orin-nx", "tensorrt-int8"): [*common, "--int8", "--fp16", *end, "--memPoolSize=workspace:4096M"],
        ("jetson-orin-nx", "tensorrt-int8-dla"): [*common, "--int8", "--fp16", "--calib=calibration.cache",
                                                  "--useDLACore=0", "--allowGPUFallback", *end,
                                                  "--memPoolSize=workspace:4096M"],
        ("jetson-orin-nano", "tensorrt-fp16"): [*common, "--fp16", *end, "--memPoolSize=workspace:2048M"],
        ("jetson-orin-nano", "tensorrt-int8"): [*common, "--int8", "--fp16", *end, "--memPoolSize=workspace:2048M"],
    }
    assert set(built) == set(expected)
    for key, artifact in built.items():
        script = artifact.folder / "build_engine.sh"
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert f"Device profile: {key[0]} (NVIDIA Jetson {key[0]})" in text and "TensorRT expected: 10.3" in text
        assert trtexec_arguments(script, tmp_path) == [*expected[key], "--timingCacheFile=timing.cache"]


def test_odd_input_names_are_quoted(files, digits, tmp_path):
    odd = "in put;$(touch pwned) `touch pwned` \"x\"*"
    model = onnx.load(str(files["digits.onnx"]))
    old = model.graph.input[0].name
    model.graph.input[0].name = odd
    for node in model.graph.node:
        node.input[:] = [odd if name == old else name for name in node.input]
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    assert TENSORRT_FP16.applies(path) is None
    calibration = Dataset({odd: digits.validation.inputs["input"]}, None, "odd")
    artifact = TENSORRT_FP16.build(path, tmp_path / "fp16", BuildContext(calibration=calibration, profile=ORIN_NANO))
    subprocess.run(["bash", "-n", str(artifact.folder / "build_engine.sh")], check=True)
    arguments = trtexec_arguments(artifact.folder / "build_engine.sh", tmp_path)
    assert f"--shapes={odd}:1x1x8x8" in arguments
    assert not list(tmp_path.rglob("pwned"))

    model.graph.input[0].name = "a,b"     # trtexec splits --shapes at commas
    onnx.save(model, str(path))
    assert "comma" in TENSORRT_FP16.applies(path)


def test_int8_is_a_qdq_model_as_tensorrt_takes_it(built):
    graph = onnx.load(str(built["jetson-orin-nx", "tensorrt-int8"].folder / "model.onnx")).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(compute) == 5
    for node in compute:
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weights, scale, zero = (constants[name] for name in dq.input)
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        channels = weights.shape[1] if node.op_type == "MatMul" else weights.shape[0]    # Gemm: transB=1
        assert weights.dtype == np.int8 and scale.shape == zero.shape == (channels,)
        assert axis == (1 if node.op_type == "MatMul" else 0) and not zero.any()
        assert len(node.input) < 3 or node.input[2] in constants      # biases stay float: no INT32 dequantize
    activations = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   and n.input[0] not in constants]
    assert len(activations) >= 2 * len(compute)
    assert all(producers[node.input[0]].op_type == "DequantizeLinear" for node in compute)   # INT8 activations in
    for node in activations:
        zero = constants[node.input[2]]
        assert zero.dtype == np.int8 and zero.shape == () and zero == 0


def test_dla_calibration_cache(built, digits, tmp_path):
    artifact = built["jetson-orin-nx", "tensorrt-int8-dla"]
    assert artifact.entry == "model.onnx" and artifact.runtime_config["check_entry"] == "model_qdq.onnx"
    graph = onnx.load(str(artifact.folder / "model.onnx")).graph
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)    # implicit INT8
    tensors = {v.name for v in graph.input} | {out for n in graph.node for out in n.output}
    header, *lines = (artifact.folder / "calibration.cache").read_text().splitlines()
    assert header == "TRT-100300-EntropyCalibration2"
    scales = {}
    for line in lines:
        name, _, value = line.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    assert set(scales) <= tensors and {"input", "logits"} <= set(scales) and len(scales) >= 12

    # The ranges the cache was written from, parsed back exactly (scale = amax / 127 as float32).
    ranges = quantize(artifact.folder / "model.onnx", tmp_path / "qdq.onnx", digits.validation, Int8Config(),
                      outputs=True)
    write_calibration_cache(ranges, tmp_path / "calibration.cache", "10.3.0")
    assert (tmp_path / "calibration.cache").read_text() == (artifact.folder / "calibration.cache").read_text()
    for name, data in ranges.data.items():
        amax = float(np.abs(data.range_value).max())
        assert scales[name] == np.float32(amax / 127)

    # The QDQ model the quality is checked with quantizes each tensor with the scale the DLA gets; except a
    # Relu's input, which onnxruntime quantizes with the Relu's range (TensorRT fuses the two layers).
    check = onnx.load(str(artifact.folder / "model_qdq.onnx")).graph
    constants = {t.name: numpy_helper.to_array(t) for t in check.initializer}
    relu_inputs = {n.input[0] for n in graph.node if n.op_type == "Relu"}
    own = [n for n in check.node if n.op_type == "QuantizeLinear" and n.input[1] == f"{n.input[0]}_scale"
           and n.input[0] not in relu_inputs]
    assert len(own) >= 4
    for node in own:
        assert constants[node.input[1]] == np.float32(scales[node.input[0]])


def test_int8_quantizes_inputs_only_and_stays_closer_to_fp32(files, digits, tmp_path):
    """Q/DQ only where an INT8 layer reads (TensorRT's placement), against the same build with every output
    quantized too (the earlier placement): fewer roundings, so the outputs stay closer to the FP32 model's."""
    prepare(files["digits.onnx"], tmp_path / "prepared.onnx")
    outputs = {}
    for every_output in (False, True):
        path = tmp_path / f"outputs-{every_output}.onnx"
        quantize(tmp_path / "prepared.onnx", path, digits.validation, Int8Config(), outputs=every_output)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs[every_output] = session.run(None, digits.test.feeds(0, len(digits.test)))[0]
        graph = onnx.load(str(path)).graph
        producers = {out: node for node in graph.node for out in node.output}
        quantized = [producers.get(n.input[0]) for n in graph.node if n.op_type == "QuantizeLinear"]
        from_layers = [p for p in quantized if p is not None and p.op_type in ("Conv", "Gemm")]
        assert bool(from_layers) == every_output          # no Q/DQ right after a convolution or a Gemm
        assert (producers[graph.output[0].name].op_type == "DequantizeLinear") == every_output   # float logits
    session = ort.InferenceSession(str(files["digits.onnx"]), providers=["CPUExecutionProvider"])
    fp32 = session.run(None, digits.test.feeds(0, len(digits.test)))[0]
    inputs_only, every = (compare([outputs[o]], [fp32], digits.test.labels) for o in (False, True))
    assert inputs_only["max_abs_error"] < every["max_abs_error"] / 2
    assert inputs_only["kl"] < every["kl"]
    assert inputs_only["agreement"] >= every["agreement"]


def test_int8_leaves_the_convolution_input_of_a_residual_add_in_float(tmp_path):
    """TensorRT fuses a residual Add into the convolution feeding it: that input stays float, the skip is INT8."""
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.conv = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            return x + self.conv(x)

    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    torch.onnx.export(Residual().eval(), (x[:2],), str(tmp_path / "model.onnx"), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "n"}})
    prepare(tmp_path / "model.onnx", tmp_path / "prepared.onnx")
    quantize(tmp_path / "prepared.onnx", tmp_path / "qdq.onnx", Dataset({"input": x.numpy()}, None, "noise"),
             Int8Config())
    graph = onnx.load(str(tmp_path / "qdq.onnx")).graph
    producers = {out: node for node in graph.node for out in node.output}
    (add,) = [n for n in graph.node if n.op_type == "Add"]
    assert sorted(producers[name].op_type for name in add.input) == ["Conv", "DequantizeLinear"]
    used = {name for node in graph.node for name in node.input}
    assert all(t.name in used for t in graph.initializer)      # the dropped pair's scales went with it


def test_tensorrt_version_numbers():
    assert tensorrt_version_number("10.3") == tensorrt_version_number("10.3.0.30") == 100300
    assert tensorrt_version_number("8.5.2") == 8502 and tensorrt_version_number("8.6.1") == 8601
    with pytest.raises(TargetError, match="not a TensorRT version"):
        tensorrt_version_number("ten")


def test_dla_refuses_a_jetson_without_dla(files, digits, tmp_path):
    context = BuildContext(calibration=digits.validation, profile=ORIN_NANO)
    with pytest.raises(TargetError, match="NVIDIA Jetson jetson-orin-nano has no DLA cores"):
        TENSORRT_INT8_DLA.build(files["digits.onnx"], tmp_path, context)
    with pytest.raises(TargetError, match="runtimes.tensorrt"):
        TENSORRT_INT8_DLA.build(files["digits.onnx"], tmp_path, replace(context, profile=replace(
            ORIN_NX, runtimes={"jetpack": "6.2"})))


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
def test_gpu_candidates_are_skipped_without_cuda(files):
    assert GPU.elsewhere() == "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
    assert not any(GPU.measures_here(candidate) for candidate in GPU.candidates)


@pytest.mark.skipif(NO_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")
def test_gpu_candidates_run_on_cuda(files, digits, tmp_path):
    from edgeml.examples import digits_source
    from edgeml.measure.evaluate import predict

    reference = ort.InferenceSession(str(files["digits.onnx"])).run(None, digits.test.inputs)[0]
    context = BuildContext(calibration=digits.validation, source=digits_source(digits))
    for candidate in GPU.candidates[2:]:
        if candidate.applies and candidate.applies(files["digits.onnx"]):
            continue            # onnxruntime without its CUDA provider
        artifact = candidate.build(files["digits.onnx"], tmp_path / candidate.name, context)
        out = predict(candidate.backend.open(artifact, 1), digits.test, 32)[0]
        assert np.mean(out.argmax(1) == reference.argmax(1)) > 0.97, candidate.name


@pytest.mark.skipif(NO_TENSORRT, reason="TensorRT is not installed (it installs only on a Jetson or GPU host)")
def test_build_engine_builds_and_checks_the_engine(built, digits):
    from edgeml.bundle.reference import tolerance, write_reference
    from edgeml.deploy.build_engine import build_engine

    for (profile, name), artifact in built.items():
        if profile != "jetson-orin-nano":       # a GPU host has no DLA
            continue
        manifest = {"backend": {"name": "tensorrt"}, "precision": artifact.precision, "entry": artifact.entry,
                    "runtime_config": artifact.runtime_config}
        (artifact.folder / "manifest.json").write_text(json.dumps(manifest))
        check = artifact.folder / artifact.runtime_config.get("check_entry", artifact.entry)
        inputs = {"input": digits.test.inputs["input"][:8]}
        write_reference(artifact.folder / "reference.npz", inputs,
                        {"logits": ort.InferenceSession(str(check)).run(None, inputs)[0]},
                        tolerance(artifact.precision, artifact.runtime_config))
        result = build_engine(artifact.folder)
        assert result["passed"], (name, result["max_error"], result["tolerance"])
        assert (artifact.folder / "model.engine").stat().st_size > 0 and result["latency_ms"]["p50_ms"] > 0


def test_build_engine_refuses_what_it_cannot_build(tmp_path):
    from edgeml.deploy.build_engine import build_engine
    from edgeml.errors import EdgemlError

    with pytest.raises(EdgemlError, match="not an edgeml bundle"):
        build_engine(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"backend": {"name": "openvino"}}))
    with pytest.raises(EdgemlError, match="holds a openvino artifact"):
        build_engine(tmp_path)
    if NO_TENSORRT:
        (tmp_path / "manifest.json").write_text(json.dumps({"backend": {"name": "tensorrt"}}))
        with pytest.raises(EdgemlError, match="TensorRT is not installed here: run build_engine.sh on the device"):
            build_engine(tmp_path)
