"""A language-model build in a process of its own (edgeml.pipeline.build_apart): a build that fails or whose process
is killed is one line for its row, not the end of the run (the builds that succeed run through it in every
language-model pipeline test)."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from edgeml.inputs.text import default_calibration
from edgeml.pipeline.build_apart import build_apart
from edgeml.targets.base import BuildRefused, LanguageModelBuild


def _context(tiny_lm, tmp_path):
    return LanguageModelBuild(default_calibration(), json.loads((tiny_lm / "config.json").read_text()),
                              tmp_path / "build.log", 1)


def test_an_error_in_the_build_is_one_line_with_its_traceback_in_the_log(tiny_lm, tmp_path):
    with pytest.raises(BuildRefused, match=r"^tensorrt-edgellm-fp16 failed: .*no-such-model"):
        build_apart("jetson", "tensorrt-edgellm-fp16", tmp_path / "no-such-model", tmp_path / "out",
                    _context(tiny_lm, tmp_path))
    assert "Traceback" in (tmp_path / "build.log").read_text()


def test_a_build_whose_process_is_killed_is_refused_and_says_how(tiny_lm, tmp_path):
    """The kernel's out-of-memory killer sends SIGKILL; so does this test, to the build's own process."""
    spec = str(tmp_path / "tensorrt-edgellm-fp16.build.json")

    def kill_the_build():
        for _ in range(600):
            found = subprocess.run(["pgrep", "-f", spec], capture_output=True, text=True).stdout.split()
            if found:
                os.kill(int(found[0]), signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_build)
    killer.start()
    try:
        with pytest.raises(BuildRefused, match="killed by SIGKILL .*out-of-memory"):
            build_apart("jetson", "tensorrt-edgellm-fp16", tiny_lm, tmp_path / "out", _context(tiny_lm, tmp_path))
    finally:
        killer.join()
