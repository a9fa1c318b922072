"""Recipe files: parsing, checking, round trip, and flags overriding the file."""

import pytest

from edgeml.bundle.monitoring import DriftConfig
from edgeml.compress.distill import DistillConfig
from edgeml.compress.prune import StructuredConfig
from edgeml.errors import EdgemlError
from edgeml.pipeline.recipe import Recipe, dump_recipe, load_recipe, make_recipe, parse_duration


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_a_full_recipe_is_read_and_written_back_the_same(tmp_path):
    path = write(tmp_path, """
target: cpu
precision: int8
quantizer: ort
calibration_method: entropy
max_accuracy_drop: 0.005
tuning_budget: 2m
prune: {ratio: 0.4, importance: l2, round_to: 4, global: true, ignore: [features.0]}
distill: {epochs: 7, temperature: 2, alpha: 0.5}
seed: 3
threads: 1
measure_seconds: 0.5
drift: {psi: 0.25, pvalue: 0.05, window: 100}
""")
    recipe = make_recipe(**load_recipe(path))
    assert recipe == Recipe(
        precision="int8", quantizer="ort", calibration_method="entropy", max_accuracy_drop=0.005, tuning_budget=120,
        prune=StructuredConfig(ratio=0.4, importance="l2", round_to=4, global_pruning=True, ignore=("features.0",)),
        distill=True, distill_config=DistillConfig(epochs=7, temperature=2.0, alpha=0.5), seed=3, threads=1,
        measure_seconds=0.5, drift=DriftConfig(psi=0.25, pvalue=0.05, window=100, min_samples=50))
    again = write(tmp_path, dump_recipe(recipe))
    assert make_recipe(**load_recipe(again)) == recipe


def test_short_forms_and_empty_file(tmp_path):
    assert make_recipe(**load_recipe(write(tmp_path, "prune: 0.5\ndistill: false\n"))) == \
        Recipe(prune=StructuredConfig(ratio=0.5), distill=False)
    assert make_recipe(**load_recipe(write(tmp_path, ""))) == Recipe()
    assert make_recipe(**load_recipe(write(tmp_path, "distill: auto\n"))).distill is None


def test_flags_override_the_file(tmp_path):
    base = make_recipe(**load_recipe(write(tmp_path, "max_accuracy_drop: 0.02\nprecision: int8\n")))
    assert make_recipe(base, max_accuracy_drop=0.001) == Recipe(max_accuracy_drop=0.001, precision="int8")


@pytest.mark.parametrize("text, message", [
    ("precison: int8", "unknown setting(s) precison"),
    ("precision: int3", "'int3' is not one of"),
    ("max_accuracy_drop: lots", "max_accuracy_drop (--max-accuracy-drop) must be float"),
    ("max_accuracy_drop: 2", "is a fraction between 0 and 1"),
    ("threads: two", "threads (--threads) must be int"),
    ("threads: 0", "must be at least 1"),
    ("tuning_budget: soon", "is not a duration"),
    ("tuning_budget: 0s", "must be positive"),
    ("prune: {ratio: 0.5, speed: fast}", "prune: unknown setting(s) speed"),
    ("prune: {ratio: 1.5}", "prune"),
    ("prune: yes please", "prune: give a ratio"),
    ("distill: {epochs: many}", "distill.epochs must be int"),
    ("distill: {seed: 1}", "unknown setting(s) seed"),
    ("drift: 0.2", "drift: give a mapping"),
    ("drift: {psi: high}", "drift.psi must be float"),
    ("drift: {psi: 0}", "psi must be a positive number"),
    ("drift: {pvalue: 1.5}", "pvalue must be between 0 and 1"),
    ("drift: {window: 5}", "window must be at least 10"),
    ("drift: {window: 100, min_samples: 101}", "min_samples must be from 1 to window (100)"),
    ("drift: {bins: 20}", "drift: unknown setting(s) bins"),
    ("[1, 2]", "must be a mapping"),
    ("target: [cpu", "is not valid YAML"),
    ("!!python/object/apply:os.system ['echo owned']", "is not valid YAML"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(EdgemlError) as e:
        make_recipe(**load_recipe(write(tmp_path, text)))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(EdgemlError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, seconds", [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
                                           ("2.5m", 150.0), ("45", 45.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
