"""Shared integration fixtures.

Worker fixture: one session-wide ``inferplex worker`` (tests/support/worker.py) for most
tests; tests that need different flags start their own with ``run_worker``.

REST fixtures: ``cp``, the real control-plane app in-process (tests/support/cp_app.py)
with default settings, and ``keys``, a key for each of tenants acme and globex. Modules
that need other settings, or ``inferplex up`` as a process, define their own ``cp``
(and ``keys``), which take precedence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from placement.driver import InstanceDriver
from placement.instances import InstanceInfo
from placement.triton_driver import TritonDriver
from tests.support.cp_app import RunningApp, running_app, settings_for
from tests.support.worker import TEST_CREDENTIAL, WorkerProcess, run_worker

SESSION_MAX_REQUEST_BYTES = 4 * 2**20


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the session: --demo (serves `simple`), explicit control, a small body limit."""
    with run_worker(tmp_path_factory.mktemp("worker"), "--demo", "--memory-budget", "8GiB",
                    "--max-request-bytes", str(SESSION_MAX_REQUEST_BYTES)) as w:
        w.loaded.add("simple")
        yield w


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with running_app(settings_for(tmp_path / "data")) as app:
        yield app


@pytest.fixture
async def keys(cp: RunningApp) -> dict[str, str]:
    return {"acme": await cp.tenant_with_key("acme"), "globex": await cp.tenant_with_key("globex")}


@pytest.fixture(scope="module")
def profiled_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker restricted to TEST_CREDENTIAL, so every profiling call is shown to carry it."""
    with run_worker(tmp_path_factory.mktemp("worker"), "--memory-budget", "512MiB", "--threads", "1",
                    credential=TEST_CREDENTIAL) as w:
        yield w


@pytest.fixture
async def driver(profiled_worker: WorkerProcess) -> AsyncIterator[InstanceDriver]:
    """The control plane's driver for ``profiled_worker``, closed after the test."""
    d = TritonDriver(InstanceInfo("w1", profiled_worker.http_url, profiled_worker.grpc_url, 512 << 20, "cpu"),
                     credential=profiled_worker.credential)
    try:
        yield d
    finally:
        await d.close()
