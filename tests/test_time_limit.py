"""Each build runs under a time limit derived from --tuning-budget: a build stuck in a long step fails that row only."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edgeml.time_limit import TimeLimit, limited, time_limit

LSTM = """
import torch


class Sequence(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(16, 32, num_layers=3, batch_first=True)
        self.linear = torch.nn.Linear(32, 4)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.linear(y[:, -1])
"""


def _calibrate_forever():
    """A calibration loop of many short native steps, as quantizers run them."""
    a = np.ones((64, 64), np.float32)
    while True:
        a = np.tanh(a @ a)


def test_a_long_loop_of_native_calls_is_interrupted():
    started = time.monotonic()
    with pytest.raises(TimeLimit, match=r"time limit \(0.5 s, the tuning budget\): calibration did not finish"):
        with time_limit(0.5, "calibration"):
            _calibrate_forever()
    assert time.monotonic() - started < 30


def test_a_library_that_swallows_the_first_interruption_is_interrupted_again():
    def build_with_fallback():
        try:
            _calibrate_forever()
        except Exception:                     # a library's "try the other way" on any error
            _calibrate_forever()

    with pytest.raises(TimeLimit):
        with time_limit(0.5, "the build"):
            build_with_fallback()


def test_a_library_that_wraps_the_interruption_in_its_own_error_still_ends_as_the_limit():
    """torch.export re-raises whatever stops a traced call as its own error ("While executing %lstm ...")."""
    def traced_call():
        try:
            _calibrate_forever()
        except Exception as e:
            raise RuntimeError("While executing %lstm") from e

    with pytest.raises(TimeLimit, match="the build did not finish"):
        with time_limit(0.5, "the build"):
            traced_call()


def test_a_library_that_rewrites_the_interruption_s_message_does_not_change_the_reason():
    """torch.fx's interpreter writes "While executing %node" into the args of an exception passing through it."""
    def interpreted_call():
        try:
            _calibrate_forever()
        except Exception as e:
            e.args = ("While executing %lstm",)
            raise

    with pytest.raises(TimeLimit, match="the build did not finish"):
        with time_limit(0.5, "the build"):
            interpreted_call()


def test_an_error_before_the_limit_stays_itself():
    with pytest.raises(ValueError, match="bad input"):
        with time_limit(30, "the build"):
            raise ValueError("bad input")


def test_a_finalizer_is_not_interrupted():
    """The alarm that comes while a __del__ runs (the garbage collector's, anywhere) waits for the next one."""
    finished = []

    class Resource:
        def __del__(self):
            until = time.monotonic() + 0.8
            while time.monotonic() < until:       # a runtime's teardown, past the limit
                pass
            finished.append(True)

    with pytest.raises(TimeLimit):
        with time_limit(0.2, "the build"):
            Resource()
            _calibrate_forever()
    assert finished == [True]


def test_the_limit_is_gone_after_the_block():
    with time_limit(0.2, "a quick build"):
        pass
    time.sleep(0.5)                           # no late alarm


def test_limited_names_the_candidate():
    class Candidate:
        name = "slow-int8"

    def build(candidate, folder, context):
        _calibrate_forever()

    with pytest.raises(TimeLimit, match="the build of slow-int8 did not finish"):
        limited(build, 0.3)(Candidate(), None, None)


def test_a_build_past_the_tuning_budget_fails_its_row(tmp_path):
    """An LSTM over 20 steps for the mobile target: its INT8 conversion (convert, then calibrate op by op) outlasts
    a 2 s budget (it takes about 10 s here); the run ends with the candidate's time limit named, and leaves no OUT."""
    (tmp_path / "sequence.py").write_text(LSTM)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((40, 20, 16)).astype(np.float32))
    subprocess.run([sys.executable, "-c", "import torch, sequence; torch.manual_seed(0); "
                    "torch.save(sequence.Sequence().state_dict(), 'w.pt')"], cwd=tmp_path, check=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "edgeml", "optimize", "sequence:Sequence", "--weights", "w.pt", "--input-shape",
         "x:1x20x16", "--data", "data.npz", "--target", "mobile", "--precision", "int8", "--tuning-budget", "2s",
         "--measure-seconds", "0.05", "--no-cache", "-o", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert "litert-int8: time limit (2 s, the tuning budget): the build of litert-int8 did not finish" in result.stderr
    assert not (tmp_path / "out").exists()
    assert {p.name for p in tmp_path.iterdir()} - {"__pycache__"} == {"data.npz", "sequence.py", "w.pt"}



def test_a_build_in_a_worker_thread_is_limited_too():
    caught = []

    def worker():
        try:
            with time_limit(0.3, "the build"):
                _calibrate_forever()
        except TimeLimit as e:
            caught.append(str(e))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert caught == ["time limit (0.3 s, the tuning budget): the build did not finish"]
