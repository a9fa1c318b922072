"""A pytest plugin for `make test-avx2` (`-p trained_examples`): the session's cache starts with the example models
already trained in the user's edgeml cache (`make demo` or `make test-avx2` trains them there, natively), so none is
trained again under emulation, where training the digits CNN takes longer than all the tests it serves."""

from __future__ import annotations

import shutil

import pytest

from edgeml.cache import cache_dir

TRAINED = cache_dir() / "examples"      # read on import, before the session's own cache replaces $EDGEML_CACHE_DIR


@pytest.fixture(scope="session", autouse=True)
def _trained_examples(_cache):
    assert TRAINED.is_dir(), f"no trained examples in {TRAINED}: `make test-avx2` trains them first"
    shutil.copytree(TRAINED, cache_dir() / "examples", dirs_exist_ok=True)
