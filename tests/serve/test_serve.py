"""`edgeml serve`: a real digits bundle behind a real server on loopback, asked over real HTTP: predictions
that match the bundle's reference outputs (JSON and .npz, micro-batched), a corpus of malformed requests
that each get their 4xx and one line, the bearer token, /metrics, and a tampered bundle that is refused."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from servers import AUTH, TOKEN, edgeml_serve, free_port, running

from edgeml.bundle.reference import read_reference, relative_error

MAX_SAMPLES = 64


@pytest.fixture(scope="module")
def reference(bundle):
    inputs, outputs, _ = read_reference(bundle / "reference.npz")
    return inputs["input"], outputs["output"]


@pytest.fixture(scope="module")
def server(bundle):
    """One server for the module: token, micro-batching up to 8 samples, a 1 MiB body limit, 64 samples."""
    with running(bundle, "--max-batch", "8", "--max-body-mb", "1", "--max-samples", str(MAX_SAMPLES)) as client:
        yield client


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_predict_json_matches_the_reference(server, reference, bundle):
    inputs, outputs = reference
    status, answer = server.predict({"inputs": {"input": inputs.tolist()}})
    assert status == 200, answer
    tolerance = json.loads((bundle / "manifest.json").read_text())["reference"]["tolerance"]
    assert relative_error(np.array(answer["outputs"]["output"], np.float32), outputs) <= tolerance


def test_predict_npz_matches_the_reference(server, reference):
    inputs, outputs = reference
    for content_type in ("application/octet-stream", "application/x-npz"):
        status, answer = server.predict(npz(input=inputs), content_type)
        assert status == 200, answer
        assert relative_error(np.array(answer["outputs"]["output"], np.float32), outputs) <= 1e-4


def test_concurrent_requests_are_batched_and_split_back(server, reference):
    """Requests of 1-3 samples, 8 at a time: each gets its own rows, and every sample ran once."""
    inputs, outputs = reference
    before = server.metrics()
    picks = [[i % 8] if i % 3 == 0 else [i % 8, (i + 3) % 8] if i % 3 == 1 else [0, i % 8, 7] for i in range(32)]

    def ask(rows):
        return rows, server.predict({"inputs": {"input": inputs[rows].tolist()}})
    with ThreadPoolExecutor(8) as pool:
        for rows, (status, answer) in pool.map(ask, picks):
            assert status == 200, answer
            assert relative_error(np.array(answer["outputs"]["output"], np.float32), outputs[rows]) <= 1e-4
    after = server.metrics()
    key = ("edgeml_serve_batch_samples_sum", ())
    assert after[key] - before[key] == sum(len(rows) for rows in picks)


def _pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.array([{"a": 1}], dtype=object))
    return buffer.getvalue()


def _deep_json() -> bytes:
    return b'{"inputs": {"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"


def _bomb() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, input=np.zeros((40, 1, 64, 1024), np.float32))     # 10 MiB unpacked
    return buffer.getvalue()


def _js(value) -> bytes:
    return json.dumps({"inputs": {"input": value}}).encode()


GOOD = np.zeros((2, 1, 8, 8), np.float32)
JSON, NPZ = "application/json", "application/octet-stream"
# (id, method, path, body, content type, status, a word the one-line message has)
CORPUS = [
    ("json-malformed", "POST", "/v1/predict", b'{"inputs": ', JSON, 400, "not valid json"),
    ("json-not-utf8", "POST", "/v1/predict", b"\xff\xfe\xfa{", JSON, 400, "not valid json"),
    ("json-too-deep", "POST", "/v1/predict", _deep_json(), JSON, 400, "not valid json"),
    ("json-a-list", "POST", "/v1/predict", b"[1, 2]", JSON, 400, '{"inputs"'),
    ("json-no-inputs-key", "POST", "/v1/predict", json.dumps({"input": GOOD.tolist()}).encode(), JSON, 400,
     '{"inputs"'),
    ("json-inputs-a-list", "POST", "/v1/predict", b'{"inputs": [1]}', JSON, 400, '{"inputs"'),
    ("json-extra-field", "POST", "/v1/predict", json.dumps({"inputs": {"input": GOOD.tolist()}, "x": 1}).encode(),
     JSON, 400, '{"inputs"'),
    ("unknown-name", "POST", "/v1/predict", json.dumps({"inputs": {"image": GOOD.tolist()}}).encode(), JSON, 400,
     "unknown input 'image'"),
    ("extra-name", "POST", "/v1/predict", json.dumps({"inputs": {"input": GOOD.tolist(), "mask": [1]}}).encode(),
     JSON, 400, "unknown input 'mask'"),
    ("missing-input", "POST", "/v1/predict", b'{"inputs": {}}', JSON, 400, "missing input 'input'"),
    ("rank-too-low", "POST", "/v1/predict", _js(np.zeros((2, 8, 8)).tolist()), JSON, 400, "shape (2, 8, 8)"),
    ("rank-too-high", "POST", "/v1/predict", _js(np.zeros((1, 2, 1, 8, 8)).tolist()), JSON, 400, "shape"),
    ("wrong-width", "POST", "/v1/predict", _js(np.zeros((2, 1, 8, 7)).tolist()), JSON, 400, "(n, 1, 8, 8)"),
    ("wrong-channels", "POST", "/v1/predict", _js(np.zeros((2, 3, 8, 8)).tolist()), JSON, 400, "shape (2, 3, 8, 8)"),
    ("scalar", "POST", "/v1/predict", _js(3.0), JSON, 400, "shape ()"),
    ("empty-list", "POST", "/v1/predict", _js([]), JSON, 400, "shape (0,)"),
    ("ragged", "POST", "/v1/predict", _js([[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]]), JSON, 400, "rectangular"),
    ("strings", "POST", "/v1/predict", _js([[[["a"] * 8] * 8]]), JSON, 400, "strings"),
    ("booleans", "POST", "/v1/predict", _js([[[[True] * 8] * 8]]), JSON, 400, "booleans"),
    ("nulls", "POST", "/v1/predict", _js([[[[None] * 8] * 8]]), JSON, 400, "not numbers"),
    ("nan", "POST", "/v1/predict", _js([[[[0.0] * 7 + [float("nan")]] * 8]]), JSON, 400, "nan"),
    ("infinity", "POST", "/v1/predict", _js([[[[float("inf")] * 8] * 8]]), JSON, 400, "infinite"),
    ("float32-overflow", "POST", "/v1/predict", _js([[[[1e39] * 8] * 8]]), JSON, 400, "too large for float32"),
    ("too-many-samples", "POST", "/v1/predict", npz(input=np.zeros((MAX_SAMPLES + 1, 1, 8, 8), np.float32)), NPZ,
     413, "at most 64"),
    ("npz-not-a-zip", "POST", "/v1/predict", b"PK-not really a zip at all", NPZ, 400, "not an .npz"),
    ("npz-truncated", "POST", "/v1/predict", npz(input=GOOD)[:300], NPZ, 400, "not an .npz"),
    ("npz-pickled-object-array", "POST", "/v1/predict", _pickled_npz(), NPZ, 400, "object array"),
    ("raw-pickle", "POST", "/v1/predict", pickle.dumps({"input": GOOD}), NPZ, 400, "not an .npz"),
    ("npy-not-npz", "POST", "/v1/predict", (lambda b: (np.save(b, GOOD), b.getvalue())[1])(io.BytesIO()), NPZ, 400,
     "not an .npz"),
    ("npz-wrong-name", "POST", "/v1/predict", npz(x=GOOD), NPZ, 400, "unknown input 'x'"),
    ("npz-strings", "POST", "/v1/predict", npz(input=np.full((2, 1, 8, 8), "a")), NPZ, 400, "strings"),
    ("npz-complex", "POST", "/v1/predict", npz(input=GOOD.astype(np.complex64)), NPZ, 400, "complex"),
    ("npz-nan", "POST", "/v1/predict", npz(input=np.full((2, 1, 8, 8), np.nan, np.float32)), NPZ, 400, "nan"),
    ("npz-wrong-shape", "POST", "/v1/predict", npz(input=np.zeros((2, 64), np.float32)), NPZ, 400, "shape (2, 64)"),
    ("npz-no-samples", "POST", "/v1/predict", npz(input=np.zeros((0, 1, 8, 8), np.float32)), NPZ, 400, "no samples"),
    ("npz-bomb", "POST", "/v1/predict", _bomb(), NPZ, 413, "unpacks to"),
    ("body-too-large", "POST", "/v1/predict", b"[" * (1 << 20) + b"]", JSON, 413, "at most 1,048,576"),
    ("body-too-large-chunked", "POST", "/v1/predict", iter([b" " * 65536] * 20), JSON, 413, "exceeds 1,048,576"),
    ("empty-body", "POST", "/v1/predict", b"", JSON, 400, "empty"),
    ("text-plain", "POST", "/v1/predict", b"1 2 3", "text/plain", 415, "text/plain"),
    ("form-urlencoded", "POST", "/v1/predict", b"input=1", "application/x-www-form-urlencoded", 415, "content-type"),
    ("no-content-type", "POST", "/v1/predict", _js(GOOD.tolist()), None, 415, "(none)"),
    ("get-predict", "GET", "/v1/predict", None, None, 405, "allowed: post"),
    ("put-predict", "PUT", "/v1/predict", _js(GOOD.tolist()), JSON, 405, "put is not allowed"),
    ("post-health", "POST", "/health", b"{}", JSON, 405, "allowed: get"),
    ("delete-metrics", "DELETE", "/metrics", None, None, 405, "allowed: get"),
    ("unknown-path", "GET", "/v2/predict", None, None, 404, "no such path /v2/predict"),
    ("docs-off", "GET", "/docs", None, None, 404, "no such path"),
]


@pytest.mark.parametrize("method, path, body, content_type, status, word", [c[1:] for c in CORPUS],
                         ids=[c[0] for c in CORPUS])
def test_malformed_request_gets_its_4xx_and_one_line(server, method, path, body, content_type, status, word):
    got, data = server.request(method, path, body, content_type)
    message = json.loads(data)["error"]
    assert got == status, message
    assert "\n" not in message and word in message.lower(), message
    assert server.process.poll() is None


def test_the_server_survives_the_corpus(server, reference):
    status, data = server.request("GET", "/health")
    health = json.loads(data)
    assert status == 200 and health["status"] == "ok" and health["model_loaded"] and health["checks"] == "passed"
    inputs, outputs = reference
    status, answer = server.predict({"inputs": {"input": inputs[:1].tolist()}})
    assert status == 200 and relative_error(np.array(answer["outputs"]["output"], np.float32), outputs[:1]) <= 1e-4


def test_bearer_token(server):
    body = _js(GOOD.tolist())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, data = server.request("POST", "/v1/predict", body, JSON, headers)
        assert status == 401 and "bearer token" in json.loads(data)["error"]
    assert server.request("GET", "/health", headers={})[0] == 401
    assert server.request("POST", "/v1/predict", body, JSON, AUTH)[0] == 200


def test_metrics_count_requests_errors_and_latency(server):
    before = server.metrics()
    server.predict(_js(GOOD.tolist()))
    server.predict(b"{", JSON)
    server.request("GET", "/nowhere")
    server.request("GET", "/health", headers={})
    after = server.metrics()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)
    assert delta("edgeml_serve_requests_total", path="/v1/predict", code="200") == 1
    assert delta("edgeml_serve_requests_total", path="/v1/predict", code="400") == 1
    assert delta("edgeml_serve_requests_total", path="other", code="404") == 1
    assert delta("edgeml_serve_errors_total", kind="malformed_json") == 1
    assert delta("edgeml_serve_errors_total", kind="not_found") == 1
    assert delta("edgeml_serve_errors_total", kind="unauthorized") == 1
    assert delta("edgeml_serve_predict_seconds_count") == 1
    assert delta("edgeml_serve_predict_seconds_bucket", le="+Inf") == 1
    assert delta("edgeml_serve_batch_samples_count") == 1 and delta("edgeml_serve_batch_samples_sum") == 2


def test_a_tampered_bundle_is_not_served(bundle, tmp_path):
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    process = edgeml_serve(copy, free_port())
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2
    assert stderr.count("\n") == 1 and "failed its checks" in stderr and "model.onnx" in stderr, stderr
