"""Realistic inputs made without a download: scikit-image's bundled photos, text rendered with Pillow in the
DejaVu fonts that matplotlib ships, synthesized speech-like audio, and token ids from a real tokenizer.

Every generator takes a `split` ("calibration" or "evaluation"): the two draw from different photos, text
sources and seeds, so no evaluation sample is a calibration sample.
"""

from __future__ import annotations

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


def speech(split: str, seconds: float) -> np.ndarray:
    """Speech-like audio at 16 kHz, float32 in [-1, 1]: syllables of a glottal pulse train (pitch 90-260 Hz,
    gliding) through three formant resonators, fricative noise bursts, pauses, and a little room noise."""
    from scipy.signal import lfilter

    r = rng(split, 5)
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


def tokens(split: str, count: int, length: int = 128) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64) of real prose, tokenized by all-MiniLM-L6-v2's WordPiece tokenizer."""
    from benchmarks.models import minilm_tokens

    return minilm_tokens(texts(split, count), length)
