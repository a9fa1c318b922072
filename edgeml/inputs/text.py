"""Text for language models: documents from a `.txt` file or a folder of them (one document each), or, with none
given, real prose that ships with the machine: never generated text, never random tokens.

With no text given, evaluation reads the licences Debian ships in /usr/share/common-licenses (real prose, held out
from calibration), and calibration the Python language reference that ships with CPython (`pydoc_data`); where
the licences are missing, evaluation takes the reference's other half.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeml.errors import DataError

LICENCES = Path("/usr/share/common-licenses")
MIN_CHARS = 200               # shorter files or topics are not documents worth a perplexity


@dataclass(frozen=True)
class Text:
    """Documents, and where they came from (for the run record and the report)."""
    documents: tuple[str, ...]
    names: tuple[str, ...]
    origin: str

    def describe(self) -> dict:
        return {"source": self.origin, "documents": len(self.documents),
                "characters": sum(len(d) for d in self.documents)}


def read_text(path: str | Path) -> Text:
    """The documents of a .txt file (one document) or of a folder's .txt files (one each, in name order)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"text not found: {path}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{path} holds no .txt files: give a .txt file or a folder of them (one document each)")
    documents, names = [], []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{file} is not UTF-8 text") from None
        if text.strip():
            documents.append(text)
            names.append(file.name)
    if not documents:
        raise DataError(f"every text file in {path} is empty")
    return Text(tuple(documents), tuple(names), str(path))


def default_calibration() -> Text:
    """Half the Python language reference that CPython ships (pydoc_data.topics): the even-numbered topics."""
    return _reference_half(0)


def default_evaluation() -> Text:
    """The licences in /usr/share/common-licenses, else the other half of the Python language reference."""
    if LICENCES.is_dir():
        files = sorted(p for p in LICENCES.iterdir() if p.is_file() and not p.is_symlink())
        texts = [(p.name, p.read_text(encoding="utf-8", errors="replace")) for p in files]
        texts = [(n, t) for n, t in texts if len(t) >= MIN_CHARS]
        if len(texts) >= 4:
            return Text(tuple(t for _, t in texts), tuple(n for n, _ in texts), str(LICENCES))
    return _reference_half(1)


def _reference_half(half: int) -> Text:
    from pydoc_data.topics import topics

    names = [n for n in sorted(topics) if len(topics[n]) >= MIN_CHARS][half::2]
    return Text(tuple(topics[n] for n in names), tuple(names),
                f"the Python language reference (pydoc_data.topics, {'even' if half == 0 else 'odd'} topics)")
