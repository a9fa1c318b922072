"""The digits bundle every serve test runs: `edgeml optimize` of the digits example, FP32, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeml


@pytest.fixture(scope="session")
def bundle(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "run"
    edgeml.optimize(example="digits", out=out, precision="fp32", threads=1, measure_seconds=0.05)
    return out / "bundle"
