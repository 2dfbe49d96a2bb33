"""A worker killed mid-traffic (issue 12): its models are placed again on another worker and
the requests in flight there fail over to the new copy, through real ``inferplex up`` with two
real workers and unmodified tritonclient callers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from tests.integration.cp_harness import http_infer, running_up, steady_traffic
from tests.support.models import mlp_onnx, mlp_reference
from tests.support.procs import wait_until, worker_pid


def test_a_killed_worker_s_model_is_placed_again_and_its_requests_fail_over(tmp_path: Path) -> None:
    env = {"INFERPLEX_PROFILE_ON_UPLOAD": "false"}
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=2, env=env) as cp:
        key = cp.create_tenant("acme")
        assert cp.upload(key, "mlp", mlp_onnx().data).status_code == 201
        cp.wait_model_status(key, "mlp", "ready")
        x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
        want = mlp_reference(x)
        np.testing.assert_allclose(http_infer(cp, key, "mlp", x), want, rtol=1e-4, atol=1e-5)
        (victim,) = cp.holders("acme__mlp")

        with steady_traffic(cp, key, "mlp", x, want, callers=3) as answered:
            wait_until(lambda: len(answered) >= 20, 30, "traffic before the kill")
            pid = worker_pid(cp.proc.popen.pid, victim)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            before = len(answered)
            # served again from a copy on another worker (the killed one restarts empty)
            wait_until(lambda: any(h != victim for h in cp.holders("acme__mlp")), 30,
                       "the model to be placed on another worker")
            wait_until(lambda: len(answered) >= before + 30, 60, "traffic after the kill")
        failures = [a for a in answered if a != "ok"]
        assert not failures, f"{len(failures)} of {len(answered)} requests failed: {failures[:3]}"
        assert "failing its requests over" in cp.proc.log()
