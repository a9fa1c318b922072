"""Device profiles: the bundled YAML files, the schema, loading by name and path, and the errors."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest
import yaml

from edgeml.errors import EdgemlError, TargetError
from edgeml.profiles import BUNDLED, SCHEMA, ProfileError, default_profile, list_profiles, load_profile

NAMES = {"jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx", "raspberry-pi-5",
         "android-phone", "x86-avx512-server", "nvidia-t4", "nvidia-l4", "nvidia-h100"}


def test_every_bundled_profile_validates_against_the_schema():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    files = sorted(BUNDLED.glob("*.yaml"))
    assert {f.stem for f in files} == NAMES
    for f in files:
        validator.validate(yaml.safe_load(f.read_text()))


def test_list_profiles_is_sorted_and_complete():
    profiles = list_profiles()
    assert [p.name for p in profiles] == sorted(NAMES)
    for p in profiles:
        assert p.sources and all(p.peak(x) > 0 for x in p.precisions)
        assert p.efficiency["compute"] > 0 and p.efficiency["memory"] > 0


def test_cpu_profiles_peaks_are_cores_times_per_core_rate():
    for p in list_profiles():
        per_cycle = p.cpu.get("flops_per_cycle")
        if per_cycle is None:
            continue
        assert set(per_cycle) == set(p.precisions), p.name
        for precision, ops in per_cycle.items():
            assert p.peak_gops[precision] == pytest.approx(p.cpu["cores"] * p.cpu["freq_ghz"] * ops, rel=0.01), p.name


def test_jetson_dla_cores_and_peaks_without_dla():
    dla = {p.name: p.dla_cores for p in list_profiles() if p.target == "jetson"}
    assert dla == {"jetson-orin-nano": 0, "jetson-orin-nx": 2, "jetson-agx-orin": 2, "jetson-xavier-nx": 2}
    agx = load_profile("jetson-agx-orin")
    # 275 sparse TOPS = 170 GPU + 105 DLA; the peak is the GPU's dense half of 170.
    assert agx.peak_gops["int8"] == pytest.approx(85_000, rel=0.01)
    assert agx.gpu["dla"]["int8_sparse_tops"] == 105


def test_load_by_name_and_by_path(tmp_path):
    by_name = load_profile("nvidia-t4")
    assert by_name.name == "nvidia-t4" and by_name.target == "gpu" and by_name.gpu["compute_capability"] == "7.5"
    own = tmp_path / "my-board.yml"
    shutil.copy(BUNDLED / "raspberry-pi-5.yaml", own)
    by_path = load_profile(str(own))
    assert by_path.name == "my-board" and by_path.path == str(own)
    assert by_path.peak_gops == load_profile("raspberry-pi-5").peak_gops


def _broken(tmp_path, edit) -> str:
    data = yaml.safe_load((BUNDLED / "jetson-orin-nano.yaml").read_text())
    edit(data)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_wrong_type_names_the_field(tmp_path):
    message = _broken(tmp_path, lambda d: d["peak_gops"].update(int8="fast"))
    assert message == f"{tmp_path / 'x.yaml'}: peak_gops.int8: 'fast' is not of type 'number'"


def test_unknown_keys_are_refused(tmp_path):
    assert "turbo: unknown field" in _broken(tmp_path, lambda d: d.update(turbo=True))
    assert "cpu.speed: unknown field" in _broken(tmp_path, lambda d: d["cpu"].update(speed=3))
    assert "name: unknown field" in _broken(tmp_path, lambda d: d.update(name="other"))   # the name is the file stem


def test_missing_field_and_bad_values(tmp_path):
    assert "memory_gb: missing" in _broken(tmp_path, lambda d: d.pop("memory_gb"))
    no_overhead = _broken(tmp_path, lambda d: d["efficiency"].pop("layer_overhead_us"))
    assert "efficiency.layer_overhead_us: missing" in no_overhead
    assert "target: 'fpga' is not one of" in _broken(tmp_path, lambda d: d.update(target="fpga"))
    assert "precisions.1: 'int3' is not one of" in _broken(tmp_path, lambda d: d.update(precisions=["fp32", "int3"]))
    assert "peak_gops.int8: missing (precisions lists int8)" in _broken(tmp_path, lambda d: d["peak_gops"].pop("int8"))


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("display_name: [unclosed\n")
    with pytest.raises(ProfileError, match="bad.yaml: cannot read it as YAML"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="not found"):
        load_profile(str(tmp_path / "missing.yaml"))
    python_tag = tmp_path / "tag.yaml"
    python_tag.write_text("!!python/object/apply:os.system ['true']\n")     # safe_load refuses it
    with pytest.raises(ProfileError, match="cannot read it as YAML"):
        load_profile(str(python_tag))


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ProfileError) as e:
        load_profile("jetson-orin-mega")
    assert "jetson-orin-mega" in str(e.value)
    assert all(name in str(e.value) for name in NAMES)
    assert isinstance(e.value, TargetError) and isinstance(e.value, EdgemlError)


def test_supports_and_peak():
    nano, xavier = load_profile("jetson-orin-nano"), load_profile("jetson-xavier-nx")
    assert nano.supports("int8") and nano.supports("bf16") and not nano.supports("fp8")
    assert not xavier.supports("bf16") and xavier.peak("bf16") is None
    assert nano.peak("int8") == 33423e9
    assert nano.peak("int8", threads=1) == nano.peak("int8")       # no per-core numbers on a GPU


def test_cpu_peak_and_bandwidth_scale_with_threads_up_to_the_cores():
    server = load_profile("x86-avx512-server")
    core = server.cpu["freq_ghz"] * 1e9
    assert server.peak("fp32", threads=1) == pytest.approx(core * 64)
    assert server.peak("int8", threads=8) == pytest.approx(8 * core * 256)
    assert server.peak("fp32", threads=500) == pytest.approx(server.peak("fp32"))
    assert server.bandwidth(1) == pytest.approx(server.cpu["core_bandwidth_gbs"] * 1e9)
    assert server.bandwidth(500) == server.bandwidth() == server.memory_bandwidth_gbs * 1e9
    pi = load_profile("raspberry-pi-5")          # no per-core bandwidth: one core may draw it all
    assert pi.peak("fp32", threads=2) == pytest.approx(pi.peak("fp32") / 2)
    assert pi.bandwidth(1) == pi.bandwidth()


def test_default_profiles():
    assert default_profile("jetson") == "jetson-orin-nano"
    assert default_profile("gpu") == "nvidia-t4"
    assert default_profile("mobile") == "android-phone"
    assert default_profile("cpu") is None
    for target in ("jetson", "gpu", "mobile"):
        assert load_profile(default_profile(target)).target == target
    with pytest.raises(ProfileError, match="unknown target 'fpga'"):
        default_profile("fpga")


def test_to_dict_is_plain_data():
    d = load_profile("jetson-orin-nx").to_dict()
    assert d["name"] == "jetson-orin-nx" and d["precisions"] == ["fp32", "fp16", "bf16", "int8"]
    assert json.loads(json.dumps(d)) == d
    assert yaml.safe_load(yaml.safe_dump(d)) == d
