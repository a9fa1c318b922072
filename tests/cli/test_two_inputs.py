"""A model with two named inputs, trained here: export, .npz data and both runtimes handle it."""

import json

import numpy as np
import torch

import edgeml


class Halves(torch.nn.Module):
    """Classifies a digit from its top and bottom halves, given as separate inputs."""

    def __init__(self):
        super().__init__()
        self.top = torch.nn.Linear(32, 32)
        self.bottom = torch.nn.Linear(32, 32)
        self.head = torch.nn.Linear(64, 10)

    def forward(self, top, bottom):
        return self.head(torch.relu(torch.cat([self.top(top), self.bottom(bottom)], dim=1)))


def halves(dataset):
    x = dataset.inputs["input"].reshape(len(dataset), 64)
    return {"top": x[:, :32].copy(), "bottom": x[:, 32:].copy()}


def test_two_input_model(digits, tmp_path):
    torch.manual_seed(0)
    model = Halves()
    train = {k: torch.from_numpy(v) for k, v in halves(digits.train).items()}
    labels = torch.from_numpy(digits.train.labels)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(50):                          # full-batch steps: 96% test accuracy
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(train["top"], train["bottom"]), labels).backward()
        opt.step()
    model.eval()
    np.savez(tmp_path / "calib.npz", **halves(digits.validation), labels=digits.validation.labels)
    np.savez(tmp_path / "eval.npz", **halves(digits.test), labels=digits.test.labels)

    run = edgeml.optimize(model, input_shapes=["top:1x32", "bottom:1x32"], calib_data=tmp_path / "calib.npz",
                          eval_data=tmp_path / "eval.npz", out=tmp_path / "out", measure_seconds=0.05, threads=1)
    rows = {r.name: r for r in run.rows}
    assert all(r.status == "ok" for r in rows.values() if r.status != "skipped"), [r.reason for r in rows.values()]
    assert rows["onnxruntime-int8"].status == rows["openvino-int8"].status == "ok"
    assert rows["original"].metrics["accuracy"] > 0.9
    assert rows["onnxruntime-int8"].quality_drop < 0.03 and rows["openvino-int8"].quality_drop < 0.03
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["top", "bottom"]
