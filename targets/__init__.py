"""Deployment targets: `TARGETS` maps each name to the candidates it offers (runtimes are in edgeml.runtimes)."""

from __future__ import annotations

from edgeml.errors import TargetError
from edgeml.targets.base import Target
from edgeml.targets.cpu import CPU
from edgeml.targets.gpu import GPU
from edgeml.targets.jetson import JETSON
from edgeml.targets.mobile import MOBILE

TARGETS: dict[str, Target] = {t.name: t for t in (CPU, MOBILE, JETSON, GPU)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'; available: {', '.join(TARGETS)}") from None
