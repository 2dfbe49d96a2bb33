"""Shared integration fixtures.

Worker fixtures: a real ``inferplex worker`` process on free loopback ports, stopped in
``finally``; one session-wide worker for most tests, separate ones only where a test
needs different flags.

REST fixtures: ``cp``, the real control-plane app in-process (tests/support/cp_app.py)
with default settings, and ``keys``, a key for each of tenants acme and globex. Modules
that need other settings, or ``inferplex up`` as a process, define their own ``cp``
(and ``keys``), which take precedence."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cp_app import RunningApp, running_app, settings_for
from tests.support.procs import Proc, free_port, inferplex_cmd, port_open

SESSION_MAX_REQUEST_BYTES = 4 * 2**20


@dataclass
class WorkerProcess:
    proc: Proc
    http_port: int
    grpc_port: int
    loaded: set[str] = field(default_factory=set)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def ensure_model(self, name: str, kind: str | None = None) -> str:
        """Load a test model (tests/support/models.BUILDERS[kind or name]) once per worker."""
        if name not in self.loaded:
            import tritonclient.grpc as grpcclient

            from tests.support.models import model_files

            config, files = model_files(name, kind)
            import json

            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                client.load_model(name, config=json.dumps(config), files=files)
            self.loaded.add(name)
        return name


@contextmanager
def run_worker(log_dir: Path, *args: str) -> Iterator[WorkerProcess]:
    http_port, grpc_port = free_port(), free_port()
    cmd = inferplex_cmd("worker", "--http-port", str(http_port), "--grpc-port", str(grpc_port), *args)
    proc = Proc(cmd, log_dir / f"worker-{http_port}.log")
    worker = WorkerProcess(proc, http_port, grpc_port)
    try:
        proc.wait_ready(lambda: worker.http_ready() and port_open(grpc_port), 60, "inferplex worker")
        yield worker
    finally:
        proc.stop()


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
