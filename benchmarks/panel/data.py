"""Realistic inputs made without a download: scikit-image's bundled photos, text rendered with Pillow in the
DejaVu fonts that matplotlib ships, synthesized speech-like audio and music, log-mel spectrograms of them, the
bytes of real files of the Python installation, and token ids from a real tokenizer.

Every generator takes a `split` ("calibration" or "evaluation"): the two draw from different photos, text
sources and seeds, so no evaluation sample is a calibration sample.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

import numpy as np

from benchmarks.images import CALIBRATION_PHOTOS, EVALUATION_PHOTOS
from benchmarks.text import split_texts

SEEDS = {"calibration": 0, "evaluation": 1}
PHOTOS = {"calibration": CALIBRATION_PHOTOS, "evaluation": EVALUATION_PHOTOS}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RATE = 16_000
MAX_TEXTS = 250              # the calibration modules of benchmarks/text.py have about 290 paragraphs


def rng(split: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(1000 * SEEDS[split] + salt)


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as HxWx3 uint8."""
    from skimage import data

    image = getattr(data, name)()
    image = np.asarray(image[0] if isinstance(image, tuple) else image)       # stereo pairs: the left image
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def photo_crops(split: str, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """`count` random crops (position, scale, flip) of the split's photos, resized to `size` (h, w), uint8 HWC."""
    from PIL import Image

    r, names, out = rng(split, 1), PHOTOS[split], []
    for i in range(count):
        image = photo(names[i % len(names)])
        h, w = image.shape[:2]
        ch = int(h * r.uniform(0.4, 1.0))
        cw = min(w, int(ch * size[1] / size[0] * r.uniform(0.8, 1.25)))
        top, left = r.integers(0, h - ch + 1), r.integers(0, w - cw + 1)
        crop = Image.fromarray(image[top:top + ch, left:left + cw]).resize(size[::-1], Image.BILINEAR)
        if r.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(crop))
    return out


def normalize(images: list[np.ndarray], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale: float = 1 / 255,
              layout: str = "NCHW", bgr: bool = False) -> np.ndarray:
    """uint8 HWC images (or HW grayscale) to a float32 batch: (x * scale - mean) / std."""
    batch = np.stack(images).astype(np.float32)
    if batch.ndim == 3:
        batch = batch[..., None]
    if bgr:
        batch = batch[..., ::-1]
    c = batch.shape[-1]
    batch = (batch * scale - np.asarray(mean[:c], np.float32)) / np.asarray(std[:c], np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if layout == "NCHW" else batch, dtype=np.float32)


def texts(split: str, count: int) -> list[str]:
    """Up to `count` real English paragraphs (docstrings of the standard library; different modules per split;
    at most MAX_TEXTS, which callers reuse in turn)."""
    count = min(count, MAX_TEXTS)
    calibration, evaluation = split_texts(count, count, 0)
    return calibration if split == "calibration" else evaluation


def fonts() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in folder.glob("DejaVu*.ttf") if "Display" not in p.name)


def _font(r: np.random.Generator, size: int):
    from PIL import ImageFont

    found = fonts()
    return ImageFont.truetype(str(found[r.integers(len(found))]), size)


