#!/usr/bin/env python3
"""Run this edgeml bundle with numpy and the runtime its manifest names (edgeml itself is not needed).

    python run.py --check                    run reference.npz and compare the outputs with those of build
                                             time: one line per output; exit 0 when all are within tolerance
    python run.py INPUT.npz -o OUTPUT.npz    run the arrays of INPUT.npz (named after the model's inputs, as
                                             the model takes them: the samples on each input's batch axis, an
                                             input without one once) and write the outputs, named after them

Runtimes: onnxruntime (onnxruntime-gpu for onnxruntime-cuda), openvino, ai_edge_litert, torch, tensorrt.
A TensorRT bundle runs the model.engine that build_engine.sh builds on the device.
Exit status: 0 ok, 1 an output is outside the tolerance, 2 the bundle or the input cannot be used.
"""

from __future__ import annotations

import argparse  # the standard library only: this file travels without edgeml's dependencies
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENGINE = "model.engine"          # what build_engine.sh writes


class Unusable(Exception):
    """The bundle, its runtime or the input cannot be used (exit 2)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description="Run this edgeml bundle.")
    parser.add_argument("input", nargs="?", type=Path, help=".npz with one array per model input")
    parser.add_argument("-o", "--output", type=Path, help=".npz to write the outputs to")
    parser.add_argument("--check", action="store_true", help="run the reference vectors and compare")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the runtime's)")
    args = parser.parse_args(argv)
    if args.check == (args.input is not None) or (args.input is not None) != (args.output is not None):
        parser.error("give --check, or INPUT.npz -o OUTPUT.npz")
    try:
        manifest = json.loads((HERE / "manifest.json").read_text())
        run = open_model(manifest, args.threads)
        if args.check:
            return check(manifest, run)
        feeds = read_inputs(args.input, [spec["name"] for spec in manifest["inputs"]])
        outputs = run(to_samples(feeds, batch_axes(manifest["inputs"])))
        np.savez(args.output, **{spec["name"]: out for spec, out in zip(manifest["outputs"], outputs)})
        print(f"wrote {args.output}: " + ", ".join(f"{spec['name']} {out.shape}"
                                                 for spec, out in zip(manifest["outputs"], outputs)))
        return 0
    except (Unusable, OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def check(manifest: dict, run) -> int:
    """Run reference.npz; print one line per output; 0 when every output is within the tolerance, else 1."""
    reference = manifest["reference"]
    with np.load(HERE / reference["file"]) as data:
        inputs = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("input/")}
        expected = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("output/")}
    tolerance = reference["tolerance"]
    outputs = dict(zip([spec["name"] for spec in manifest["outputs"]],
                       run(to_samples(inputs, batch_axes(manifest["inputs"])))))
    passed = True
    for name, want in expected.items():
        error = relative_error(outputs.get(name), want)
        passed = passed and error <= tolerance
        print(f"{name}: {'ok' if error <= tolerance else 'FAILED'}: max error {error:.3g} of the output's range "
              f"(tolerance {tolerance:g}), {len(want)} samples, {manifest['backend']['name']} on {manifest['entry']}")
    return 0 if passed else 1


def relative_error(output, reference: np.ndarray) -> float:
    """max |output - reference| relative to the reference's largest |value| (inf: shapes differ, or NaN)."""
    if output is None or np.shape(output) != np.shape(reference):
        return float("inf")
    if reference.size == 0:
        return 0.0
    ref = reference.astype(np.float64)
    error = float(np.abs(np.asarray(output, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))
    return float("inf") if np.isnan(error) else error


def read_inputs(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        missing = [n for n in names if n not in data.files]
        if missing:
            raise Unusable(f"{path} has no array named {', '.join(missing)} (it has: {', '.join(data.files)})")
        return {n: data[n] for n in names}


def open_model(manifest: dict, threads: int | None):
    """A function from named inputs (samples first: `to_samples`) to the list of outputs, in the manifest's order."""
    backend = manifest["backend"]["name"]
    openers = {"onnxruntime": _onnxruntime, "onnxruntime-cuda": _onnxruntime, "openvino": _openvino,
               "litert": _litert, "torch": _torch, "torch-cuda": _torch, "tensorrt": _tensorrt}
    if backend not in openers:
        raise Unusable(f"this run.py does not know the backend '{backend}'")
    module = next(iter(manifest["backend"]["requires"]))
    try:
        return openers[backend](manifest, HERE / manifest["entry"], threads)
    except ImportError as e:
        raise Unusable(f"{backend} bundles need the Python module '{module}' ({e}){_wanted(manifest, module)}") from e


def _wanted(manifest: dict, module: str) -> str:
    """Which version of `module` the bundle wants: the one it was built and checked with, or (TensorRT, whose
    engine is built on the device) the one its device profile names."""
    built, wanted = manifest["backend"].get("version"), manifest["backend"]["requires"].get(module)
    if wanted is None:
        return ""
    if wanted == built:
        return f"; the bundle was built with {module} {built}"
    return f"; the bundle is made for {module} {wanted}, the version its device profile names"


from edgeml.batching import batch_axes, batched, model_batch, to_samples  # noqa: E402 (run.py holds the code itself)


def _onnxruntime(manifest: dict, model: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    cuda = manifest["backend"]["name"] == "onnxruntime-cuda"
    session = ort.InferenceSession(str(model), options,
                                   providers=["CUDAExecutionProvider" if cuda else "CPUExecutionProvider"])
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise Unusable("ONNX Runtime could not start its CUDA provider (install onnxruntime-gpu, CUDA and cuDNN)")
    inputs, axes = session.get_inputs(), batch_axes(manifest["inputs"])
    return batched(lambda feeds: session.run(None, {i.name: feeds[i.name] for i in inputs}),
                   model_batch([i.shape for i in inputs], [axes.get(i.name, 0) for i in inputs]), axes=axes)


def _openvino(manifest: dict, model: Path, threads: int | None):
    import openvino as ov

    config = dict(manifest["runtime_config"])    # e.g. INFERENCE_PRECISION_HINT: f32 keeps FP32 out of bf16
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(model), "CPU", config)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    shapes = [[d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else [None]
              for shape in (port.get_partial_shape() for port in compiled.inputs)]
    axes = batch_axes(manifest["inputs"])
    return batched(lambda feeds: list(request.infer({n: feeds[n] for n in names}).to_tuple()),
                   model_batch(shapes, [axes.get(n, 0) for n in names]), axes=axes)


def _litert(manifest: dict, model: Path, threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    names = manifest["runtime_config"]["inputs"]          # in the order of the interpreter's inputs
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()

    def call(feeds):
        for detail, name in zip(inputs, names):
            interpreter.set_tensor(detail["index"], _to_tensor(feeds[name], detail))
        interpreter.invoke()
        return [_from_tensor(interpreter.get_tensor(d["index"]), d) for d in outputs]
    return batched(call, int(inputs[0]["shape"][0]), axes=batch_axes(manifest["inputs"]))


def _to_tensor(array: np.ndarray, detail: dict) -> np.ndarray:
    """Real values as the input takes them: quantized with its scale and zero point (full-integer models)."""
    scale, zero_point = detail["quantization"]
    if scale:
        limits = np.iinfo(detail["dtype"])
        array = np.clip(np.round(array / scale) + zero_point, limits.min, limits.max)
    return np.ascontiguousarray(array, dtype=detail["dtype"])


def _from_tensor(tensor: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return (tensor.astype(np.float32) - zero_point) * np.float32(scale) if scale else tensor


def _torch(manifest: dict, model: Path, threads: int | None):
    import torch

    try:
        import torch.ao.quantization.fx._decomposed  # registers the quantize/dequantize ops of INT8 programs
    except ImportError:
        pass
    if threads:
        torch.set_num_threads(threads)
    module = torch.export.load(str(model)).module()
    names = manifest["runtime_config"]["inputs"]
    cuda = manifest["backend"]["name"] == "torch-cuda"

    def call(feeds):
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
        if cuda:              # the model was saved in FP16 on the GPU
            tensors = [t.to("cuda", torch.float16) if t.is_floating_point() else t.to("cuda") for t in tensors]
        with torch.inference_mode():
            out = module(*tensors)
        return [(o.float() if o.dtype == torch.float16 else o).cpu().numpy()
                for o in (out if isinstance(out, (tuple, list)) else [out])]
    return batched(call, manifest["runtime_config"].get("batch"), axes=batch_axes(manifest["inputs"]))


def _tensorrt(manifest: dict, model: Path, threads: int | None):
    import tensorrt as trt

    if not (HERE / ENGINE).exists():
        raise Unusable(f"{ENGINE} is missing: build it on this device first (bash build_engine.sh)")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine((HERE / ENGINE).read_bytes())
    if engine is None:
        raise Unusable(f"TensorRT {trt.__version__} cannot load {ENGINE}: rebuild it here (bash build_engine.sh)")
    context = engine.create_execution_context()
    cuda = _Cuda()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [spec["name"] for spec in manifest["outputs"]]
    batch = engine.get_tensor_shape(inputs[0])[0]
    if batch < 0:
        batch = engine.get_tensor_profile_shape(inputs[0], 0)[2][0]

    def call(feeds):
        pointers = []
        try:
            for name in inputs:
                array = np.ascontiguousarray(feeds[name], dtype=trt.nptype(engine.get_tensor_dtype(name)))
                context.set_input_shape(name, array.shape)
                pointers.append(cuda.copy_in(array))
                context.set_tensor_address(name, pointers[-1])
            results = []
            for name in outputs:
                out = np.empty(tuple(context.get_tensor_shape(name)), dtype=trt.nptype(engine.get_tensor_dtype(name)))
                pointers.append(cuda.malloc(out.nbytes))
                context.set_tensor_address(name, pointers[-1])
                results.append((out, pointers[-1]))
            if not context.execute_async_v3(0):
                raise RuntimeError("TensorRT failed to run the engine")
            cuda.synchronize()
            return [cuda.copy_out(out, pointer) for out, pointer in results]
        finally:
            for pointer in pointers:
                cuda.free(pointer)
    return batched(call, int(batch), axes=batch_axes(manifest["inputs"]))


class _Cuda:
    """The few CUDA runtime calls that feed a TensorRT engine, through ctypes (no extra package needed)."""

    H2D, D2H = 1, 2

    def __init__(self):
        import ctypes
        import ctypes.util

        self.ctypes = ctypes
        found = ctypes.util.find_library("cudart")
        nvidia = [str(p) for p in Path(sys.prefix).glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib/"
                                                         "libcudart.so*")]
        for name in [found, *nvidia, "libcudart.so", "libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so"]:
            try:
                self.lib = ctypes.CDLL(name)
                break
            except (OSError, TypeError):
                continue
        else:
            raise Unusable("cannot load the CUDA runtime library (libcudart.so): add its folder to LD_LIBRARY_PATH")
        self.lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.lib.cudaFree.argtypes = [ctypes.c_void_p]

    def _ok(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"CUDA {what} failed with error {status}")

    def malloc(self, size: int) -> int:
        pointer = self.ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(self.ctypes.byref(pointer), max(size, 1)), "cudaMalloc")
        return pointer.value

    def copy_in(self, array: np.ndarray) -> int:
        pointer = self.malloc(array.nbytes)
        self._ok(self.lib.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, self.H2D), "cudaMemcpy")
        return pointer

    def copy_out(self, out: np.ndarray, pointer: int) -> np.ndarray:
        self._ok(self.lib.cudaMemcpy(out.ctypes.data, pointer, out.nbytes, self.D2H), "cudaMemcpy")
        return out

    def synchronize(self) -> None:
        self._ok(self.lib.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    def free(self, pointer: int) -> None:
        self.lib.cudaFree(pointer)


if __name__ == "__main__":
    sys.exit(main())
