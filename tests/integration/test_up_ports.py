"""``inferplex up`` owns its ports: one another process holds is refused at start, named,
before any worker starts; and a worker's ports never land on the control plane's."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from controlplane.up import free_ports, hold_port
from tests.support.procs import Proc, free_port, inferplex_cmd, wait_until


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port"])
def test_a_port_in_use_is_refused_by_name(tmp_path: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--http-port": free_port(), "--grpc-port": free_port()} | {flag: port}
        proc = Proc(inferplex_cmd("up", "--data-dir", str(tmp_path / "data"), "--workers", "1",
                                  *(f"{k}={v}" for k, v in ports.items())), tmp_path / "up.log")
        try:
            wait_until(lambda: proc.popen.poll() is not None, 60, "up to refuse the port")
        finally:
            proc.stop()
        log = (tmp_path / "up.log").read_text()
        assert proc.popen.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in log and f"pass another {flag}" in log, log
        assert not (tmp_path / "data" / "logs").exists(), "a worker started before the port was checked"


def test_free_ports_never_repeat_nor_take_a_held_port() -> None:
    held = hold_port("127.0.0.1", 0, "--http-port")
    try:
        ports = free_ports("127.0.0.1", 64)
        assert len(set(ports)) == 64
        assert held.getsockname()[1] not in ports
    finally:
        held.close()
