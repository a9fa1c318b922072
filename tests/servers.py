"""`edgeml serve` in a process of its own on loopback, and an HTTP client for it: shared by tests/serve."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edgeml_serve(bundle: Path, port: int, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeml", "serve", str(bundle), "--port", str(port),
                             "--threads", "1", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Client:
    def __init__(self, port: int, process: subprocess.Popen | None = None):
        self.port = port
        self.process = process
        self.stderr: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, content_type: str | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        sent = dict(AUTH if headers is None else headers)
        if content_type:
            sent["Content-Type"] = content_type
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=sent)      # an iterator body goes chunked
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def predict(self, body, content_type="application/json"):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        status, data = self.request("POST", "/v1/predict", body, content_type)
        return status, json.loads(data)

    def health(self) -> dict:
        status, data = self.request("GET", "/health")
        assert status == 200, data
        return json.loads(data)

    def metrics(self) -> dict[tuple, float]:
        status, data = self.request("GET", "/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(data.decode()) for s in family.samples}


@contextmanager
def running(bundle: Path, *flags: str):
    """`edgeml serve BUNDLE --token TOKEN FLAGS` on a free loopback port, once /health answers: a Client whose
    `process` is the server's. Stopped (SIGTERM) at the end, its stderr then in `client.stderr`."""
    port = free_port()
    process = edgeml_serve(bundle, port, "--token", TOKEN, *flags)
    client = Client(port, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not answer /health within 60 s"
            try:
                if client.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield client
    finally:
        client.stderr = stop(process)


def stop(process: subprocess.Popen) -> str:
    """Stop the server (SIGTERM, then SIGKILL after 15 s); what it wrote to stderr."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1]
