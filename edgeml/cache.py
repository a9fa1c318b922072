"""Where edgeml keeps things it can rebuild (the trained example model)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$EDGEML_CACHE_DIR, else $XDG_CACHE_HOME/edgeml, else ~/.cache/edgeml."""
    if os.environ.get("EDGEML_CACHE_DIR"):
        return Path(os.environ["EDGEML_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeml"
