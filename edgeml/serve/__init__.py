"""`edgeml serve BUNDLE`: the bundle behind HTTP (POST /v1/predict, GET /health, GET /metrics).

decode.py reads and checks a request's inputs, model.py checks, loads and runs the bundle (one worker
thread, optional micro-batching), drift.py compares live traffic with the bundle's monitoring statistics,
app.py is the FastAPI app, its metrics and `serve`; monitor.py is `edgeml monitor`, the client side.
A language-model bundle is served OpenAI-compatible instead: openai_api.py (the requests and response shapes),
generation.py (the bundle loaded, one generation at a time, its queue and metrics), language_model.py (the routes).
"""

from edgeml.serve.app import serve

__all__ = ["serve"]
