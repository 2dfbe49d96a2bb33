"""Profiles through the product: ``inferplex up`` (real process, one worker), the real CLI
uploading and waiting for profiling, ``GET /v2/models/{m}/profile`` and live observations
fed from inferences sent with unmodified tritonclient."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.integration.cp_harness import ControlPlane, auth, running_up
from tests.support import models
from tests.support.procs import REPO, inferplex_cmd, wait_until

MAX_BATCH = 8  # what the control plane infers for an ONNX model with a dynamic batch dim


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("profiler_api")
    # default statistics poll interval: the worker reports compute times in-band
    with running_up(root / "data", root / "up.log", workers=1) as cp:
        yield cp


@pytest.fixture(scope="module")
def uploaded(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """acme uploads an MLP with the CLI, which waits for profiling; globex exists too."""
    keys = {"acme": cp.create_tenant("acme"), "globex": cp.create_tenant("globex")}
    model = tmp_path_factory.mktemp("files") / "mlp.onnx"
    model.write_bytes(models.mlp_onnx().data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPLEX_")}
    env.update(INFERPLEX_URL=cp.url, INFERPLEX_KEY=keys["acme"])
    # a generous SLO: the first inference below may wait for a cold load
    run = subprocess.run(inferplex_cmd("model", "upload", str(model), "--name", "mlp",
                                       "--slo-ms", str(models.TEST_SLO_MS)),
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return {"keys": keys, "cli": run}


def _profile(cp: ControlPlane, key: str, name: str = "mlp", **params: str) -> Any:
    with cp.client(key) as c:
        return c.get(f"/v2/models/{name}/profile", params=params)


def test_cli_upload_waits_for_profiling_and_prints_progress(uploaded: dict[str, Any]) -> None:
    run = uploaded["cli"]
    assert run.returncode == 0, run.stderr
    assert "uploaded mlp version 1 (onnxruntime_onnx, status profiling)" in run.stdout
    # the progress the server stored, as the profiler advanced
    assert "profiling" in run.stderr and "%" in run.stderr, run.stderr
    assert run.stdout.strip().endswith("mlp version 1 is ready"), run.stdout


def test_profile_covers_every_batch_size_up_to_max(cp: ControlPlane, uploaded: dict[str, Any]) -> None:
    r = _profile(cp, uploaded["keys"]["acme"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["timing"] == "compute"
    cpu = body["classes"]["cpu"]
    assert sorted(int(b) for b in cpu["exec"]) == [1, 2, 4, MAX_BATCH]
    for stats in cpu["exec"].values():
        assert 0 < stats["p50_s"] <= stats["p99_s"] < 1.0 and stats["n"] >= 20
    assert cpu["load_time_cold_s"]["n"] == 1 and cpu["load_time_warm_s"]["n"] == 1
    assert cpu["memory_bytes"] and cpu["memory_bytes"] > 0
    assert cpu["observations"] >= 2 + 4 * 20 and cpu["updated_at"] > 0


def test_profile_is_private_to_the_tenant_and_open_to_admins(cp: ControlPlane, uploaded: dict[str, Any]) -> None:
    keys = uploaded["keys"]
    other = _profile(cp, keys["globex"])
    unknown = _profile(cp, keys["globex"], name="nope")
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"] == "Request for unknown model: 'mlp' is not found"
    assert _profile(cp, keys["globex"], tenant="acme").status_code == 403
    assert _profile(cp, cp.admin_key, tenant="acme").json()["classes"]["cpu"]["exec"]
    r = _profile(cp, cp.admin_key)
    assert r.status_code == 400 and "?tenant=" in r.json()["error"]
    with cp.admin() as admin, cp.client(keys["acme"]) as tenant:
        assert tenant.get("/admin/predictions").status_code == 403
        assert admin.get("/admin/predictions").status_code == 200


def test_inferences_feed_observations_and_dispatch_time_predictions(
        cp: ControlPlane, uploaded: dict[str, Any]) -> None:
    key = uploaded["keys"]["acme"]
    before = _profile(cp, key).json()["classes"]["cpu"]["observations"]
    with cp.admin() as admin:
        assert admin.get("/admin/predictions").json()["exact"] == 0
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    n = 12
    with grpcclient.InferenceServerClient(cp.grpc_url) as g, httpclient.InferenceServerClient(cp.http_url) as h:
        for i in range(n):
            if i % 2:
                inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                g.infer("mlp", [inp], headers=auth(key))
            else:
                inp_h = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
                inp_h.set_data_from_numpy(x, binary_data=True)
                h.infer("mlp", [inp_h], headers=auth(key))

    def log() -> dict[str, Any]:
        with cp.admin() as admin:
            return admin.get("/admin/predictions").json()

    # in-band compute times (the worker's inferplex_compute_ns): every execution is
    # observed exactly and paired, with no statistics read in between
    wait_until(lambda: log()["exact"] >= n, 20, "executions to reach the predictor")
    assert log()["merged"] == 0
    after = _profile(cp, key).json()["classes"]["cpu"]
    # n executions, plus the load the first request may have caused
    assert before + n <= after["observations"] <= before + n + 1
    samples = [s for s in log()["samples"] if s["model"] == "acme__mlp"]
    assert len(samples) == n, "every execution is paired with its dispatch-time prediction"
    for s in samples:
        assert s["batch"] == 4 and s["basis"] == "compute"
        assert 0 < s["predicted_p50_s"] <= s["predicted_p99_s"] and s["observed_s"] > 0


def test_up_log_mentions_the_profile(cp: ControlPlane, uploaded: dict[str, Any]) -> None:
    assert "profiled acme__mlp" in cp.proc.log()
