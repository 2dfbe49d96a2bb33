"""The worker's side of the sandbox: the zygote handle and ``ModelHost``, the runtime
the executor drives for a model version that lives in its own confined process.

Bounded execution: ``infer`` waits for the host's answer until the request's deadline
plus ``margin``; past it the host is killed (SIGKILL through its pidfd, which cannot
hit a recycled pid), the caller gets DeadlineExceeded, and the host is started again
from its files in the background, so the worker goes on serving everyone else at once.
A model whose executions are stopped ``quarantine_after`` times in a row is not started
again: it stays unavailable with that reason until it is loaded anew.

Loads run in the instance's spare CPU time: a host is loading (reading, verifying,
deserialising and warming up its model, hundreds of milliseconds of CPU for a large
TorchScript model) at the lowest priority (nice 19), and back at the worker's priority
once ready. On a CPU worker the loads and the executions share the same cores, and a
load at equal priority made every execution beside it take twice as long: the
scheduler's predictions missed and its margin grew until it refused most requests.
Only where the worker may raise a priority again (CAP_SYS_NICE, or an RLIMIT_NICE that
allows it): elsewhere hosts load at the worker's priority, as before.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from kserve.errors import DeadlineExceeded, InferplexError, Internal, InvalidArgument, Unavailable
from worker.runtimes.base import Runtime
from worker.sandbox import wire
from worker.sandbox.confine import SandboxUnavailable
from worker.sandbox.zygote import recv_with_fd, send_with_fd

log = logging.getLogger(__name__)

_ERRORS: dict[str, type[InferplexError]] = {"InvalidArgument": InvalidArgument, "Internal": Internal}
_ZYGOTE_START_S = 120.0
LOAD_NICE = 19  # a loading host's priority (the lowest)
_CAP_SYS_NICE = 23


def can_restore_priority() -> bool:
    """Whether this process may lower a nice value again (what un-deprioritising a host
    after its load needs): CAP_SYS_NICE, or an RLIMIT_NICE reaching its current nice."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
        if soft == resource.RLIM_INFINITY or 20 - soft <= os.getpriority(os.PRIO_PROCESS, 0):
            return True
        with open("/proc/self/status") as f:
            caps = next((line.split()[1] for line in f if line.startswith("CapEff:")), "0")
        return bool(int(caps, 16) >> _CAP_SYS_NICE & 1)
    except (OSError, ValueError, AttributeError):
        return False


