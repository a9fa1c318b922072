"""The timing slot: one latency measurement at a time per node, guarded by a Ray custom resource.

Every node offers `edgeml_timing: 1`. Before a cell times anything, it starts a holder task that needs that
resource and is pinned to the cell's own node; the holder reports a local port and keeps the resource until
the cell's connection to that port closes (when the measurement ends, or when the cell's process dies).
Acquiring and releasing cost a few milliseconds once a worker is up.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterator
from contextlib import contextmanager

RESOURCE = "edgeml_timing"
CONNECT_S = 60.0         # a holder whose cell never connects gives the slot back after this long


def _hold() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(CONNECT_S)
        yield server.getsockname()[1]
        try:
            connection, _ = server.accept()
        except TimeoutError:
            return
        with connection:
            connection.settimeout(None)
            while connection.recv(1):
                pass


@functools.cache
def _holder():
    import ray

    return ray.remote(num_cpus=0, max_retries=0, resources={RESOURCE: 1})(_hold)


def node_has_slot(node: dict) -> bool:
    """Whether a node of `ray.nodes()` offers the timing slot."""
    return node.get("Resources", {}).get(RESOURCE, 0) >= 1


@contextmanager
def timing_slot() -> Iterator[None]:
    """Hold this node's timing slot for the block (called inside a Ray task)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    holder = _holder().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
    port = ray.get(next(holder))
    with socket.create_connection(("127.0.0.1", port)):
        yield
    for _ in holder:       # the holder's end: the slot is free again
        pass
