"""``inferplex up`` keeps its workers running: one killed with SIGKILL mid-service is started
again under the same instance id on new ports, and the tenant's model is served again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.integration.cp_harness import ControlPlane, http_infer, running_up
from tests.support.models import mlp_onnx
from tests.support.procs import wait_until, worker_pid


@pytest.fixture
def up(tmp_path: Path):
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=1) as cp:
        yield cp


def _answers(cp: ControlPlane, key: str, x: np.ndarray, want: np.ndarray) -> bool:
    try:
        return bool(np.allclose(http_infer(cp, key, "mlp", x, timeout_s=10), want))
    except Exception:  # refused or failed while the worker is away: poll again
        return False


def test_a_killed_worker_is_started_again_and_serves(up: ControlPlane) -> None:
    cp = up
    key = cp.create_tenant("acme")
    assert cp.upload(key, "mlp", mlp_onnx().data).status_code == 201
    cp.wait_model_status(key, "mlp", "ready")
    x = np.ones((1, 64), np.float32)
    want = http_infer(cp, key, "mlp", x)
    before = {i["instance_id"]: i["http_url"] for i in cp.instances()}
    pid = worker_pid(cp.proc.popen.pid, "worker-0")
    assert pid is not None, "no worker child found"
    os.kill(pid, signal.SIGKILL)

    wait_until(lambda: (p := worker_pid(cp.proc.popen.pid, "worker-0")) is not None and p != pid,
               30, "worker-0 to be started again")
    wait_until(lambda: _answers(cp, key, x, want), 60, "the model to be served again", interval_s=0.2)
    after = {i["instance_id"]: i for i in cp.instances()}
    assert list(after) == ["worker-0"], "the same instance id, not a new one"
    assert after["worker-0"]["http_url"] != before["worker-0"], "new ports"
    assert after["worker-0"]["healthy"]
    assert "worker-0 exited with -9; starting it again" in cp.proc.log()
