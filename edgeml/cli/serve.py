"""`edgeml serve`."""

from __future__ import annotations

from pathlib import Path

import click

from edgeml.cli.common import threads_option


@click.command("serve")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@threads_option
@click.option("--max-batch", type=int, default=1, show_default=True,
              help="Micro-batching: run up to B queued samples in one call (models with a dynamic batch dimension).")
@click.option("--max-wait-ms", type=float, default=2.0, show_default=True,
              help="With --max-batch: how long the first request waits for others to join its batch.")
@click.option("--token", envvar="EDGEML_SERVE_TOKEN", help="Require 'Authorization: Bearer TOKEN' (or set "
              "EDGEML_SERVE_TOKEN).")
@click.option("--max-body-mb", type=float, default=32, show_default=True, help="Largest request body (413 above).")
@click.option("--max-samples", type=int, default=1024, show_default=True, help="Most samples in one request.")
@click.option("--body-timeout", type=float, default=30, show_default=True, metavar="SECONDS",
              help="Longest wait for more of a request's body (408 after it).")
@click.option("--max-queue", type=int, default=8, show_default=True,
              help="Language models: requests that may wait while one generates (503 beyond).")
def serve_command(bundle, host, port, threads, max_batch, max_wait_ms, token, max_body_mb, max_samples,
                  body_timeout, max_queue):
    """Serve BUNDLE over HTTP: POST /v1/predict (JSON or .npz), GET /health, GET /metrics (Prometheus).
    The bundle's checks (`edgeml verify`) run first: a bundle that fails them is not served (exit 2).
    A language-model bundle is served with the OpenAI-compatible API instead: POST /v1/chat/completions and
    /v1/completions (streamed with "stream": true), GET /v1/models; decoding is greedy."""
    from edgeml.serve import serve

    serve(bundle, host=host, port=port, threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms, token=token,
          max_body_mb=max_body_mb, max_samples=max_samples, body_timeout_s=body_timeout, max_queue=max_queue,
          announce=lambda line: click.echo(line, err=True))
