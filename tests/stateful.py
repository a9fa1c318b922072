"""Small stateful audio models, trained here, whose recurrent state's batch axis is not the first.

`vad`: a voice-activity detector as the common ONNX VADs are laid out: `input [batch, 256]` (one frame of audio),
`state [2, batch, 32]` (an LSTM's h and c), `sr` a scalar sample rate (no batch axis); outputs the speech
probability and the next state. `gru`: an echo-quality estimator's layout, `audio [batch, 256]` and `h0 [2, 1, 24]`,
a GRU state whose batch is fixed to 1 in the graph. Both learn, in a few seconds, whether a frame holds a tone
(speech-like) or noise only, carrying their state across the frames of a clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FRAME = 256
RATE = 16000


class Vad(torch.nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv1d(1, 8, 16, stride=8), torch.nn.ReLU(),
                                            torch.nn.Conv1d(8, 16, 8, stride=4), torch.nn.ReLU())
        self.cell = torch.nn.LSTMCell(16, hidden)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, input, state, sr):
        x = input * (sr.to(torch.float32) / RATE)                       # the rate scales the frame
        x = self.features(x.unsqueeze(1)).mean(dim=2)
        h, c = self.cell(x, (state[0], state[1]))
        return torch.sigmoid(self.head(h)), torch.stack([h, c])


class Gru(torch.nn.Module):
    def __init__(self, hidden: int = 24):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv1d(1, 8, 16, stride=8), torch.nn.ReLU())
        self.gru = torch.nn.GRU(8, hidden, num_layers=2)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, audio, h0):
        x = self.features(audio.unsqueeze(1)).permute(2, 0, 1)          # [time, batch, channels]
        out, h = self.gru(x, h0)
        return torch.sigmoid(self.head(out[-1])), h


def clips(count: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` clips of `frames` frames each ([count, frames, FRAME]) and each frame's label (1: a tone)."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAME) / RATE
    labels = rng.random((count, frames)) < 0.5
    audio = 0.1 * rng.standard_normal((count, frames, FRAME))
    tones = np.sin(2 * np.pi * rng.uniform(150, 900, (count, frames, 1)) * t)
    audio += labels[..., None] * rng.uniform(0.3, 1.0, (count, frames, 1)) * tones
    return audio.astype(np.float32), labels.astype(np.float32)


def train_vad(steps: int = 40) -> Vad:
    torch.manual_seed(0)
    model = Vad()
    audio, labels = clips(64, 4, seed=0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    sr = torch.tensor(RATE)
    for _ in range(steps):
        opt.zero_grad()
        state = torch.zeros(2, len(audio), 32)
        loss = 0
        for f in range(audio.shape[1]):
            p, state = model(torch.from_numpy(audio[:, f]), state, sr)
            loss = loss + torch.nn.functional.binary_cross_entropy(p[:, 0], torch.from_numpy(labels[:, f]))
        loss.backward()
        opt.step()
    return model.eval()


def train_gru(steps: int = 40) -> Gru:
    torch.manual_seed(0)
    model = Gru()
    audio, labels = clips(256, 1, seed=1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(audio[:, 0]), torch.from_numpy(labels[:, 0])
    for _ in range(steps):
        opt.zero_grad()
        p, _ = model(x, torch.zeros(2, len(x), 24))
        torch.nn.functional.binary_cross_entropy(p[:, 0], y).backward()
        opt.step()
    return model.eval()


def export_vad(model: Vad, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.zeros(2, FRAME), torch.zeros(2, 2, 32), torch.tensor(RATE))
    program = torch.onnx.export(model, example, input_names=["input", "state", "sr"],
                                output_names=["output", "stateN"], dynamo=True, external_data=False,
                                dynamic_shapes=({0: batch}, {1: batch}, None))
    program.save(str(path))
    return path


def export_gru(model: Gru, path: Path) -> Path:
    """Exported at batch 1, as such estimators are: every size in the graph is fixed."""
    program = torch.onnx.export(model, (torch.zeros(1, FRAME), torch.zeros(2, 1, 24)), input_names=["audio", "h0"],
                                output_names=["score", "hn"], dynamo=True, external_data=False)
    program.save(str(path))
    return path


def vad_data(model: Vad, count: int, seed: int) -> dict[str, np.ndarray]:
    """Frames of clips with the state the model carried into each (run here, frame by frame), as the model takes
    them: `state [2, count, 32]`; `sr` given once."""
    audio, labels = clips(count, 3, seed)
    state = torch.zeros(2, count, 32)
    with torch.inference_mode():
        for f in range(2):
            _, state = model(torch.from_numpy(audio[:, f]), state, torch.tensor(RATE))
    return {"input": audio[:, 2], "state": state.numpy(), "sr": np.array(RATE, np.int64)}


def gru_data(count: int, seed: int) -> dict[str, np.ndarray]:
    """One model-shaped state per sample (`h0 [count, 2, 1, 24]`), small random states."""
    audio, _ = clips(count, 1, seed)
    h0 = 0.1 * np.random.default_rng(seed).standard_normal((count, 2, 1, 24)).astype(np.float32)
    return {"audio": audio[:, 0], "h0": h0}
