"""A real ``inferplex worker`` process on free loopback ports, stopped in ``finally``.

    with run_worker(tmp_path, "--memory-budget", "1GiB") as w:
        w.ensure_model("mlp")

With ``credential``, the worker restricts every API but health to it (as ``inferplex up``
starts its workers: the same INFERPLEX_INSTANCE_RESTRICTED_* variables the control plane
reads), and the helpers here send it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve.restricted import DEFAULT_KEY, InstanceCredential
from tests.support.procs import LoopbackServer, Proc, free_port, inferplex_cmd, port_open

TEST_CREDENTIAL = InstanceCredential(DEFAULT_KEY, "test-instance-secret-0123456789")


@dataclass
class WorkerProcess(LoopbackServer):
    proc: Proc
    http_port: int
    grpc_port: int
    credential: InstanceCredential | None = None
    loaded: set[str] = field(default_factory=set)

    def http_headers(self) -> dict[str, str]:
        return self.credential.http_headers() if self.credential else {}

    def grpc_headers(self) -> dict[str, str] | None:
        """As tritonclient's ``headers=``."""
        return self.credential.grpc_headers() if self.credential else None

    def http_ready(self, probe: str = "ready") -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/{probe}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def memory(self) -> dict[str, Any]:
        """The worker's memory budget report (``GET /v2/inferplex/memory``)."""
        req = urllib.request.Request(f"http://{self.http_url}/v2/inferplex/memory", headers=self.http_headers())
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def ensure_model(self, name: str, kind: str | None = None) -> str:
        """Load a test model (tests/support/models.BUILDERS[kind or name]) once per worker."""
        if name not in self.loaded:
            import tritonclient.grpc as grpcclient

            from tests.support.models import model_files

            config, files = model_files(name, kind)
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                client.load_model(name, config=json.dumps(config), files=files, headers=self.grpc_headers())
            self.loaded.add(name)
        return name


@contextmanager
def run_worker(log_dir: Path, *args: str, credential: InstanceCredential | None = None,
               env: dict[str, str] | None = None, probe: str = "ready") -> Iterator[WorkerProcess]:
    """``probe``: the health endpoint that says it has started (``live`` for a worker that
    is not ready on purpose)."""
    http_port, grpc_port = free_port(), free_port()
    cmd = inferplex_cmd("worker", "--http-port", str(http_port), "--grpc-port", str(grpc_port), *args)
    env = dict(env or {})
    if credential is not None:
        env |= {"INFERPLEX_INSTANCE_RESTRICTED_KEY": credential.key,
                "INFERPLEX_INSTANCE_RESTRICTED_VALUE": credential.value}
    proc = Proc(cmd, log_dir / f"worker-{http_port}.log", env=env)
    worker = WorkerProcess(proc, http_port, grpc_port, credential)
    try:
        proc.wait_ready(lambda: worker.http_ready(probe) and port_open(grpc_port), 60, "inferplex worker")
        yield worker
    finally:
        proc.stop()
