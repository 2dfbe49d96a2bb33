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

from tests.support.cp_app import RunningApp, running_app, settings_for
from tests.support.worker import WorkerProcess, run_worker

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
