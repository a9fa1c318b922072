"""The HTTP side of `edgeml serve`: FastAPI routes on uvicorn, Prometheus metrics, drift, the bearer token.

Every answer that is not a prediction is JSON `{"error": "one line"}`: a client's mistake gets its 4xx
(edgeml.serve.decode; a body cut short or too slow to arrive, here), and only a failure of the runtime
itself is a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import socket
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from edgeml.errors import EdgemlError, first_line
from edgeml.serve.decode import RequestError, decode
from edgeml.serve.drift import DriftDetector
from edgeml.serve.model import ServedModel

PATHS = ("/v1/predict", "/health", "/metrics")
SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SAMPLES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BODY_TIMEOUT_S = 30.0                 # longest wait for the next bytes of a request's body
CLOSE = {"Connection": "close"}       # after a body that was not read to its end


class HttpMetrics:
    """The Prometheus metrics every server has, in a registry of their own (what /metrics shows)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("edgeml_serve_requests", "HTTP requests answered, by path and status code",
                                ["path", "code"], registry=self.registry)
        self.errors = Counter("edgeml_serve_errors", "Requests refused or failed, by kind", ["kind"],
                              registry=self.registry)


class Metrics(HttpMetrics):
    """The metrics of a server of a tensor model: predictions, runtime calls, batches and drift."""

    def __init__(self):
        super().__init__()
        self.latency = Histogram("edgeml_serve_predict_seconds", "Time to answer a successful POST /v1/predict, "
                                 "from the request's arrival to its response", buckets=SECONDS, registry=self.registry)
        self.inference = Histogram("edgeml_serve_inference_seconds", "Time of one runtime call",
                                   buckets=SECONDS, registry=self.registry)
        self.batch = Histogram("edgeml_serve_batch_samples", "Samples per runtime call (several requests' with "
                               "micro-batching)", buckets=SAMPLES, registry=self.registry)
        self.drift = Gauge("edgeml_serve_drift", "1 while the live window has drifted from the bundle's evaluation "
                           "data, else 0", registry=self.registry)
        self.drift_samples = Gauge("edgeml_serve_drift_window_samples", "Live samples in the drift window",
                                   registry=self.registry)
        self.drift_score = Gauge("edgeml_serve_drift_score", "Drift of one summary of an input or output over the "
                                 "live window: its PSI, or the p-value of its KS (class: chi-square) test",
                                 ["kind", "name", "summary", "statistic"], registry=self.registry)

    def observe_batch(self, samples: int, seconds: float) -> None:
        self.batch.observe(samples)
        self.inference.observe(seconds)

    def observe_drift(self, drift: DriftDetector) -> None:
        drift.evaluate()
        self.drift.set(drift.drift)
        self.drift_samples.set(drift.samples)
        for s in drift.scores:
            self.drift_score.labels(s.kind, s.name, s.summary, "psi").set(s.psi)
            self.drift_score.labels(s.kind, s.name, s.summary, "pvalue").set(s.pvalue)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


class _Guard:
    """ASGI middleware around every request: the bearer token (when set, compared in constant time) and the
    count of every answer by path (`paths`, the rest as "other") and status."""

    def __init__(self, app, token: str | None, metrics: HttpMetrics, paths: tuple[str, ...] = PATHS, error=_error):
        self.app, self.metrics, self.paths, self.error = app, metrics, paths, error
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if self.expected is not None and not hmac.compare_digest(given, self.expected):
                self.metrics.errors.labels("unauthorized").inc()
                await self.error(401, "missing or wrong bearer token: send the header 'Authorization: Bearer TOKEN'",
                                 {"WWW-Authenticate": "Bearer"})(scope, receive, counted)
            else:
                await self.app(scope, receive, counted)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.requests.labels(path, str(status)).inc()


