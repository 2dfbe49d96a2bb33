"""Start and stop real processes for integration tests, without sleeps as sync."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before in this test run: a port picked and not
    yet bound by its server is free to the kernel, and a second pick could return it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def worker_pid(parent: int, instance_id: str) -> int | None:
    """The pid of the live ``inferplex worker`` child of ``parent`` (an ``inferplex up``) started
    with ``--instance-id instance_id``; None if there is none."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and instance_id.encode() in argv and b"worker" in argv:
            return int(entry.name)
    return None


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "condition",
               interval_s: float = 0.05) -> float:
    """Poll ``condition`` until it is true or the deadline passes; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return time.monotonic() - start
        except Exception as exc:  # the thing may not be up yet
            last_exc = exc
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last error: {last_exc!r})")


async def eventually(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "condition") -> None:
    """``wait_until`` for async tests: ``condition()`` is awaited when it returns an awaitable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: BaseException | None = None
    while loop.time() < deadline:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
        except Exception as exc:  # e.g. StoreUnavailable while a server comes back
            last = exc
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last error: {last!r})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class LoopbackServer:
    """The addresses of a server a test started on 127.0.0.1 (its subclasses set the ports)."""

    http_port: int
    grpc_port: int

    @property
    def http_url(self) -> str:
        """host:port, the form tritonclient.http wants."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


class Proc:
    """A child process whose output goes to a log file; stop() always reaps it."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = args
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd or REPO,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "process") -> None:
        def check() -> bool:
            # an exit ends the wait (wait_until treats a raising condition as "not yet")
            return not self.alive() or condition()

        try:
            wait_until(check, timeout_s, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- log ---\n{self.log()[-4000:]}") from None
        if not self.alive():
            raise RuntimeError(f"{what} exited with {self.popen.returncode}:\n{self.log()[-4000:]}")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (no graceful shutdown), then reap it."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the whole process group, then SIGKILL after timeout_s."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.popen.returncode


def inferplex_cmd(*args: str) -> list[str]:
    """The console script, run with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "controlplane.cli", *args]
