"""Real English text without a download: paragraphs of the Python standard library's docstrings.

Calibration and evaluation paragraphs come from different modules, and a paragraph that occurs in
both groups (an inherited docstring) is dropped from evaluation, so evaluation never sees a text
that calibration saw. Code examples (`>>>` lines, indented blocks) and short fragments are left out.
"""

from __future__ import annotations

import importlib
import inspect
import re

import numpy as np

CALIBRATION_MODULES = ("argparse", "collections", "json", "logging", "subprocess", "threading", "pathlib",
                       "unittest", "email.message", "http.client", "asyncio.tasks", "functools", "configparser",
                       "optparse", "urllib.request", "calendar", "pickle")
EVALUATION_MODULES = ("decimal", "datetime", "socket", "tarfile", "zipfile", "csv", "statistics", "typing",
                      "inspect", "difflib", "textwrap", "shutil", "tempfile", "heapq", "fractions", "string")
MIN_WORDS = 8


def paragraphs(modules: tuple[str, ...]) -> list[str]:
    """The prose paragraphs of the docstrings of `modules` and their public classes and functions, in order."""
    found: dict[str, None] = {}
    for name in modules:
        module = importlib.import_module(name)
        objects = [module] + [v for k, v in sorted(vars(module).items()) if not k.startswith("_")
                              and (inspect.isclass(v) or inspect.isfunction(v))
                              and getattr(v, "__module__", None) == module.__name__]
        for obj in objects:
            for block in re.split(r"\n\s*\n", inspect.getdoc(obj) or ""):
                lines = block.splitlines()
                if any(line.startswith((">>>", " ", "\t", "...")) for line in lines):
                    continue
                text = " ".join(line.strip() for line in lines)
                if len(text.split()) >= MIN_WORDS and sum(c.isalpha() for c in text) > 0.7 * len(text):
                    found[text] = None
    return list(found)


def split_texts(calibration_count: int, evaluation_count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`calibration_count` paragraphs of the calibration modules and `evaluation_count` of the evaluation
    modules, drawn at random (fixed seed), none in both."""
    calibration = paragraphs(CALIBRATION_MODULES)
    seen = set(calibration)
    evaluation = [p for p in paragraphs(EVALUATION_MODULES) if p not in seen]
    rng = np.random.default_rng(seed)
    for texts, count in ((calibration, calibration_count), (evaluation, evaluation_count)):
        if len(texts) < count:
            raise ValueError(f"only {len(texts)} paragraphs available, {count} asked")
    return ([calibration[i] for i in sorted(rng.permutation(len(calibration))[:calibration_count])],
            [evaluation[i] for i in sorted(rng.permutation(len(evaluation))[:evaluation_count])])
