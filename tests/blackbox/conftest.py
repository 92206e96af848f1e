"""The black-box suite speaks only protocol v1 to a list of edge URLs.

By default it runs against the shipped deploy/supervisord.conf (one broker,
three edges) started on free ports. Set BLACKBOX_URLS=ws://h:p/,ws://h:p/ to
point it at any running deployment instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.supervisor import supervised_system


@pytest.fixture(scope="session")
def edge_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    given = os.environ.get("BLACKBOX_URLS")
    if given:
        yield [u.strip() for u in given.split(",") if u.strip()]
        return
    tmp: Path = tmp_path_factory.mktemp("blackbox")
    with supervised_system(tmp) as system:
        yield [e.url for e in system.edges]
