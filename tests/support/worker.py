"""A real ``inferplex worker`` process on free loopback ports, stopped in ``finally``.

    with run_worker(tmp_path, "--memory-budget", "1GiB") as w:
        w.ensure_model("mlp")
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import LoopbackServer, Proc, free_port, inferplex_cmd, port_open


@dataclass
class WorkerProcess(LoopbackServer):
    proc: Proc
    http_port: int
    grpc_port: int
    loaded: set[str] = field(default_factory=set)

    def http_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def memory(self) -> dict[str, Any]:
        """The worker's memory budget report (``GET /v2/inferplex/memory``)."""
        with urllib.request.urlopen(f"http://{self.http_url}/v2/inferplex/memory", timeout=5) as r:
            return json.loads(r.read())

    def ensure_model(self, name: str, kind: str | None = None) -> str:
        """Load a test model (tests/support/models.BUILDERS[kind or name]) once per worker."""
        if name not in self.loaded:
            import tritonclient.grpc as grpcclient

            from tests.support.models import model_files

            config, files = model_files(name, kind)
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
