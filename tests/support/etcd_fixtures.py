"""pytest fixtures for a real etcd (registered in tests/conftest.py via pytest_plugins).

``etcd_server``: one server shared by the whole session; tests isolate themselves by
key prefix (``ns``) and must not stop it. ``make_etcd``: private servers a test may stop
and restart (outages, failover).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from store.base import StateStore
from store.embedded import EmbeddedStore
from store.etcd import EtcdStore
from tests.support.etcd import ETCD_BINARY, EtcdServer

NO_ETCD = "etcd is not on PATH (make test installs Debian's etcd-server: scripts/ensure-etcd)"
needs_etcd = pytest.mark.skipif(ETCD_BINARY is None, reason=NO_ETCD)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    if ETCD_BINARY is None:
        pytest.skip(NO_ETCD)
    server = EtcdServer(tmp_path_factory.mktemp("etcd-shared"), name="shared")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_etcd(tmp_path: Path) -> Iterator[Callable[[], EtcdServer]]:
    if ETCD_BINARY is None:
        pytest.skip(NO_ETCD)
    servers: list[EtcdServer] = []

    def make() -> EtcdServer:
        server = EtcdServer(tmp_path, name=f"private{len(servers)}")
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def ns() -> str:
    """A fresh key prefix: tests share one etcd server and must not see each other."""
    return f"/test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture(params=["embedded", "etcd"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which store implementation a contract-style test runs against."""
    if request.param == "etcd":
        request.applymarker(pytest.mark.etcd)
    return request.param


@pytest.fixture
async def stores(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """Two handles on one store: two clients for etcd, the same object for embedded."""
    if kind == "embedded":
        one = EmbeddedStore(tmp_path / "state.json")
        two: StateStore = one
    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        one, two = EtcdStore(server.url), EtcdStore(server.url)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()
