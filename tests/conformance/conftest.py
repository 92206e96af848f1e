"""One broker and one edge for the whole conformance suite; one raw client per case."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.peer import Peer
from tests.support.procs import Edge, running_cluster

# The edge's --max-frame-bytes. Autobahn's limit cases (9.x) go up to 16 MiB;
# here they probe this limit instead. 64 KiB still lets the framing cases
# send 65535 and 65536 bytes, the largest 16-bit and smallest 64-bit lengths.
LIMIT = 65536


@pytest.fixture(scope="package")
def edge() -> Iterator[Edge]:
    with running_cluster(edges=1, edge_args=["--max-frame-bytes", str(LIMIT)]) as cluster:
        yield cluster.edges[0]


@pytest.fixture
def ws(edge: Edge) -> Iterator[Peer]:
    peer = Peer(edge.port)
    try:
        yield peer
    finally:
        peer.close()
