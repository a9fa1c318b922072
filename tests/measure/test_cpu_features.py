"""edgeml.measure.cpu_features: the one CPU detection, its $EDGEML_CPU_FEATURES override, and what follows from it
(the INT8 scheme, whether openvino-bf16 is built), agreed on by `edgeml targets`, doctor and optimize.

Nothing here depends on this machine's CPU: each test names the CPU it assumes (the `assume_cpu` fixture)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from onnx import TensorProto, helper, save

from edgeml.measure import cpu_features
from edgeml.measure.cpu_features import ASSUMED, DETECTED, UNKNOWN, int8_scheme, parse_cpuinfo
from edgeml.targets import get_target

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2

processor\t: 1
flags\t\t: fpu sse sse2 avx512f avx512_vnni
"""
ARM = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp i8mm bf16
CPU implementer\t: 0x41
"""
AVX2 = ("avx2", "fma")
AVX512 = ("avx2", "fma", "avx512f", "avx512bw")
VNNI = (*AVX512, "avx512_vnni")
AMX = (*VNNI, "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
BF16 = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")


def test_cpuinfo_flags_of_the_first_x86_and_arm_cpu(tmp_path):
    x86 = parse_cpuinfo(X86)
    assert {"avx2", "fma", "sse4_1"} <= x86 and "avx512f" not in x86        # the first CPU's line only
    arm = parse_cpuinfo(ARM)
    assert {"asimd", "asimddp", "i8mm", "bf16"} <= arm
    assert cpu_features.shown(arm) == ["asimd", "asimdhp", "asimddp", "i8mm", "bf16"]
    assert cpu_features.shown(x86) == ["avx2"]
    assert parse_cpuinfo("processor\t: 0\nmodel name\t: a CPU\n") is None
    assert cpu_features.read_cpuinfo(tmp_path / "absent") is None
    (tmp_path / "cpuinfo").write_text(ARM)
    assert cpu_features.read_cpuinfo(tmp_path / "cpuinfo") == arm


def test_detection_reads_proc_cpuinfo(monkeypatch):
    monkeypatch.delenv(cpu_features.ENV, raising=False)
    if not cpu_features.CPUINFO.exists():
        assert cpu_features.detected() is None and cpu_features.source() == UNKNOWN
        return
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", cpu_features.CPUINFO.read_text(), re.MULTILINE)
    assert cpu_features.detected() == frozenset(match.group(1).split())
    assert cpu_features.features() == cpu_features.detected() and cpu_features.source() == DETECTED


def test_the_override_replaces_the_detected_features(assume_cpu, monkeypatch):
    assume_cpu("avx2", "fma")
    assert cpu_features.features() == {"avx2", "fma"} and cpu_features.source() == ASSUMED
    monkeypatch.setenv(cpu_features.ENV, " AVX2, fma  avx512f,")             # commas or spaces, any case
    assert cpu_features.features() == {"avx2", "fma", "avx512f"}
    assume_cpu()                                                            # "none": no features at all
    assert cpu_features.features() == frozenset() and cpu_features.source() == ASSUMED
    monkeypatch.setenv(cpu_features.ENV, " ")                               # empty: not set
    assert cpu_features.source() != ASSUMED
    assert cpu_features.features() == (cpu_features.detected() or frozenset())


@pytest.mark.parametrize("flags, bf16, vnni", [
    (AVX2, False, False), (AVX512, False, False), (VNNI, False, True), (("avx2", "avx_vnni"), False, True),
    (BF16, True, True), (AMX, True, True), (("asimd", "asimddp"), False, True), (("asimd", "bf16"), True, False),
], ids=["avx2", "avx512", "avx512-vnni", "avx-vnni", "avx512-bf16", "amx", "arm-dotprod", "arm-bf16"])
def test_bf16_and_vnni(assume_cpu, flags, bf16, vnni):
    assert cpu_features.has_bf16(frozenset(flags)) == bf16 and cpu_features.has_vnni(frozenset(flags)) == vnni
    assume_cpu(*flags)                                          # the same answers from the override
    assert cpu_features.has_bf16() == bf16 and cpu_features.has_vnni() == vnni


@pytest.mark.parametrize("flags, machine, name, avoid, named", [
    (AVX2, "x86_64", "no-vnni", True, "AVX2"),
    (AVX512, "x86_64", "no-vnni", True, "AVX-512"),
    (VNNI, "x86_64", "vnni", False, "avx512_vnni"),
    (("avx2", "avx_vnni"), "AMD64", "vnni", False, "avx_vnni"),
    (AMX, "x86_64", "amx", False, "amx_int8"),
    (("asimd", "asimddp", "i8mm"), "aarch64", "arm", False, "asimddp"),
    (("asimd",), "arm64", "arm", False, "without a dot product"),
    ((), "x86_64", "no-vnni", True, "no VNNI"),
    (AVX2, "riscv64", "unknown", True, "riscv64"),
], ids=["avx2", "avx512-no-vnni", "vnni", "avx-vnni", "amx", "arm", "arm-no-dotprod", "x86-none", "riscv"])
def test_int8_scheme(flags, machine, name, avoid, named):
    scheme = int8_scheme(frozenset(flags), machine)
    assert (scheme.name, scheme.avoid_saturation) == (name, avoid)
    assert named in scheme.reason and "\n" not in scheme.reason
    assert ("reduce_range" in scheme.reason and "overflow fix on the first layer" in scheme.reason) == avoid
    if avoid and machine.startswith("x86"):
        assert "VPMADDUBSW" in scheme.reason
    assert scheme.to_dict() == {"name": name, "avoid_saturation": avoid, "reason": scheme.reason}


def test_int8_scheme_follows_the_override_and_takes_the_safe_side_when_unknown(assume_cpu, monkeypatch):
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: "x86_64")
    assume_cpu(*AVX2)
    assert int8_scheme().avoid_saturation and int8_scheme().name == "no-vnni"
    assume_cpu(*VNNI)
    assert not int8_scheme().avoid_saturation and int8_scheme().name == "vnni"
    monkeypatch.delenv(cpu_features.ENV)
    monkeypatch.setattr(cpu_features, "detected", lambda: None)            # no /proc/cpuinfo flags
    assert cpu_features.source() == UNKNOWN
    scheme = int8_scheme()
    assert (scheme.name, scheme.avoid_saturation) == ("unknown", True) and "unknown" in scheme.reason
    assert cpu_features.describe()["features"] is None


def test_subprocesses_inherit_the_override(assume_cpu):
    assume_cpu(*AVX2)
    code = "from edgeml.measure import cpu_features as c; print(c.source(), c.int8_scheme().avoid_saturation, sep='|')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{ASSUMED}|True"


def bf16_candidate():
    return next(c for c in get_target("cpu").candidates if c.name == "openvino-bf16")


def test_openvino_bf16_applies_where_the_cpu_has_bf16(assume_cpu, tmp_path):
    model = tmp_path / "any.onnx"                          # the rule reads the CPU, never the model
    assume_cpu(*AVX2)
    reason = bf16_candidate().applies(model)
    assert reason and "no BF16 instructions" in reason and cpu_features.ENV in reason
    assume_cpu(*BF16)
    assert bf16_candidate().applies(model) is None
    assume_cpu("asimd", "bf16")
    assert bf16_candidate().applies(model) is None


def cpu_row(stdout: str, candidate: str) -> str:
    return next(line for line in stdout.splitlines() if f" {candidate} " in line)


def test_targets_and_doctor_skip_openvino_bf16_without_bf16(assume_cpu, edgeml_cli):
    assume_cpu(*AVX2)
    result = edgeml_cli("targets")
    assert result.exit_code == 0
    assert f"({ASSUMED}); INT8 scheme: no-vnni" in result.stdout
    row = cpu_row(result.stdout, "openvino-bf16")
    assert "skipped on this CPU: this CPU has no BF16 instructions" in row and "measured here" not in row
    assert "measured here" in cpu_row(result.stdout, "openvino-fp32")

    assume_cpu(*BF16)
    result = edgeml_cli("targets")
    assert "INT8 scheme: vnni" in result.stdout
    row = cpu_row(result.stdout, "openvino-bf16")
    assert "measured here" in row and "skipped" not in row


def test_doctor_reports_the_features_their_source_and_the_int8_scheme(assume_cpu, edgeml_cli):
    assume_cpu(*AVX2)
    report = json.loads(edgeml_cli("doctor", "--format", "json").stdout)
    machine = report["machine"]
    assert machine["cpu_features"] == ["avx2"] and machine["cpu_features_from"] == ASSUMED
    assert machine["int8_scheme"] == int8_scheme().to_dict() and machine["int8_scheme"]["avoid_saturation"]
    cpu = {c["name"]: c for t in report["targets"] if t["name"] == "cpu" for c in t["candidates"]}
    assert cpu["openvino-bf16"]["status"] == "skipped on this CPU"
    assert cpu["openvino-bf16"]["detail"] == cpu_features.missing_bf16()

    tables = edgeml_cli("doctor").stdout
    assert "INT8 scheme" in tables and "no-vnni" in tables and ASSUMED in tables


def test_override_names_edgeml_does_not_know_are_assumed_but_listed(assume_cpu, edgeml_cli):
    assume_cpu(*AMX, "sse4_2")
    assert cpu_features.unrecognised() == []
    assume_cpu("bogus", "avx2")
    assert cpu_features.unrecognised() == ["bogus"] and cpu_features.features() == {"bogus", "avx2"}
    listed = sorted((cpu_features.detected() or frozenset()) - set(cpu_features.SHOWN) - set(cpu_features.OTHER))
    if listed:                                  # a flag this CPU lists is a real name, though edgeml reads none such
        assume_cpu(listed[0])
        assert cpu_features.unrecognised() == []

    assume_cpu("bogus")
    report = json.loads(edgeml_cli("doctor", "--format", "json").stdout)
    assert report["machine"]["cpu_features_unrecognised"] == ["bogus"] and report["machine"]["cpu_features"] == []
    row = next(line for line in edgeml_cli("doctor").stdout.splitlines() if "not recognised" in line)
    assert "bogus (in $EDGEML_CPU_FEATURES: no CPU flag edgeml knows; a typo?)" in row
    assume_cpu(*AVX2)
    assert "not recognised" not in edgeml_cli("doctor").stdout


def test_optimize_warns_once_about_names_it_does_not_know(assume_cpu, edgeml_cli, small_model, tmp_path):
    assume_cpu("bogus", "avx2")
    result = edgeml_cli("optimize", small_model, "--precision", "fp32", "--measure-seconds", "0.05",
                        "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("$EDGEML_CPU_FEATURES names bogus, which is no CPU flag edgeml knows") == 1


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """y = x W: one MatMul, batch dynamic."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [8, 4], [0.1 * (i % 7 - 3) for i in range(32)])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "small",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [weight])
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("flags", [AVX2, BF16], ids=["no-bf16", "bf16"])
def test_optimize_agrees_with_targets_on_openvino_bf16(assume_cpu, edgeml_cli, small_model, tmp_path, flags):
    assume_cpu(*flags)
    out = tmp_path / "out"
    result = edgeml_cli("optimize", small_model, "--precision", "bf16", "--measure-seconds", "0.05", "-o", out)
    assert result.exit_code == 0, result.stderr
    row = next(r for r in json.loads((out / "report.json").read_text())["rows"] if r["name"] == "openvino-bf16")
    listed = cpu_row(edgeml_cli("targets").stdout, "openvino-bf16")
    if cpu_features.has_bf16():
        assert row["status"] != "skipped" and "measured here" in listed
    else:
        assert row["status"] == "skipped" and row["reason"] == cpu_features.missing_bf16()
        assert f"skipped on this CPU: {row['reason']}" in listed
