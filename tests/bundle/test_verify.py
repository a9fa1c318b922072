"""Verifiable bundles: the manifest and its schema, reference vectors, run.py without edgeml, reproducible
`edgeml pack`, and `edgeml verify` on fresh, tampered and malicious bundles."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from archives import link, malicious
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from edgeml.bundle.folder import schema
from edgeml.bundle.reference import read_reference

QUICK = ("--measure-seconds", "0.05", "--threads", "1")
RUNS = {
    "cpu": ("--target", "cpu", "--precision", "int8", "--quantizer", "ort"),      # onnxruntime-int8 only
    "jetson": ("--target", "jetson", "--profile", "jetson-orin-nx", "--precision", "int8"),
    "mobile": ("--target", "mobile", "--precision", "fp32"),
}
NO_LITERT = importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None


def cli(*args):
    from edgeml.cli import cli as edgeml

    return CliRunner().invoke(edgeml, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def bundles(digits, tmp_path_factory) -> dict[str, Path]:
    """One fresh digits bundle per target: {target: OUT/bundle}."""
    out = tmp_path_factory.mktemp("bundles")
    made = {}
    for target, flags in RUNS.items():
        if target == "mobile" and NO_LITERT:
            continue
        result = cli("optimize", "--example", "digits", *flags, "-o", out / target, *QUICK)
        assert result.exit_code == 0, result.stderr
        made[target] = out / target / "bundle"
    return made


@pytest.fixture
def copy(bundles, tmp_path):
    """A copy of a bundle to change: copy(target) -> folder."""
    def make(target: str) -> Path:
        return Path(shutil.copytree(bundles[target], tmp_path / target))
    return make


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_manifest_is_valid_and_complete(bundles, digits):
    Draft202012Validator.check_schema(schema())
    for bundle in bundles.values():
        manifest = manifest_of(bundle)
        Draft202012Validator(schema()).validate(manifest)
        assert manifest["format_version"] == 3
        on_disk = {p.name for p in bundle.iterdir()} - {"manifest.json"}
        assert {f["path"] for f in manifest["files"]} == on_disk and {"run.py", "reference.npz"} <= on_disk
        assert manifest["lineage"]["seeds"] == {"recipe": 0, "example": 0}
        assert manifest["lineage"]["exporter"] == "dynamo"
        assert "numpy" in manifest["backend"]["requires"]

        inputs, outputs, tolerance = read_reference(bundle / "reference.npz")
        reference = manifest["reference"]
        assert reference["samples"] == 8 and tolerance == reference["tolerance"]
        np.testing.assert_array_equal(inputs["input"], digits.test.inputs["input"][:8])   # real evaluation data
        assert list(outputs) == [o["name"] for o in manifest["outputs"]] and outputs["output"].shape == (8, 10)

    cpu, jetson = manifest_of(bundles["cpu"]), manifest_of(bundles["jetson"])
    assert cpu["backend"]["requires"]["onnxruntime"] == cpu["backend"]["version"]
    assert cpu["reference"]["tolerance"] == 0.05 and cpu["reference"]["outputs_from"]["backend"] == "onnxruntime"
    # A TensorRT row is judged here by ONNX Runtime on the same model: its outputs are the reference.
    assert jetson["backend"] == {"name": "tensorrt", "version": None,
                                 "requires": {"tensorrt": "10.3", "numpy": np.__version__}}
    assert jetson["reference"]["outputs_from"]["backend"] == "onnxruntime"
    assert jetson["device_files"] == ["model.engine", "timing.cache"]
    if "mobile" in bundles:
        assert manifest_of(bundles["mobile"])["reference"]["tolerance"] == 1e-4          # fp32


def run_py(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """run.py in an isolated interpreter (-I: no PYTHONPATH, no user site) where importing edgeml fails."""
    code = ("import runpy, sys; sys.modules['edgeml'] = None; sys.argv = ['run.py', *sys.argv[1:]]; "
            f"runpy.run_path({str(bundle / 'run.py')!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-I", "-c", code, *args], capture_output=True, text=True, check=False,
                          cwd=bundle.parent, timeout=300)


def test_run_py_needs_only_the_runtime(copy, tmp_path):
    targets = ["cpu"] + ([] if NO_LITERT else ["mobile"])
    for target in targets:
        bundle = copy(target)
        result = run_py(bundle, "--check")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("output: ok: max error") and "8 samples" in result.stdout

    bundle = tmp_path / "cpu"
    inputs, outputs, _ = read_reference(bundle / "reference.npz")
    np.savez(tmp_path / "in.npz", **inputs)
    result = run_py(bundle, str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["output"], outputs["output"], rtol=1e-5, atol=1e-5)

    np.savez(tmp_path / "wrong.npz", pixels=inputs["input"])
    result = run_py(bundle, str(tmp_path / "wrong.npz"), "-o", str(tmp_path / "x.npz"))
    assert result.returncode == 2 and "has no array named input" in result.stderr

    # Outputs that drift beyond the tolerance fail the check.
    np.savez(bundle / "reference.npz", tolerance=0.05, **{f"input/{k}": v for k, v in inputs.items()},
             **{f"output/{k}": v * 1.5 for k, v in outputs.items()})
    result = run_py(bundle, "--check")
    assert result.returncode == 1 and result.stdout.startswith("output: FAILED")

    jetson = copy("jetson")
    result = run_py(jetson, "--check")
    assert result.returncode == 2 and "need the Python module 'tensorrt'" in result.stderr
    if importlib.util.find_spec("tensorrt") is None:        # built here without TensorRT: no "built with" version
        assert "built with" not in result.stderr
        assert "the bundle is made for tensorrt 10.3, the version its device profile names" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_a_tensorrt_bundle_says_how_to_get_tensorrt(copy):
    result = cli("serve", copy("jetson"))
    assert result.exit_code == 2
    assert result.stderr.endswith(": tensorrt is not installed here (TensorRT: JetPack on a Jetson, `pip install "
                                  "tensorrt` on a GPU host)\n")
    assert "pip install 'TensorRT" not in result.stderr


def test_pack_gives_the_same_bytes(bundles, copy, tmp_path):
    bundle = copy("cpu")
    first, second, third = tmp_path / "a.edgeml.tar.gz", tmp_path / "b.edgeml.tar.gz", tmp_path / "c.edgeml.tar.gz"
    assert cli("pack", bundle, "-o", first).exit_code == 0
    os.utime(bundle / "model.onnx", (1e9, 1e9))                 # touch: a new mtime changes nothing
    assert cli("pack", bundle, "-o", second).exit_code == 0
    assert cli("pack", bundles["cpu"], "-o", third).exit_code == 0      # another folder, other mtimes
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second, third)}
    assert len(digests) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [first.name, second.name, third.name]

    raw = first.read_bytes()
    assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"          # gzip: no file name, mtime 0
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["bundle", "bundle/manifest.json", "bundle/model.onnx",
                                         "bundle/reference.npz", "bundle/run.py"]
    assert all(m.mtime == 0 and m.uid == m.gid == 0 and m.uname == m.gname == "" for m in members)
    assert {m.name: m.mode for m in members}["bundle/run.py"] == 0o755
    assert {m.name: m.mode for m in members}["bundle/model.onnx"] == 0o644

    (bundle / "link").symlink_to(bundle / "model.onnx")
    result = cli("pack", bundle, "-o", tmp_path / "d.tar.gz")
    assert result.exit_code == 2 and "'link' is not a plain file" in result.stderr


@pytest.mark.parametrize("target", list(RUNS))
def test_verify_passes_on_a_fresh_bundle(bundles, target, tmp_path):
    if target not in bundles:
        pytest.skip("litert-torch or ai-edge-litert is not installed (pip install 'edgeml[tflite]')")
    result = cli("verify", bundles[target])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "verified: the files match the manifest and the outputs match the reference vectors" in result.stdout
    if target == "jetson":
        assert "tensorrt is not installed here: checked with onnxruntime on model.onnx" in result.stdout
    archive = tmp_path / "b.tar.gz"
    cli("pack", bundles[target], "-o", archive)
    assert cli("verify", archive).exit_code == 0


def test_verify_names_a_changed_byte(copy, tmp_path):
    bundle = copy("cpu")
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(data)
    result = cli("verify", bundle)
    assert result.exit_code == 1
    assert "sha256 differs from the manifest's" in result.stdout
    assert "FAILED: model.onnx, reference vectors" in result.stdout
    cli("pack", bundle, "-o", tmp_path / "tampered.tar.gz")
    result = cli("verify", tmp_path / "tampered.tar.gz")
    assert result.exit_code == 1 and "FAILED: model.onnx" in result.stdout


def test_verify_names_truncated_missing_and_added_files(copy):
    bundle = copy("cpu")
    with open(bundle / "reference.npz", "r+b") as f:
        f.truncate(100)
    (bundle / "run.py").unlink()
    (bundle / "notes.txt").write_text("added later")
    result = cli("verify", bundle)
    assert result.exit_code == 1
    assert "FAILED: reference.npz, run.py, notes.txt, reference vectors" in result.stdout
    assert "truncated" in result.stdout and "missing" in result.stdout and "not in the manifest" in result.stdout


def test_verify_accepts_the_engine_a_device_adds(copy):
    bundle = copy("jetson")
    (bundle / "model.engine").write_bytes(b"engine")
    result = cli("verify", bundle)
    assert result.exit_code == 0 and "made on the device" in result.stdout


def test_verify_checks_the_manifest(copy, tmp_path):
    bundle = copy("cpu")
    manifest = manifest_of(bundle)
    manifest["files"][0]["path"] = "../model.onnx"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", bundle)
    assert result.exit_code == 1 and "does not match its schema at files/0/path" in result.stdout

    for key in ("candidate", "backend"):        # required fields missing: the schema check fails, not the CLI
        del manifest[key]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        result = cli("verify", bundle)
        assert result.exit_code == 1 and "does not match its schema" in result.stdout, result.output

    manifest["format_version"] = 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", bundle)
    assert result.exit_code == 2 and "has format 1" in result.stderr
    result = cli("verify", tmp_path / "nothing")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    assert cli("verify", tmp_path / "empty").exit_code == 2


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize("member, why", [
    (tarfile.TarInfo("/tmp/evil.txt"), "absolute path"),
    (tarfile.TarInfo("bundle/../../evil.txt"), "'..'"),
    (link("bundle/passwd", "/etc/passwd"), "a link (to '/etc/passwd')"),
    (link("bundle/up", "../../outside"), "a link"),
    (link("bundle/hard", "/etc/passwd", tarfile.LNKTYPE), "a link"),
    (device("bundle/null"), "a device"),
])
def test_verify_refuses_a_malicious_archive(tmp_path, member, why):
    name = member.name
    archive = malicious(tmp_path / "evil.tar.gz", member)
    result = cli("verify", archive)
    assert result.exit_code == 2
    assert f"refusing member '{name}'" in result.stderr and why in result.stderr
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_verify_refuses_what_is_not_an_archive(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(gzip.compress(b"not a tar"))
    result = cli("verify", tmp_path / "x.tar.gz")
    assert result.exit_code == 2 and "cannot read" in result.stderr


def test_a_model_from_another_framework_optimizes_and_verifies(tmp_path):
    """The shapes real third-party models have: a batch of -1 (PaddlePaddle), a state input fixed at batch 1
    beside it (h: 1x5, as silero-vad's), an output with time first and the batch second (a CRNN's)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),        # [6, batch, 3]
             helper.make_node("MatMul", ["t", "w"], ["m"]),
             helper.make_node("Add", ["m", "h"], ["y"])]
    graph = helper.make_graph(nodes, "crnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 6]),
                                             helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", -1, 5])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    for name, n in (("calib", 16), ("eval", 24)):
        np.savez(tmp_path / f"{name}.npz", x=rng.standard_normal((n, 3, 6)).astype(np.float32),
                 h=rng.standard_normal((n, 5)).astype(np.float32))

    result = cli("optimize", tmp_path / "m.onnx", *RUNS["cpu"], "--calib-data", tmp_path / "calib.npz",
                 "--eval-data", tmp_path / "eval.npz", "-o", tmp_path / "out", *QUICK)
    assert result.exit_code == 0, result.stderr
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())["rows"]}
    assert rows["onnxruntime-int8"]["status"] == "ok" and rows["onnxruntime-int8"]["metrics"]["cosine"] > 0.99
    bundle = tmp_path / "out" / "bundle"
    inputs, outputs, tolerance = read_reference(bundle / "reference.npz")
    want = (inputs["x"].transpose(0, 2, 1) @ w + inputs["h"][:, None])[:, :, None]    # [sample, time, 1, 5]
    assert outputs["y"].shape == want.shape and np.abs(outputs["y"] - want).max() <= tolerance * np.abs(want).max()
    assert run_py(bundle, "--check").returncode == 0
    assert cli("verify", bundle).exit_code == 0
