import pytest

from edgeml.errors import OutputError
from edgeml.outdir import AtomicOutput


def test_complete_or_absent(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with AtomicOutput(out) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []                   # staging and created parents removed
    with AtomicOutput(out) as staging:
        (staging / "done.txt").write_text("done")
    assert [p.name for p in out.parent.iterdir()] == ["out"]
    assert (out / "done.txt").read_text() == "done"


def test_replace_only_with_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="already exists"):
        AtomicOutput(out).__enter__()
    with AtomicOutput(out, force=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