def _set_nice(pid: int, nice: int) -> None:
    """Every thread of process ``pid`` (nice is per thread on Linux; a runtime's threads
    started while loading inherited the loading priority)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # a thread that ended, or a host already gone
            pass


class Zygote:
    """Starts ``python -m worker.sandbox.zygote`` on first use (and again if it died)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self.landlock_abi = 0
        # hosts load at LOAD_NICE and serve at this one, where the priority can come back
        self.serve_nice = os.getpriority(os.PRIO_PROCESS, 0)
        self.load_nice = LOAD_NICE if can_restore_priority() and self.serve_nice < LOAD_NICE else None

    def _ensure(self) -> socket.socket:
        if self._proc is not None and self._proc.poll() is None and self._ctl is not None:
            return self._ctl
        self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(self.threads)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "worker.sandbox.zygote", str(theirs.fileno()), str(self.threads)],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        ours.settimeout(_ZYGOTE_START_S)
        try:
            # once the runtimes are imported and a throwaway child could confine itself
            hello = json.loads(ours.recv(4096) or b"{}")
        except (TimeoutError, OSError, ValueError) as exc:
            hello = {"error": f"{exc.__class__.__name__}: {exc}"}
        if not hello.get("ready"):
            ours.close()
            self._stop()
            raise SandboxUnavailable(f"the worker's model sandbox did not start: {hello.get('error')}")
        ours.settimeout(30.0)
        self._ctl = ours
        self.landlock_abi = int(hello.get("landlock_abi", 0))
        log.info("model sandbox started (zygote pid %d): seccomp filter, Landlock ABI %s",
                 self._proc.pid, self.landlock_abi or "unavailable (seccomp only)")
        return ours

    def start(self) -> None:
        """Start the zygote now (the worker does at start-up, so the first load is fast);
        raises SandboxUnavailable where model hosts cannot be confined."""
        with self._lock:
            self._ensure()

    def spawn(self, request: dict[str, Any]) -> tuple[socket.socket, int, int]:
        """A new host for ``request``: (its socket, its pidfd, its pid)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            try:
                ctl = self._ensure()
                send_with_fd(ctl, request, theirs.fileno())
                reply, pidfd = recv_with_fd(ctl)
            except (OSError, ValueError) as exc:
                ours.close()
                self._stop()
                raise Unavailable(f"the worker's model sandbox failed: {exc}") from None
            finally:
                theirs.close()
        if reply is None or pidfd is None:
            ours.close()
            raise Unavailable("the worker's model sandbox failed to start a model host")
        pid = int(reply["pid"])
        if self.load_nice is not None:
            _set_nice(pid, self.load_nice)  # just forked: its pid is still its own
        return ours, pidfd, pid

    def loaded(self, pid: int) -> None:
        """A host spawned by ``spawn`` is ready: back to the worker's priority."""
        if self.load_nice is not None:
            _set_nice(pid, self.serve_nice)

    def _stop(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop()


@dataclass(frozen=True, slots=True)
class HostLimits:
    """What bounds a model host (the worker's flags)."""

    load_timeout_s: float = 120.0
    margin_s: float = 0.010  # an execution may run this long past its deadline
    quarantine_after: int = 3
    max_model_bytes: int = 1 << 30
    max_input_bytes: int = 64 << 20
    max_output_bytes: int = 1 << 30


class ModelHost(Runtime):
    """One model version in a confined process; a Runtime whose ``infer`` is bounded."""

    def __init__(self, zygote: Zygote, request: dict[str, Any], *, limits: HostLimits) -> None:
        self.zygote = zygote
        self.request = request
        self.name = request["name"]
        self.load_timeout_s = limits.load_timeout_s
        self.margin_s = limits.margin_s
        self.quarantine_after = limits.quarantine_after
        self.max_output_bytes = limits.max_output_bytes
        self.stops_in_a_row = 0
        self.unavailable_reason = ""  # set while restarting, or for good once quarantined
        self.quarantined = False
        self.ready: dict[str, Any] = {}
        self.pid = 0
        self._sock: socket.socket | None = None
        self._pidfd = -1
        self._lock = threading.Lock()
        self._closed = False
        self.in_types: dict[str, str] = {}
        self.out_types: dict[str, str] = {}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> dict[str, Any]:
        """Start the host and wait for it to load; returns its ready message."""
        sock, pidfd, pid, header = self._spawn_ready()
        with self._lock:
            if self._closed:
                _release(sock, pidfd)
                raise Unavailable(f"model '{self.name}' was unloaded")
            self._sock, self._pidfd, self.pid, self.ready = sock, pidfd, pid, header
            self.unavailable_reason = ""
        return header

    def _spawn_ready(self) -> tuple[socket.socket, int, int, dict[str, Any]]:
        sock, pidfd, pid = self.zygote.spawn(self.request)
        try:
            if not _readable(sock, self.load_timeout_s):
                raise InvalidArgument(
                    f"failed to load '{self.name}': loading took over {self.load_timeout_s:.0f} s")
            header, _ = wire.recv(sock, 0)
            if not header.get("ok"):
                raise _ERRORS.get(str(header.get("status")), InvalidArgument)(str(header.get("error", "")))
            self.zygote.loaded(pid)
        except wire.WireError as exc:
            _release(sock, pidfd)
            raise InvalidArgument(f"failed to load '{self.name}': the model host died while "
                                  f"loading it ({exc})") from None
        except BaseException:
            _release(sock, pidfd)
            raise
        return sock, pidfd, pid, header

    def set_types(self, inputs: dict[str, str], outputs: dict[str, str]) -> None:
        self.in_types, self.out_types = inputs, outputs

    def private_bytes(self) -> int:
        """The host's private memory, read from /proc where this process may (as root),
        else as the host reported it after its warm-up."""
        try:
            with open(f"/proc/{self.pid}/smaps_rollup") as f:
                return sum(int(line.split()[1]) * 1024 for line in f
                           if line.startswith(("Private_Clean:", "Private_Dirty:")))
        except OSError:
            return int(self.ready.get("private_bytes", 0))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            _release(self._sock, self._pidfd)
            self._sock, self._pidfd = None, -1

    # ---------------------------------------------------------------- Runtime

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        return wire.encode_tensors(inputs, self.in_types)

    def infer(self, prepared: Any, output_names: list[str], deadline_ns: int | None = None) -> Any:
        descs, buffers = prepared
        with self._lock:
            sock = self._sock
            if sock is None:
                raise Unavailable(self.unavailable_reason or f"model '{self.name}' is not loaded")
            try:
                wire.send(sock, {"op": "run", "inputs": descs, "outputs": output_names,
                                 "deadline_ns": deadline_ns}, buffers)
                wait_s = None if deadline_ns is None else (deadline_ns - time.monotonic_ns()) / 1e9 + self.margin_s
                if not _readable(sock, wait_s):
                    self._stop_runaway(wait_s or 0.0)
                header, payload = wire.recv(sock, self.max_output_bytes)
            except wire.WireError as exc:
                self._drop()
                self._restart_later(f"model '{self.name}' is restarting: its host failed ({exc})")
                raise Internal(f"inference failed for model '{self.name}': its runtime process "
                               "ended unexpectedly; it is being restarted") from None
            if header.get("status") == "DeadlineExceeded":  # the runtime stopped itself in time
                self._count_stop()
                raise DeadlineExceeded(str(header.get("error", "")))
        if not header.get("ok"):
            raise _ERRORS.get(str(header.get("status")), Internal)(str(header.get("error", "")))
        self.stops_in_a_row = 0
        return header, payload

    def _count_stop(self) -> bool:
        """One more execution stopped at its deadline (holding the lock); True once that
        quarantines the model."""
        self.stops_in_a_row += 1
        if self.stops_in_a_row < self.quarantine_after:
            return False
        self.quarantined = True
        self.unavailable_reason = (
            f"model '{self.name}' is quarantined: {self.stops_in_a_row} executions in a row were "
            "stopped at their deadline; make it finish within its latency target and load it again")
        log.warning("%s", self.unavailable_reason)
        self._drop()
        return True

    def _stop_runaway(self, waited_s: float) -> None:
        """Kill the host of an execution past its deadline and margin, one its runtime
        could not stop itself (holding the lock)."""
        self._drop()
        limit_ms = max(waited_s, 0.0) * 1000
        if not self._count_stop():
            self._restart_later(f"model '{self.name}' is restarting: its last execution was stopped "
                                "at its deadline; retry shortly")
        raise DeadlineExceeded(
            f"execution of model '{self.name}' was stopped at its deadline ({limit_ms:.0f} ms, "
            "margin included); the model must finish within its latency target")

    def _restart_later(self, reason: str) -> None:
        self.unavailable_reason = reason
        threading.Thread(target=self._restart, name=f"restart-{self.name}", daemon=True).start()

    def _restart(self) -> None:
        try:
            self.start()
            log.info("model host of '%s' restarted (pid %d)", self.name, self.pid)
        except Exception as exc:  # stays unavailable with the reason
            if not self._closed:
                self.unavailable_reason = f"model '{self.name}' could not be restarted: {exc}"
                log.warning("%s", self.unavailable_reason)

    def collect(self, raw: Any, output_names: list[str]) -> dict[str, np.ndarray]:
        header, payload = raw
        try:
            outputs = wire.decode_tensors(header.get("outputs"), payload,
                                          {n: self.out_types[n] for n in output_names if n in self.out_types})
        except wire.WireError as exc:
            raise Internal(f"inference failed for model '{self.name}': its runtime answered "
                           f"a malformed result ({exc})") from None
        missing = [n for n in output_names if n not in outputs]
        if missing:
            raise Internal(f"inference failed for model '{self.name}': no outputs {missing}")
        return outputs


def _readable(sock: socket.socket, timeout_s: float | None) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLHUP)
    timeout_ms = None if timeout_s is None else max(int(timeout_s * 1000), 0)
    return bool(poller.poll(timeout_ms))


def _kill(pidfd: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _release(sock: socket.socket, pidfd: int) -> None:
    _kill(pidfd)
    sock.close()
    os.close(pidfd)
