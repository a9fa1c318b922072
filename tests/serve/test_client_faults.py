"""`edgeml serve` against clients that misbehave over raw sockets: a body shorter than its Content-Length, an upload
dropped midway, a client too slow to send its body. Each is the client's fault: /metrics records a 4xx under a client
kind, never a 500 or a runtime error, and the server goes on answering."""

from __future__ import annotations

import socket
import time

import pytest
from servers import TOKEN, running

BODY_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def server(bundle):
    with running(bundle, "--body-timeout", str(BODY_TIMEOUT_S)) as client:
        yield client


def send_headers(port: int, length: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode())
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def counts(server, before: dict, **labels) -> dict[tuple, float]:
    """What /metrics counted since `before`, for the samples whose labels include `labels`."""
    after = server.metrics()
    return {key: value - before.get(key, 0) for key, value in after.items()
            if value != before.get(key, 0) and labels.items() <= dict(key[1]).items()}


def settled(server, before: dict, expected: dict[tuple, float]) -> dict[tuple, float]:
    """The counts since `before` once they hold `expected` (the server counts an abandoned request once it has
    noticed), or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        found = counts(server, before)
        if all(found.get(k) == v for k, v in expected.items()) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def requests(code: int) -> tuple:
    return "edgeml_serve_requests_total", (("code", str(code)), ("path", "/v1/predict"))


def errors(kind: str) -> tuple:
    return "edgeml_serve_errors_total", (("kind", kind),)


def test_a_short_body_and_a_dropped_upload_are_400s_not_500s(server):
    before = server.metrics()
    short = send_headers(server.port, 10000)
    short.sendall(b"x" * 100)
    short.shutdown(socket.SHUT_WR)               # no more is coming: the body ends 9900 bytes early
    assert answer(short) == b""                  # the server cannot answer a connection the client has ended
    short.close()
    dropped = send_headers(server.port, 10000)
    dropped.sendall(b"x" * 100)
    dropped.close()                              # gone mid-upload
    found = settled(server, before, {requests(400): 2, errors("body_incomplete"): 2})
    assert found.get(requests(400)) == 2 and found.get(errors("body_incomplete")) == 2, found
    assert requests(500) not in found and errors("runtime") not in found, found
    status, body = server.predict({"inputs": {"input": [[[[0.0] * 8] * 8]]}})
    assert status == 200, body


def test_a_client_too_slow_with_its_body_gets_408_and_the_connection_closed(server):
    before = server.metrics()
    slow = send_headers(server.port, 10000)
    slow.sendall(b"x" * 100)
    started = time.monotonic()
    received = answer(slow)                      # nothing more is sent: the server gives up after --body-timeout
    slow.close()
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"no more of the body arrived for 1 s (after 100 of 10,000 bytes)" in received
    assert BODY_TIMEOUT_S <= time.monotonic() - started < 10
    found = settled(server, before, {requests(408): 1, errors("body_timeout"): 1})
    assert found.get(requests(408)) == 1 and found.get(errors("body_timeout")) == 1, found
    assert requests(500) not in found and errors("runtime") not in found, found
    status, body = server.predict({"inputs": {"input": [[[[0.0] * 8] * 8]]}})
    assert status == 200, body


def test_a_body_sent_slowly_but_steadily_is_answered(server):
    """The timeout is between reads, so an upload slower than it in total still arrives."""
    body = b'{"inputs": {"input": [[[' + b", ".join([b"[" + b", ".join([b"0.0"] * 8) + b"]"] * 8) + b"]]]}}"
    sock = send_headers(server.port, len(body))
    pieces = [body[i:i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
    for piece in pieces:
        sock.sendall(piece)
        time.sleep(BODY_TIMEOUT_S * 0.4)
    head = sock.recv(65536)
    sock.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
