"""Draining an instance (the operator's drain, issue 13 on issue 12's planner): through real
``inferplex up`` with two real workers and unmodified tritonclient callers, a drained worker's
model moves to the other worker while traffic runs, no request fails, nothing new is loaded
there, and putting it back in service makes it eligible again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.integration.cp_harness import http_infer, running_up, steady_traffic
from tests.support.models import mlp_onnx, mlp_reference
from tests.support.procs import wait_until


def test_a_drained_worker_s_model_moves_off_under_traffic_and_nothing_new_lands_there(tmp_path: Path) -> None:
    env = {"INFERPLEX_PROFILE_ON_UPLOAD": "false"}
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=2, env=env) as cp:
        key = cp.create_tenant("acme")
        assert cp.upload(key, "mlp", mlp_onnx().data).status_code == 201
        cp.wait_model_status(key, "mlp", "ready")
        x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
        want = mlp_reference(x)
        np.testing.assert_allclose(http_infer(cp, key, "mlp", x), want, rtol=1e-4, atol=1e-5)
        (drained,) = cp.holders("acme__mlp")
        (other,) = [i["instance_id"] for i in cp.instances() if i["instance_id"] != drained]

        with steady_traffic(cp, key, "mlp", x, want, callers=2) as answered:
            wait_until(lambda: len(answered) >= 20, 30, "traffic before the drain")
            with cp.admin() as c:
                r = c.post(f"/admin/instances/{drained}/drain")
                assert r.status_code == 200, r.text
                assert r.json()["draining"] is True
            # moved: loaded on the other worker first, then gone from the drained one
            wait_until(lambda: cp.holders("acme__mlp") == [other], 60,
                       "the model to move off the drained worker")
            before = len(answered)
            wait_until(lambda: len(answered) >= before + 20, 30, "traffic after the move")
        failures = [a for a in answered if a != "ok"]
        assert not failures, f"{len(failures)} of {len(answered)} requests failed: {failures[:3]}"
        assert "is draining" in cp.proc.log()

        # the CLI shows it, the list too; a new model is placed on the other worker only
        cli = subprocess.run([sys.executable, "-m", "controlplane.cli", "instance", "list",
                              "--url", cp.url, "--key", cp.admin_key],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert f"{drained}\tdraining" in cli.stdout
        assert cp.upload(key, "mlp2", mlp_onnx().data).status_code == 201
        cp.wait_model_status(key, "mlp2", "ready")
        np.testing.assert_allclose(http_infer(cp, key, "mlp2", x), want, rtol=1e-4, atol=1e-5)
        assert cp.holders("acme__mlp2") == [other]

        with cp.admin() as c:
            r = c.post("/admin/instances/no-such-worker/drain")
            assert r.status_code == 404
            assert "GET /admin/instances lists them" in r.json()["error"]
            r = c.delete(f"/admin/instances/{drained}/drain")
            assert r.status_code == 200, r.text
            assert r.json()["draining"] is False
            assert not next(i for i in c.get("/admin/instances").json() if i["instance_id"] == drained)["draining"]
        # a tenant's key cannot drain
        with cp.client(key) as c:
            assert c.post(f"/admin/instances/{other}/drain").status_code == 403
