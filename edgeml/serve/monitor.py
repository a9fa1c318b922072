"""`edgeml monitor URL`: what a running `edgeml serve` says about itself, as a compact table.

Reads GET /metrics (Prometheus text, parsed with prometheus_client's parser) and GET /health: requests
and errors answered, the p50 latency of /v1/predict (interpolated in its histogram's buckets, as
Prometheus' histogram_quantile does), and each summary's drift scores, marked where they cross the
thresholds. Standard library HTTP only: nothing here needs the server's own packages but the parser.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass

from rich.table import Table

from edgeml.errors import EdgemlError, first_line


@dataclass
class Snapshot:
    url: str
    health: dict
    samples: dict[tuple[str, tuple], float]      # (metric name, sorted labels) -> value

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name` over the samples that have `labels`."""
        return sum(v for (n, got), v in self.samples.items() if n == name and set(labels.items()) <= set(got))

    def p50_ms(self) -> float | None:
        """The median latency of successful predictions from the histogram's buckets; None before any."""
        buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in self.samples.items()
                         if n == "edgeml_serve_predict_seconds_bucket")
        if not buckets or buckets[-1][1] == 0:
            return None
        half, lower, below = buckets[-1][1] / 2, 0.0, 0.0
        for upper, count in buckets:
            if count >= half:
                if math.isinf(upper):
                    return lower * 1000
                return (lower + (upper - lower) * (half - below) / max(count - below, 1e-12)) * 1000
            lower, below = upper, count
        return None


def fetch(url: str, token: str | None, timeout: float = 10) -> Snapshot:
    """/health and /metrics of the server at `url`; a one-line EdgemlError when it cannot be read."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise EdgemlError("edgeml monitor reads Prometheus text with prometheus_client: pip install "
                          "'edgeml[serve]'") from None
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise EdgemlError(f"{url} is not an http:// or https:// URL of `edgeml serve` (e.g. http://127.0.0.1:8000)")
    health = json.loads(_get(base + "/health", token, timeout))
    text = _get(base + "/metrics", token, timeout)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return Snapshot(base, health, samples)


def _get(url: str, token: str | None, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()
    except urllib.error.HTTPError as e:
        hint = ": give --token (or set EDGEML_SERVE_TOKEN)" if e.code == 401 else ""
        raise EdgemlError(f"{url} answered {e.code} {e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, Exception):
            reason = getattr(reason, "strerror", None) or first_line(reason)
        raise EdgemlError(f"cannot reach {url}: {reason} (is `edgeml serve` running there?)") from None
    except UnicodeDecodeError:
        raise EdgemlError(f"{url} did not answer text: is it `edgeml serve`?") from None


def render(snapshot: Snapshot) -> tuple[str, Table]:
    """A status line and the table of drift scores."""
    health, monitoring = snapshot.health, snapshot.health.get("monitoring") or {}
    requests = snapshot.total("edgeml_serve_requests_total", path="/v1/predict")
    errors = snapshot.total("edgeml_serve_errors_total")
    p50 = snapshot.p50_ms()
    if not monitoring.get("enabled"):
        drift = "not watched"
    else:
        drift = (f"{'DRIFT' if health.get('drift') else 'none'} ({monitoring['samples']}/{monitoring['window']} "
                 f"samples; flagged at PSI > {monitoring['psi_threshold']:g} and p < "
                 f"{monitoring['pvalue_threshold']:g}/{monitoring['tests']})")
    line = (f"{snapshot.url}  {health.get('candidate')}  requests {requests:.0f}  errors {errors:.0f}  p50 "
            f"{'-' if p50 is None else f'{p50:.2f} ms'}  drift: {drift}")
    drifting = {(d["kind"], d["name"], d["summary"]) for d in monitoring.get("drifting", [])}
    scores: dict[tuple, dict[str, float]] = {}
    for (name, labels), value in snapshot.samples.items():
        if name == "edgeml_serve_drift_score":
            labels = dict(labels)
            scores.setdefault((labels["kind"], labels["name"], labels["summary"]), {})[labels["statistic"]] = value
    table = Table("kind", "name", "summary", "PSI", "p-value", "drift", title_justify="left")
    for key in sorted(scores):
        table.add_row(*key, f"{scores[key].get('psi', math.nan):.3f}", f"{scores[key].get('pvalue', math.nan):.2g}",
                      "[red]yes[/red]" if key in drifting else "no")
    return line, table
