"""The control plane drives a real NVIDIA Triton (issue 10, 3 and 4).

One tritonserver (the nvidia-pytriton build: Python backend only) and one ``inferplex up``
with one embedded worker, shared by the module. The operator registers Triton with
``POST /admin/instances``; the driver probes its backends, so a tenant's ONNX model is served
there through inferplex's Python-backend adapter, and a TorchScript model, which this Triton
cannot run, goes to the worker. Tenants call through the gateway with unmodified tritonclient
(HTTP and gRPC). Triton is then restarted (it loses every model) and the control plane puts
the model back by itself; a restarted control plane finds it there from Triton's statistics,
since Triton's index does not list models loaded with ``file:`` overrides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from placement.profiling_site import estimate_model_bytes
from tests.integration.cp_harness import ControlPlane, auth, grpc_infer, http_infer, start_up
from tests.support import models
from tests.support.procs import wait_until
from tests.support.triton import TritonServer, run_triton
from tests.support.triton_fixtures import require_triton

# profiling is covered elsewhere; here it would only add a minute of Python-backend runs
ENV = {"INFERPLEX_PROFILE_ON_UPLOAD": "false"}
QUALIFIED = "acme__mlp"
TRITON_FLAGS = ("--strict-readiness=false",)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    require_triton()
    root = tmp_path_factory.mktemp("triton")
    # inferplex needs per-model readiness only: with the default, one failed load (a backend
    # probe's) would leave the whole server "not ready"
    with run_triton(root / "repo", root, *TRITON_FLAGS) as server:
        yield server


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory, triton: TritonServer) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("cp")
    plane = start_up(root / "data", root / "up.log", workers=1, worker_memory="256MiB", env=ENV)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def registered(cp: ControlPlane, triton: TritonServer) -> dict[str, Any]:
    with cp.admin() as c:
        r = c.post("/admin/instances", json={
            "http_url": triton.http_url, "grpc_url": triton.grpc_url, "memory_bytes": 1 << 30,
            "metrics_url": triton.metrics_url})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def tenant(cp: ControlPlane, registered: dict[str, Any]) -> str:
    key = cp.create_tenant("acme")
    assert cp.upload(key, "mlp", models.mlp_onnx().data).status_code == 201
    cp.wait_model_status(key, "mlp", "ready")
    return key


def _triton_ready(triton: TritonServer, name: str) -> bool:
    with httpclient.InferenceServerClient(triton.http_url) as c:
        return bool(c.is_model_ready(name))


def test_a_registered_triton_is_probed_for_its_backends(registered: dict[str, Any]) -> None:
    # the wheel's Triton has only the Python backend: ONNX through the adapter, no TorchScript
    assert registered["healthy"] and registered["platforms"] == ["onnxruntime_onnx"]
    # CPU-only: its metrics carry no GPU memory, and Triton has no report of its own
    assert registered["reported_used_bytes"] is None


def test_a_tenants_onnx_model_is_served_by_triton_over_http_and_grpc(
        cp: ControlPlane, triton: TritonServer, registered: dict[str, Any], tenant: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    want = models.mlp_reference(x)
    np.testing.assert_allclose(http_infer(cp, tenant, "mlp", x), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grpc_infer(cp, tenant, "mlp", x), want, rtol=1e-4, atol=1e-5)
    assert cp.holders(QUALIFIED) == [registered["instance_id"]]
    # Triton serves it, answers ready, and counts the executions, but its index omits it
    assert _triton_ready(triton, QUALIFIED)
    with httpclient.InferenceServerClient(triton.http_url) as c:
        assert QUALIFIED not in {m["name"] for m in c.get_model_repository_index()}
        stats = c.get_inference_statistics(QUALIFIED)["model_stats"][0]
    assert stats["inference_count"] >= 6 and stats["memory_usage"] == []
    # the Python backend reports no memory and nothing profiled it: the estimate is what counts
    view = next(i for i in cp.instances() if i["instance_id"] == registered["instance_id"])
    held = next(m for m in view["models"] if m["name"] == QUALIFIED)
    assert held["bytes"] == estimate_model_bytes(len(models.mlp_onnx().data))
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        assert c.is_model_ready("mlp", headers=auth(tenant))
        assert c.get_inference_statistics("mlp", headers=auth(tenant), as_json=True)["model_stats"]


def test_torchscript_is_refused_by_that_triton_and_placed_on_the_worker(
        cp: ControlPlane, registered: dict[str, Any], tenant: str) -> None:
    r = cp.upload(tenant, "mlp_pt", models.mlp_torchscript().data, max_batch_size=8,
                  inputs=[{"name": "INPUT__0", "datatype": "FP32", "dims": [64]}],
                  outputs=[{"name": "OUTPUT__0", "datatype": "FP32", "dims": [10]}])
    assert r.status_code == 201, r.text
    cp.wait_model_status(tenant, "mlp_pt", "ready")
    x = np.ones((2, 64), np.float32)
    with httpclient.InferenceServerClient(cp.http_url) as c:
        inp = httpclient.InferInput("INPUT__0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = c.infer("mlp_pt", [inp], headers=auth(tenant)).as_numpy("OUTPUT__0")
    np.testing.assert_allclose(out, models.mlp_reference(x), rtol=1e-4, atol=1e-5)
    holders = cp.holders("acme__mlp_pt")
    assert len(holders) == 1 and holders[0] != registered["instance_id"]


def test_a_triton_restart_loses_every_model_and_the_control_plane_places_it_again(
        cp: ControlPlane, triton: TritonServer, registered: dict[str, Any], tenant: str) -> None:
    x = np.ones((1, 64), np.float32)
    http_infer(cp, tenant, "mlp", x)  # placed there (the earlier tests may run alone)
    triton.restart()
    assert not _triton_ready(triton, QUALIFIED)
    # no tenant request: the leader sees Triton no longer serves it and places it again, back
    # on the restarted Triton (the reconcile pass) or, while Triton was down, on the worker (the
    # planner re-places a model with demand and no copy)
    def placed_again() -> bool:
        return _triton_ready(triton, QUALIFIED) or any(h != registered["instance_id"]
                                                        for h in cp.holders(QUALIFIED))

    wait_until(placed_again, 30, "the model placed again", interval_s=0.2)
    np.testing.assert_allclose(grpc_infer(cp, tenant, "mlp", x), models.mlp_reference(x),
                               rtol=1e-4, atol=1e-5)


def test_deleting_the_model_unloads_it_from_triton(cp: ControlPlane, triton: TritonServer,
                                                   registered: dict[str, Any]) -> None:
    key = cp.create_tenant("initech")
    assert cp.upload(key, "gone", models.mlp_onnx().data).status_code == 201
    cp.wait_model_status(key, "gone", "ready")
    http_infer(cp, key, "gone", np.ones((1, 64), np.float32))
    # the planner chose where (Triton, or the worker when Triton is busier): wherever it is, the
    # delete unloads it; on Triton, Triton itself no longer serves it
    (holder,) = cp.holders("initech__gone")
    on_triton = holder == registered["instance_id"]
    assert _triton_ready(triton, "initech__gone") == on_triton
    with cp.client(key) as c:
        assert c.delete("/v1/models/gone").status_code in (200, 204)
    wait_until(lambda: not cp.holders("initech__gone"), 10, "the model unloaded")
    wait_until(lambda: not _triton_ready(triton, "initech__gone"), 10, "the model unloaded from Triton")
    with httpx.Client() as c:
        names = {m["name"] for m in c.get(f"http://{triton.http_url}/v2/models/stats").json()["model_stats"]}
    assert "initech__gone" not in names
