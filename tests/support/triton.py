"""A real NVIDIA ``tritonserver`` for integration tests, on free loopback ports.

scripts/ensure-triton (``make triton``) extracts it from the nvidia-pytriton wheel into
build/triton/; ``triton_unavailable()`` says why a test must skip where it could not.

    with run_triton(repo_dir, log_dir) as triton:
        tritonclient.http.InferenceServerClient(triton.http_url)

The server runs with ``--model-control-mode explicit`` (models load through the repository
API, as the control plane drives it), binds 127.0.0.1 only (its default is 0.0.0.0) and is
stopped in ``finally``; a failure to start raises with the end of its log.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import REPO, LoopbackServer, Proc, free_port, port_open, wait_until

TRITON_HOME = REPO / "build" / "triton"
SERVER_DIR = TRITON_HOME / "server" / "pytriton" / "tritonserver"
TRITON_BINARY = SERVER_DIR / "bin" / "tritonserver"
BACKEND_DIR = SERVER_DIR / "backends"
LIBS_DIR = TRITON_HOME / "server" / "nvidia_pytriton.libs"
# The Python backend stub takes its sys.path from the first `python3` on PATH (it embeds
# Python isolated: PYTHONPATH is ignored); this venv holds the numpy<2 it needs.
STUB_PYTHON_BIN = TRITON_HOME / "stub-python" / "bin"
TRITON_VERSION = "2.51.0"


def triton_unavailable() -> str | None:
    """Why Triton cannot run here, or None when it can."""
    unavailable = TRITON_HOME / "UNAVAILABLE"
    if unavailable.exists():
        return f"real Triton unavailable: {unavailable.read_text().strip()}"
    stamp = TRITON_HOME / ".ready"
    running = f"python={sys.version_info[0]}.{sys.version_info[1]}"
    if not stamp.exists() or not TRITON_BINARY.exists():
        return "real Triton not set up: run `make triton` (scripts/ensure-triton)"
    if not stamp.read_text().strip().endswith(running):
        return f"build/triton was set up for another Python than {running}: run `make triton`"
    return None


def triton_env() -> dict[str, str]:
    """The environment tritonserver and its Python backend stubs need."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""  # where this Python's libpython lives
    paths = [str(LIBS_DIR), libdir, os.environ.get("LD_LIBRARY_PATH", "")]
    return {
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p),
        "PATH": os.pathsep.join([str(STUB_PYTHON_BIN), os.environ.get("PATH", "")]),
    }


class TritonServer(LoopbackServer):
    """One tritonserver over ``repository``; ``restart()`` keeps the ports (and loses every
    loaded model, as a real restart in explicit mode does)."""

    def __init__(self, repository: Path, log_dir: Path, *extra_args: str) -> None:
        reason = triton_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self.repository = repository
        self.log_dir = log_dir
        self.extra_args = list(extra_args)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: Proc | None = None
        self._starts = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def args(self) -> list[str]:
        return [
            str(TRITON_BINARY),
            "--model-repository", str(self.repository),
            "--model-control-mode", "explicit",
            "--backend-directory", str(BACKEND_DIR),
            "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            # a stop should not wait out in-flight work for the default 30 s
            "--exit-timeout-secs", "2",
            *self.extra_args,
        ]

    def live(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/live", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout_s: float = 60.0) -> None:
        assert self.proc is None or not self.proc.alive(), "tritonserver already running"
        self._starts += 1
        log = self.log_dir / f"tritonserver-{self.http_port}.{self._starts}.log"
        self.proc = Proc(self.args(), log, env=triton_env())
        self.proc.wait_ready(lambda: self.live() and port_open(self.grpc_port), timeout_s,
                             what=f"tritonserver on {self.http_url}")

    def log(self) -> str:
        """Its output so far (for failure messages: Triton logs why a load failed)."""
        return self.proc.log() if self.proc else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        # SIGTERM to the process group: the server and its backend stubs (graceful for both)
        self.proc.stop(timeout_s=10)
        wait_until(lambda: not port_open(self.http_port), 10, "tritonserver port to close")

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def run_triton(repository: Path, log_dir: Path, *extra_args: str) -> Iterator[TritonServer]:
    """A started server, stopped on exit however the block ends."""
    repository.mkdir(parents=True, exist_ok=True)
    server = TritonServer(repository, log_dir, *extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
