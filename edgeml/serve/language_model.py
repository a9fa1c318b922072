"""`edgeml serve` of a language-model bundle: the OpenAI-compatible API on FastAPI (POST /v1/chat/completions and
/v1/completions, streamed as server-sent events or not, GET /v1/models) beside /health and /metrics.

Every refusal is OpenAI's error body {"error": {"message": "one line", "type": ...}}: a client's mistake its 4xx,
a full queue 503, a failure of the runtime 500 (in a stream: an error event, and no [DONE]). Generation is greedy
whatever `temperature` says (the header X-Edgeml-Decoding: greedy says so on every completion).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeml.errors import EdgemlError, first_line
from edgeml.serve.app import BODY_TIMEOUT_S, _body, _Guard, _loopback, handle_http_errors, listen
from edgeml.serve.decode import RequestError
from edgeml.serve.generation import GenerationMetrics, Job, LanguageModel
from edgeml.serve.openai_api import Shapes, TextDeltas, error, event, parse

PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
GREEDY = {"X-Edgeml-Decoding": "greedy"}
SSE = {**GREEDY, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error(message, status), status, headers=headers)


class _Stream(StreamingResponse):
    """Server-sent events of one job, whose generation is stopped however the response ends: finished, failed,
    or the client gone (Starlette then cancels the stream without closing its iterator, so this closes it)."""

    def __init__(self, events: AsyncIterator[str], job: Job):
        super().__init__(events, media_type="text/event-stream", headers=SSE)
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()
            await self.body_iterator.aclose()


async def _texts(model: LanguageModel, job: Job) -> AsyncIterator[str]:
    """The generated text as it grows (stop tokens left out)."""
    deltas = TextDeltas(model.decode)
    async for token in job:
        if token not in model.stop and (piece := deltas.add(token)):
            yield piece
    if piece := deltas.flush():
        yield piece


def create_app(model: LanguageModel, metrics: GenerationMetrics, token: str | None = None, max_body: int = 32 << 20,
               body_timeout: float = BODY_TIMEOUT_S) -> FastAPI:
    app = FastAPI(title="edgeml serve", docs_url=None, redoc_url=None, openapi_url=None)

    async def complete(request: Request, chat: bool):
        arrived = time.perf_counter()
        try:
            asked = parse(await _body(request, max_body, body_timeout), chat, model.name)
            ids = model.prompt(asked)
            job = model.submit(ids, model.max_new_tokens(asked, len(ids)), arrived)
        except RequestError as e:
            metrics.errors.labels(e.kind).inc()
            return _error(e.status, str(e))
        shapes = Shapes(chat, model.name)
        if asked.stream:
            return _Stream(events(job, shapes, len(ids), asked.include_usage), job)
        try:
            text = "".join([piece async for piece in _texts(model, job)])
        except Exception as e:  # the runtime failed on a request that passed every check: the server's fault
            metrics.errors.labels("runtime").inc()
            return _error(500, f"the runtime failed: {type(e).__name__}: {first_line(e)}")
        finally:
            job.cancel()
        return JSONResponse(shapes.response(text, job.finish, len(ids), job.count), headers=GREEDY)

    async def events(job: Job, shapes: Shapes, prompt_tokens: int, include_usage: bool) -> AsyncIterator[str]:
        if shapes.chat:
            yield event(shapes.chunk(role=True))
        try:
            async for piece in _texts(model, job):
                yield event(shapes.chunk(piece))
        except Exception as e:  # as above; the status line has gone, so the error is the stream's last event
            metrics.errors.labels("runtime").inc()
            yield event(error(f"the runtime failed: {type(e).__name__}: {first_line(e)}", 500))
            return
        yield event(shapes.chunk(finish=job.finish))
        if include_usage:
            yield event(shapes.usage_chunk(prompt_tokens, job.count))
        yield event("[DONE]")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, False)

    @app.get("/v1/models")
    async def models():
        created = int((model.folder / "manifest.json").stat().st_mtime)
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": created,
                                            "owned_by": "edgeml"}]}

    @app.get("/health")
    async def health():
        manifest = model.manifest
        return {"status": "ok", "model_loaded": True, "bundle": str(model.folder), "kind": manifest["kind"],
                "model": model.name, "runtime": manifest["runtime"], "precision": manifest.get("precision"),
                "context_length": model.context, "max_new_tokens": model.default_max, "decoding": "greedy",
                "max_queue": model.max_queue}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    handle_http_errors(app, metrics, _error, "POST /v1/chat/completions and /v1/completions, GET /v1/models, "
                       "/health and /metrics")

    app.add_middleware(_Guard, token=token, metrics=metrics, paths=PATHS, error=_error)
    return app


def serve_language_model(bundle: Path, host: str, port: int, threads: int | None, token: str | None,
                         max_body_mb: float, body_timeout_s: float, max_queue: int, announce=print) -> None:
    """Load the language-model BUNDLE and answer the OpenAI-compatible API on host:port until interrupted."""
    import uvicorn

    if max_queue < 0:
        raise EdgemlError("--max-queue must be at least 0")
    metrics = GenerationMetrics()
    model = LanguageModel.load(bundle, threads or os.cpu_count() or 1, max_queue, metrics)
    app = create_app(model, metrics, token, int(max_body_mb * (1 << 20)), body_timeout_s)
    sock = listen(host, port)
    announce(f"serving {bundle} ({model.name}, {model.manifest['runtime']} {model.manifest.get('precision', '')}) on "
             f"http://{host}:{sock.getsockname()[1]}: POST /v1/chat/completions, POST /v1/completions, GET "
             f"/v1/models, GET /health, GET /metrics; greedy decoding, one generation at a time, {max_queue} may wait")
    if not token and not _loopback(host):
        announce(f"warning: {host} is reachable from other machines and no --token is set")
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