async def _body(request: Request, limit: int, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The request's body, refused with 413 as soon as it is known to exceed `limit` bytes, with 400 when the
    connection ends before the body does, and with 408 when no bytes of it arrive for `timeout` seconds."""
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise RequestError(400, "bad_header", f"Content-Length {length[:40]!r} is not a number of bytes")
    if length is not None and int(length) > limit:
        raise RequestError(413, "body_too_large", f"the body has {int(length):,} bytes; this server takes at most "
                           f"{limit:,} (--max-body-mb)")
    of = f" of {int(length):,}" if length is not None else ""
    chunks, size, stream = [], 0, request.stream()
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return b"".join(chunks)
        except ClientDisconnect:
            raise RequestError(400, "body_incomplete", f"the connection closed after {size:,}{of} bytes of the "
                               "body") from None
        except TimeoutError:
            raise RequestError(408, "body_timeout", f"no more of the body arrived for {timeout:g} s (after "
                               f"{size:,}{of} bytes)") from None
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"the body exceeds {limit:,} bytes (--max-body-mb)")
        chunks.append(chunk)


def create_app(model: ServedModel, metrics: Metrics, token: str | None = None, max_body: int = 32 << 20,
               max_samples: int = 1024, drift: DriftDetector | None = None,
               body_timeout: float = BODY_TIMEOUT_S) -> FastAPI:
    """The app; `drift` (None: the bundle has no monitoring block) watches what /v1/predict answers."""
    app = FastAPI(title="edgeml serve", docs_url=None, redoc_url=None, openapi_url=None)
    manifest = model.bundle.manifest
    no_drift = {"enabled": False, "reason": "the bundle has no monitoring statistics (made by an edgeml without "
                "them, or on random evaluation data): drift is not watched"}

    @app.post("/v1/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        try:
            body = await _body(request, max_body, body_timeout)
            feeds = decode(body, request.headers.get("content-type"), model.inputs, max_samples, max_body)
        except RequestError as e:
            metrics.errors.labels(e.kind).inc()
            return _error(e.status, str(e), CLOSE if e.kind in ("body_incomplete", "body_timeout") else None)
        try:
            outputs = await asyncio.wrap_future(model.submit(feeds))
        except Exception as e:  # the runtime failed on inputs that passed every check: the server's fault
            metrics.errors.labels("runtime").inc()
            return _error(500, f"the runtime failed: {type(e).__name__}: {first_line(e)}")
        try:
            response = JSONResponse({"outputs": {name: o.tolist() for name, o in zip(model.outputs, outputs)}})
        except ValueError:      # JSON has no NaN or infinity
            metrics.errors.labels("output_not_finite").inc()
            return _error(500, "the model's outputs hold NaN or infinite values, which JSON cannot carry")
        metrics.latency.observe(time.perf_counter() - start)
        if drift is not None:
            drift.observe(feeds, dict(zip(model.outputs, outputs)))
        return response

    @app.get("/health")
    async def health():
        loaded = model.alive
        if drift is not None:
            drift.evaluate()
        return JSONResponse({"status": "ok" if loaded else "error", "checks": "passed", "model_loaded": loaded,
                             "bundle": str(model.bundle.folder), "candidate": manifest.get("candidate"),
                             "backend": manifest["backend"]["name"], "inputs": manifest["inputs"],
                             "outputs": manifest["outputs"], "max_batch": model.max_batch,
                             "drift": drift is not None and drift.drift,
                             "monitoring": no_drift if drift is None else drift.status()},
                            200 if loaded else 503)

    @app.get("/metrics")
    async def prometheus():
        if drift is not None:
            metrics.observe_drift(drift)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    handle_http_errors(app, metrics, _error, "POST /v1/predict, GET /health and GET /metrics")
    app.add_middleware(_Guard, token=token, metrics=metrics)
    return app


def handle_http_errors(app: FastAPI, metrics: HttpMetrics, error, answers: str) -> None:
    """A path the server has not (404), a method a path does not take (405) and other HTTP errors, as one line
    (`error(status, message, headers)`); 404 names what the server `answers`."""
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        if e.status_code == 404:
            metrics.errors.labels("not_found").inc()
            return error(404, f"no such path {request.url.path[:100]}: this server answers {answers}")
        if e.status_code == 405:
            metrics.errors.labels("method_not_allowed").inc()
            allowed = (e.headers or {}).get("Allow", "")
            return error(405, f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})",
                         e.headers)
        metrics.errors.labels("http").inc()
        return error(e.status_code, first_line(Exception(e.detail)), e.headers)


def serve(bundle: Path, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None, max_batch: int = 1,
          max_wait_ms: float = 2.0, token: str | None = None, max_body_mb: float = 32, max_samples: int = 1024,
          body_timeout_s: float = BODY_TIMEOUT_S, max_queue: int = 8, announce=print) -> None:
    """Check and load BUNDLE, then answer HTTP on host:port until interrupted (SIGINT or SIGTERM). A language-model
    bundle is served by edgeml.serve.language_model instead."""
    import uvicorn

    from edgeml.serve.generation import is_language_model

    if max_batch < 1 or max_samples < 1 or max_body_mb <= 0 or max_wait_ms < 0 or not body_timeout_s > 0:
        raise EdgemlError("--max-batch, --max-samples, --max-body-mb and --body-timeout must be positive, "
                          "--max-wait-ms at least 0")
    if is_language_model(bundle):
        from edgeml.serve.language_model import serve_language_model

        if max_batch != 1:
            raise EdgemlError("--max-batch is for tensor models: a language model generates for one request at a "
                              "time (--max-queue sets how many may wait)")
        return serve_language_model(bundle, host, port, threads, token, max_body_mb, body_timeout_s, max_queue,
                                    announce)
    metrics = Metrics()
    model = ServedModel.load(bundle, threads or os.cpu_count() or 1, max_batch, max_wait_ms / 1000,
                             metrics.observe_batch)
    monitoring = model.bundle.manifest.get("monitoring")
    drift = None if monitoring is None else DriftDetector(monitoring, announce)
    app = create_app(model, metrics, token, int(max_body_mb * (1 << 20)), max_samples, drift, body_timeout_s)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    announce(f"serving {bundle} ({model.bundle.manifest.get('candidate')}) on http://{host}:{bound}: "
             "POST /v1/predict, GET /health, GET /metrics")
    announce(f"drift: watching the last {drift.window} samples' inputs and outputs" if drift is not None else
             "drift: not watched (the bundle has no monitoring statistics)")
    if not token and not _loopback(host):
        announce(f"warning: {host} is reachable from other machines and no --token is set")
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, with TCP_NODELAY, which the connections it accepts inherit. asyncio sets it only on
    sockets whose protocol is IPPROTO_TCP, and socket.create_server's have protocol 0: without it, Nagle's algorithm
    and the client's delayed ACK hold every response for about 40 ms."""
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        raise EdgemlError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
