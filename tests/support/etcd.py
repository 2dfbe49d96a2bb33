"""A real etcd server for integration tests: free loopback ports, a temp data dir."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from tests.support.procs import Proc, free_port, port_open, wait_until

ETCD_BINARY = shutil.which("etcd")


class EtcdServer:
    """One etcd member. ``restart()`` keeps the data dir and the ports, like an
    operator restarting etcd; clients holding its URL must reconnect on their own."""

    def __init__(self, base_dir: Path, name: str = "etcd-test") -> None:
        if ETCD_BINARY is None:
            raise RuntimeError("etcd is not on PATH (CI installs Debian's etcd-server)")
        self.name = name
        self.base_dir = base_dir
        self.data_dir = base_dir / f"{name}.data"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: Proc | None = None
        self._starts = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """What ``open_store`` and ``--etcd`` take."""
        return f"etcd://{self.endpoint}"

    def _args(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            str(ETCD_BINARY),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-level", "warn",
        ]

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as resp:
            return json.loads(resp.read()).get("health") == "true"

    def start(self, timeout_s: float = 30.0) -> None:
        assert self.proc is None or not self.proc.alive(), "etcd already running"
        self._starts += 1
        log = self.base_dir / f"{self.name}.{self._starts}.log"
        self.proc = Proc(self._args(), log)
        self.proc.wait_ready(self.healthy, timeout_s, what=f"etcd on {self.endpoint}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            # The port must be free before a restart can bind it again.
            wait_until(lambda: not self._listening(), 10, "etcd port to close")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _listening(self) -> bool:
        return port_open(self.client_port)
