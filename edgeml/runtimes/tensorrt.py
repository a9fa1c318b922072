"""Building and running TensorRT engines with TensorRT's Python API, where TensorRT is installed.

`build_plan` builds from a TensorRT artifact the engine its build_engine.sh would build with trtexec
(the same precision, DLA core, calibration cache, shapes and workspace, read from runtime_config);
`EngineRunner` runs it with torch CUDA tensors as its input and output buffers.
"""

from __future__ import annotations

import numpy as np

from edgeml.errors import TargetError
from edgeml.runtimes.base import Artifact, Backend

ENGINE = "model.engine"          # the engine a device builds beside the artifact (build_engine.sh, build-engine)
TIMING_CACHE = "timing.cache"    # trtexec's timing cache, beside it


def build_plan(artifact: Artifact) -> bytes:
    """The serialized engine for `artifact`, built on this machine's GPU (or its DLA)."""
    import tensorrt as trt

    config = artifact.runtime_config
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode from TensorRT 10 on (the flag is ignored there); 8.x needs it.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(artifact.folder / artifact.entry)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TargetError(f"TensorRT cannot parse {artifact.entry}: {errors}")
    settings = builder.create_builder_config()
    if config.get("workspace_mib"):
        settings.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config["workspace_mib"] << 20)
    settings.set_flag(trt.BuilderFlag.FP16)         # INT8 engines: layers left out of INT8 run in FP16
    if artifact.precision == "int8":
        settings.set_flag(trt.BuilderFlag.INT8)
    profile = None
    if config.get("shapes"):
        profile = builder.create_optimization_profile()
        for name, shape in config["shapes"].items():
            profile.set_shape(name, shape, shape, shape)
        settings.add_optimization_profile(profile)
    if config.get("calibration_cache"):
        # Kept in a local until the build is done: TensorRT holds no reference to the Python object.
        calibrator = _cache_calibrator((artifact.folder / config["calibration_cache"]).read_bytes())
        settings.int8_calibrator = calibrator
        if profile is not None:
            settings.set_calibration_profile(profile)
    if config.get("dla_core") is not None:
        if builder.num_DLA_cores <= config["dla_core"]:
            raise TargetError(f"this engine runs on DLA core {config['dla_core']}, and this machine has "
                              f"{builder.num_DLA_cores} DLA cores: build it on the Jetson the profile names")
        settings.default_device_type = trt.DeviceType.DLA
        settings.DLA_core = config["dla_core"]
        settings.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plan = builder.build_serialized_network(network, settings)
    if plan is None:
        raise TargetError(f"TensorRT could not build an engine from {artifact.entry} (its log above says why)")
    return bytes(plan)


def _cache_calibrator(cache: bytes):
    """An INT8 calibrator that only hands TensorRT a calibration cache (it has no data to calibrate with)."""
    import tensorrt as trt

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, data):
            pass

    return CacheCalibrator()


class EngineRunner:
    """Runs a serialized engine on the GPU; feeds of any batch size run in chunks of the engine's batch."""

    def __init__(self, plan: bytes):
        import tensorrt as trt

        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        first = self.input_names[0]
        batch = self.engine.get_tensor_shape(first)[0]
        self.batch = batch if batch > 0 else self.engine.get_tensor_profile_shape(first, 0)[2][0]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[self.input_names[0]])
        parts = [self._call({k: v[i:i + self.batch] for k, v in feeds.items()}) for i in range(0, count, self.batch)]
        return [np.concatenate(column) for column in zip(*parts)]

    def _call(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        stream = torch.cuda.current_stream()
        buffers = {}
        for name in self.input_names:
            buffers[name] = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", self._dtype(name))
            self.context.set_input_shape(name, tuple(buffers[name].shape))
        for name in self.output_names:
            buffers[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name),
                                        device="cuda")
        for name, tensor in buffers.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        stream.synchronize()
        return [buffers[name].cpu().numpy() for name in self.output_names]

    def _dtype(self, name: str):
        """The torch dtype of tensor `name`, by way of numpy's (the TensorRT types differ across versions)."""
        import tensorrt as trt
        import torch

        return torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype


def open_artifact(artifact: Artifact, threads: int) -> EngineRunner:
    return EngineRunner(build_plan(artifact))


TENSORRT = Backend("tensorrt", ("tensorrt",),
                   extra="TensorRT: JetPack on a Jetson, `pip install tensorrt` on a GPU host", open=open_artifact)
