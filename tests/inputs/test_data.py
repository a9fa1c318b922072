import numpy as np
import pytest
from PIL import Image

from edgeml.errors import DataError
from edgeml.inputs.data import Dataset, check_disjoint, conform, load_data, random_dataset, split
from edgeml.inputs.specs import TensorSpec

SPEC = [TensorSpec("input", ("batch", 1, 8, 8), "float32")]


def test_npz_is_cast_and_checked(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.ones((5, 1, 8, 8), np.float64), labels=np.arange(5, dtype=np.int32))
    ds = load_data(path, SPEC)
    assert ds.inputs["input"].dtype == np.float32 and ds.labels.dtype == np.int64 and len(ds) == 5


def test_npz_refuses_objects_and_mismatched_labels(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, input=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="cannot read"):
        load_data(path, SPEC)
    path = tmp_path / "labels.npz"
    np.savez(path, input=np.zeros((5, 1, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="must be 5 integer class indices"):
        load_data(path, SPEC)
    path = tmp_path / "empty.npz"
    np.savez(path, input=np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="no samples"):
        load_data(path, SPEC)


def test_split_is_stratified_disjoint_and_seeded(digits):
    calib, evaluation = split(digits.test, 0.3, seed=0)
    assert len(calib) + len(evaluation) == len(digits.test)
    assert check_disjoint(calib, evaluation) is None
    assert set(np.unique(calib.labels)) == set(range(10))     # every class on both sides
    again, _ = split(digits.test, 0.3, seed=0)
    assert again.sha256 == calib.sha256


def test_identical_sets_refused_and_overlap_warned(digits):
    with pytest.raises(DataError, match="are the same"):
        check_disjoint(digits.test, digits.test.subset(np.arange(len(digits.test)), "copy"))
    half = digits.test.subset(np.arange(100), "first 100")
    warning = check_disjoint(half, digits.test)
    assert warning.startswith("100 of 360 evaluation samples also appear in the calibration data")


def _image_folder(root, digits, broken=False):
    """Digits written as 8-bit PNGs, one sub-folder per class."""
    x = digits.test.inputs["input"][:40, 0]
    for i, (img, label) in enumerate(zip(x, digits.test.labels[:40])):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    if broken:
        (root / "class_0" / "broken.png").write_bytes(b"\x89PNG not really")
    return x


def test_image_folder_follows_model_layout(tmp_path, digits):
    x = _image_folder(tmp_path / "images", digits)
    ds = load_data(tmp_path / "images", SPEC)                   # 8x8 gray NCHW, from the model
    assert ds.inputs["input"].shape == (40, 1, 8, 8)
    assert ds.classes == sorted({f"class_{c}" for c in digits.test.labels[:40]})
    assert ds.preprocessing == {"size": [8, 8], "layout": "NCHW", "color": "gray", "scale": 1 / 255,
                                "mean": [0.0], "std": [1.0]}
    # Images are stored sorted by class, then file name; pixel values round-trip to ~1/255.
    assert np.abs(np.sort(ds.inputs["input"].ravel()) - np.sort(x.ravel())).max() < 0.01

    nhwc = [TensorSpec("image", ("batch", 4, 4, 3), "float32")]
    ds = load_data(tmp_path / "images", nhwc, preprocess="mean=0.5/0.5/0.5,std=0.25/0.25/0.25")
    assert ds.inputs["image"].shape == (40, 4, 4, 3) and ds.preprocessing["layout"] == "NHWC"
    assert ds.inputs["image"].min() >= -2.0 and ds.inputs["image"].max() <= 2.0


def test_image_folder_errors(tmp_path, digits):
    _image_folder(tmp_path / "images", digits, broken=True)
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_data(tmp_path / "images", SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_data(tmp_path / "empty", SPEC)
    with pytest.raises(DataError, match="--preprocess: cannot use 'layout=CHW'"):
        load_data(tmp_path / "images", SPEC, preprocess="layout=CHW")


def test_random_dataset_matches_specs():
    specs = [TensorSpec("x", ("batch", 3), "float32"), TensorSpec("ids", ("batch", 5), "int64")]
    ds = random_dataset(specs, 7, seed=0, role="calibration")
    assert ds.synthetic and ds.inputs["x"].shape == (7, 3) and ds.inputs["ids"].dtype == np.int64
    assert conform(ds, specs).sha256 == ds.sha256


def test_dataset_hash_depends_on_labels():
    a = Dataset({"input": np.zeros((2, 1))}, np.array([0, 1]), "a")
    b = Dataset({"input": np.zeros((2, 1))}, np.array([1, 0]), "b")
    assert a.sha256 != b.sha256