def _paper(r: np.random.Generator, size: tuple[int, int]):
    from PIL import Image

    tone = r.integers(200, 256, 3)
    paper = np.clip(tone + r.normal(0, 6, (*size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(paper)


def text_lines(split: str, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Single lines of text (a few words of real prose) on paper-like backgrounds, uint8 HWC of `size` (h, w)."""
    from PIL import ImageDraw

    r, words = rng(split, 2), " ".join(texts(split, max(8, count // 4))).split()
    out = []
    for _ in range(count):
        start = r.integers(0, len(words) - 6)
        line = " ".join(words[start:start + r.integers(2, 6)])
        image = _paper(r, size)
        font = _font(r, int(size[0] * r.uniform(0.5, 0.75)))
        draw = ImageDraw.Draw(image)
        ink = tuple(int(v) for v in r.integers(0, 90, 3))
        draw.text((r.integers(2, max(3, size[1] // 12)), size[0] * r.uniform(0.05, 0.2)), line, fill=ink, font=font)
        out.append(np.asarray(image))
    return out


def pages(split: str, count: int, size: tuple[int, int], figures: bool = True) -> list[np.ndarray]:
    """Document pages: a title, paragraphs of real prose and (with `figures`) a photo, uint8 HWC of `size`."""
    import textwrap

    from PIL import Image, ImageDraw

    r, paragraphs = rng(split, 3), texts(split, max(12, count * 2))
    crops = photo_crops(split, count, (size[0] // 4, size[1] // 3)) if figures else []
    out = []
    for i in range(count):
        image = _paper(r, size)
        draw = ImageDraw.Draw(image)
        body = int(size[0] * r.uniform(0.018, 0.03))
        y, margin = int(size[0] * 0.05), int(size[1] * 0.07)
        draw.text((margin, y), paragraphs[i % len(paragraphs)].split(".")[0][:40], fill=(0, 0, 0),
                  font=_font(r, body * 2))
        y += body * 4
        k = i
        while y < size[0] * 0.9:
            if figures and r.random() < 0.25:
                image.paste(Image.fromarray(crops[i]), (margin, y))
                y += crops[i].shape[0] + body
                continue
            width = max(10, int((size[1] - 2 * margin) / (body * 0.55)))
            for line in textwrap.wrap(paragraphs[k % len(paragraphs)], width)[:8]:
                draw.text((margin, y), line, fill=(20, 20, 20), font=_font(r, body))
                y += int(body * 1.4)
            y += body
            k += 1
        out.append(np.asarray(image))
    return out


def captchas(split: str, count: int, size: tuple[int, int], scattered: bool = False) -> list[np.ndarray]:
    """Captcha-like images: 4-6 random letters and digits in varied fonts, colours and angles, with noise lines,
    on photo backgrounds; `scattered` places the characters anywhere (for detectors), else on one line."""
    from PIL import Image, ImageDraw

    r = rng(split, 4)
    backgrounds = photo_crops(split, count, size)
    alphabet = string.ascii_letters + string.digits
    out = []
    for i in range(count):
        image = Image.fromarray((backgrounds[i] * 0.35 + 165).astype(np.uint8))
        n = int(r.integers(4, 7))
        x = int(r.integers(2, size[1] // 8))
        for _ in range(n):
            glyph = Image.new("RGBA", (size[0], size[0]), (0, 0, 0, 0))
            font = _font(r, int(size[0] * (r.uniform(0.15, 0.3) if scattered else r.uniform(0.55, 0.8))))
            ink = tuple(int(v) for v in r.integers(0, 140, 3)) + (255,)
            ImageDraw.Draw(glyph).text((2, 2), alphabet[r.integers(len(alphabet))], fill=ink, font=font)
            glyph = glyph.rotate(float(r.uniform(-25, 25)), expand=False)
            if scattered:
                at = (int(r.integers(0, size[1] - size[0] // 3)), int(r.integers(0, size[0] - size[0] // 3)))
            else:
                at = (x, int(r.integers(-size[0] // 10, size[0] // 10 + 1)))
                x += int(size[0] * r.uniform(0.35, 0.55))
            image.paste(glyph, at, glyph)
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            points = [tuple(int(v) for v in (r.integers(0, size[1]), r.integers(0, size[0]))) for _ in range(2)]
            draw.line(points, fill=tuple(int(v) for v in r.integers(0, 200, 3)), width=1)
        out.append(np.asarray(image))
    return out


def speech(split: str, seconds: float, salt: int = 5) -> np.ndarray:
    """Speech-like audio at 16 kHz, float32 in [-1, 1]: syllables of a glottal pulse train (pitch 90-260 Hz,
    gliding) through three formant resonators, fricative noise bursts, pauses, and a little room noise; another
    `salt` gives another recording."""
    from scipy.signal import lfilter

    r = rng(split, salt)
    total, parts = int(seconds * RATE), []
    while sum(len(p) for p in parts) < total:
        kind = r.random()
        n = int(RATE * r.uniform(0.08, 0.3))
        if kind < 0.2:                                           # pause
            parts.append(np.zeros(n))
            continue
        if kind < 0.35:                                          # fricative: high-passed noise
            noise = r.normal(0, 1, n)
            parts.append(np.diff(noise, prepend=0) * 0.15 * np.hanning(n))
            continue
        f0 = np.linspace(r.uniform(90, 260), r.uniform(90, 260), n)
        phase = np.cumsum(f0 / RATE)
        pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
        voiced = lfilter([1.0], [1.0, -0.95], pulses)            # glottal roll-off
        formants = ((r.uniform(300, 900), 80), (r.uniform(900, 2300), 120), (r.uniform(2300, 3300), 160))
        for formant, bandwidth in formants:
            radius = np.exp(-np.pi * bandwidth / RATE)
            theta = 2 * np.pi * formant / RATE
            voiced = voiced + 0.5 * lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius ** 2], voiced)
        parts.append(voiced * np.hanning(n))
    audio = np.concatenate(parts)[:total]
    audio = audio / (np.max(np.abs(audio)) + 1e-9) * r.uniform(0.3, 0.8) + r.normal(0, 0.003, total)
    return np.clip(audio, -1, 1).astype(np.float32)


def music(split: str, seconds: float, rate: int = 22_050, salt: int = 7) -> np.ndarray:
    """Music-like audio, float32 in [-1, 1]: a melody of plucked notes (MIDI 40-88, harmonics decaying faster the
    higher they are), often over a two- or three-note chord, at 80-160 beats per minute, with a little noise."""
    r = rng(split, salt)
    total = int(seconds * rate)
    audio, at = np.zeros(total), 0
    beat = 60 / r.uniform(80, 160)
    while at < total:
        length = int(rate * beat * r.choice([0.5, 1, 1, 2]))
        root = int(r.integers(40, 76))
        chord = [root, root + int(r.choice([3, 4])), root + 7][:int(r.integers(1, 4))] if r.random() < 0.6 else []
        pitches = [root + int(r.integers(0, 13))] + chord
        t = np.arange(int(length * 1.5)) / rate
        for k, pitch in enumerate(pitches):
            f0 = 440 * 2 ** ((pitch - 69) / 12)
            note = np.zeros_like(t)
            for h in range(1, 9):
                if f0 * h < rate / 2:
                    note += np.sin(2 * np.pi * f0 * h * t + r.uniform(0, 6.3)) * np.exp(-t * (2 + 1.5 * h)) / h
            attack = np.minimum(1, t / 0.005)
            end = min(len(audio), at + len(t))
            audio[at:end] += (note * attack)[:end - at] * (1.0 if k == 0 else 0.5) * r.uniform(0.5, 1.0)
        at += length
    audio = audio[:total] / (np.max(np.abs(audio[:total])) + 1e-9) * r.uniform(0.4, 0.9)
    return np.clip(audio + r.normal(0, 0.002, total), -1, 1).astype(np.float32)


def mel_db(audio: np.ndarray, rate: int, n_fft: int, hop: int, mels: int) -> np.ndarray:
    """Log-mel spectrogram [frames, mels] as librosa computes it by default (centred frames, zero-padded, periodic
    Hann window, power 2, Slaney mel filters), in dB below its maximum (80 dB floor), scaled (dB + 40) / 40 as
    Microsoft's DNSMOS and AECMOS feature extractors do."""
    from scipy.signal import get_window

    padded = np.pad(audio.astype(np.float64), n_fft // 2)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(padded, (count, n_fft), (padded.strides[0] * hop, padded.strides[0]))
    power = np.abs(np.fft.rfft(frames * get_window("hann", n_fft, fftbins=True), axis=1)) ** 2

    def to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27), f * 3 / 200)

    def to_hz(m):
        return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * 200 / 3)

    edges = to_hz(np.linspace(to_mel(0), to_mel(rate / 2), mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1 / rate)
    ramps = edges[:, None] - bins[None]
    lower = -ramps[:-2] / np.diff(edges)[:-1, None]
    upper = ramps[2:] / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2 / (edges[2:] - edges[:-2]))[:, None]
    db = 10 * np.log10(np.maximum(power @ weights.T, 1e-10))
    db = np.maximum(db - db.max(), -80.0)
    return ((db + 40) / 40).astype(np.float32)


# file types by name ending, as Magika labels them; files named like this in the Python installation are samples
FILE_TYPES = {".py": "python", ".pyc": "pythonbytecode", ".so": "elf", ".json": "json", ".md": "markdown",
              ".html": "html", ".css": "css", ".js": "javascript", ".png": "png", ".ttf": "ttf", ".pem": "pem",
              ".yaml": "yaml", ".yml": "yaml", ".c": "c", ".cpp": "cpp", ".svg": "svg", ".xml": "xml", ".csv": "csv",
              ".gz": "gzip", ".zip": "zip", ".pdf": "pdf", ".sh": "shell", ".rst": "rst", ".jpg": "jpeg",
              ".gif": "gif", ".toml": "toml", ".tcl": "tcl", ".npy": "npy", ".npz": "npz", ".tar": "tar",
              ".bz2": "bzip", ".xz": "xz", ".wav": "wav", ".ico": "ico", ".bmp": "bmp", ".tiff": "tiff",
              ".ipynb": "ipynb", "LICENSE": "txt", "LICENSE.txt": "txt", ".onnx": "onnx"}
MAX_PER_TYPE = 400


def installed_files(split: str) -> dict[str, list[Path]]:
    """Real files of this Python installation (its standard library and site-packages) by Magika content type,
    at most MAX_PER_TYPE each (in sorted walk order), 64 bytes or more; a file belongs to the calibration or
    the evaluation split by the hash of its first and last 512 bytes past any whitespace (what Magika reads
    first), so that copies of one file, and files that begin and end alike, all fall in the same split; of
    those, one is kept."""
    import os
    import sysconfig

    roots = sorted({Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib")})
    found: dict[str, list[Path]] = {}
    seen: set[bytes] = set()
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                kind = FILE_TYPES.get(Path(name).suffix) or FILE_TYPES.get(name)
                path = Path(folder) / name
                if kind is None or len(found.get(kind, ())) >= MAX_PER_TYPE or path.is_symlink():
                    continue
                try:
                    size = path.stat().st_size
                    if size < 64:
                        continue
                    with open(path, "rb") as f:
                        head = f.read(4096).lstrip()[:512]
                        f.seek(max(0, size - 4096))
                        tail = f.read().rstrip()[-512:]
                except OSError:
                    continue
                key = hashlib.sha1(head + b"|" + tail).digest()
                if key[0] % 2 == SEEDS[split] and key not in seen:
                    seen.add(key)
                    found.setdefault(kind, []).append(path)
    return found


def file_samples(split: str, count: int, kinds: list[str]) -> tuple[list[Path], list[str]]:
    """`count` files and their content types, the types (of `kinds`, those found here) taken in turn and a
    random file of each; a type runs out when its files are used up."""
    r, found = rng(split, 8), installed_files(split)
    pools = {k: [found[k][i] for i in r.permutation(len(found[k]))] for k in sorted(found) if k in kinds}
    paths, labels = [], []
    while len(paths) < count and any(pools.values()):
        for kind, pool in pools.items():
            if pool and len(paths) < count:
                paths.append(pool.pop())
                labels.append(kind)
    return paths, labels


def tokens(split: str, count: int, length: int = 128) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64) of real prose, tokenized by all-MiniLM-L6-v2's WordPiece tokenizer."""
    from benchmarks.models import minilm_tokens

    return minilm_tokens(texts(split, count), length)
