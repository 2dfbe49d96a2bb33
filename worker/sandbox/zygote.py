"""The zygote: a clean process with the runtimes imported, that forks one model host
per model version the worker loads.

The worker cannot fork itself (its gRPC and HTTP servers run threads), and a fresh
interpreter per load would pay torch's import (about a second) on every cold load.
The zygote imports and initialises everything once, keeps no threads of its own
running, and forks on request; each child confines itself before it reads a model
(``worker.sandbox.host``).

Protocol on the control socket (``python -m worker.sandbox.zygote <fd> <threads>``):
the worker sends a JSON request with the host's socket attached (SCM_RIGHTS); the
zygote answers ``{"pid": n}`` with a pidfd of the child attached, so the worker can
stop exactly that process. EOF on the control socket (the worker went away) ends
the zygote; its hosts die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import sys

MAX_MESSAGE = 1 << 20


def send_with_fd(sock: socket.socket, message: dict, fd: int) -> None:
    data = json.dumps(message).encode()
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def recv_with_fd(sock: socket.socket) -> tuple[dict | None, int | None]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_LEN(fds.itemsize))
    received = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            received = fds[0] if fds else None
    if not data:
        return None, received
    return json.loads(data), received


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _try_confinement() -> dict:
    """Confine a throwaway child: the worker refuses to start where a host could not be
    confined (no seccomp), rather than run tenants' models unconfined."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            from worker.sandbox.confine import confine

            done = confine(None)
            message = {"ready": True, "landlock_abi": done.landlock_abi}
        except BaseException as exc:
            message = {"ready": False, "error": f"{exc.__class__.__name__}: {exc}"}
        os.write(write_end, json.dumps(message).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"ready": False, "error": "the confinement check died"}


def main(argv: list[str]) -> int:
    ctl = socket.socket(fileno=int(argv[0]))
    threads = int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    from worker.sandbox import host

    host.preload(threads)
    ctl.sendall(json.dumps(_try_confinement()).encode())
    while True:
        _reap()
        readable, _, _ = select.select([ctl], [], [], 1.0)
        if not readable:
            continue
        try:
            request, fd = recv_with_fd(ctl)
        except (OSError, ValueError):
            return 1
        if request is None:
            return 0  # the worker closed the control socket
        if fd is None:
            continue
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ctl.close()
                host.run_host(fd, request, zygote_pid)
                code = 0
            finally:
                os._exit(code)
        os.close(fd)
        pidfd = os.pidfd_open(pid)
        try:
            send_with_fd(ctl, {"pid": pid}, pidfd)
        finally:
            os.close(pidfd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
