"""What each of edgeml's pip extras installs, read from pyproject.toml (for the registry tests of runtimes and
quantizers)."""

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def extras() -> dict[str, set[str]]:
    """"edgeml" and each "edgeml[NAME]" -> the pip names they install (an extra also gets edgeml's own)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.match(r"[A-Za-z0-9._-]+", r).group().lower() for r in requirements}
    core = names(project["dependencies"])
    return {"edgeml": core, **{f"edgeml[{extra}]": core | names(requirements)
                               for extra, requirements in project["optional-dependencies"].items()}}
