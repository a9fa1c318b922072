"""The server's listening socket: connections it accepts answer without Nagle's delay."""

import socket

import pytest

from edgeml.errors import EdgemlError
from edgeml.serve.app import listen


def test_accepted_connections_have_tcp_nodelay():
    server = listen("127.0.0.1", 0)
    try:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.close()


def test_a_port_in_use_is_one_line():
    server = listen("127.0.0.1", 0)
    try:
        with pytest.raises(EdgemlError, match="cannot listen on 127.0.0.1"):
            listen("127.0.0.1", server.getsockname()[1])
    finally:
        server.close()
