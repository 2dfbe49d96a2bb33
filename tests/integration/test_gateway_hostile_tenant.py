"""A hostile tenant at the v2 gateway, against ``inferplex up`` as a real process: malformed
requests get a clear 4xx (never a 500), the gateway keeps serving, and nothing the tenant
sends or learns names another tenant's model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.integration.cp_harness import ControlPlane, auth, metric_value, running_up
from tests.support import models


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("hostile")
    with running_up(root / "data", root / "up.log", workers=1,
                    env={"INFERPLEX_PROFILE_ON_UPLOAD": "false"}) as cp:
        yield cp


@pytest.fixture(scope="module")
def keys(cp: ControlPlane) -> dict[str, str]:
    keys = {"acme": cp.create_tenant("acme"), "globex": cp.create_tenant("globex")}
    assert cp.upload(keys["acme"], "mlp", models.mlp_onnx().data).status_code == 201
    assert cp.upload(keys["globex"], "secret-model", models.mlp_onnx().data).status_code == 201
    cp.wait_model_status(keys["acme"], "mlp", "ready")
    return keys


def _binary_infer(cp: ControlPlane, key: str, shape: list[int]) -> httpx.Response:
    data = np.zeros((1, 64), np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return httpx.post(f"{cp.url}/v2/models/mlp/infer", content=header + data, timeout=30,
                      headers={**auth(key), "Inference-Header-Content-Length": str(len(header))})


def _grpc_infer(cp: ControlPlane, key: str, shape: list[int]) -> service_pb2.ModelInferResponse:
    request = service_pb2.ModelInferRequest(model_name="mlp", inputs=[
        service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32", shape=shape)])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    with grpc.insecure_channel(cp.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(request, metadata=[("authorization", f"Bearer {key}")], timeout=30)


@pytest.mark.parametrize("batch", [-1, 0, 9])
def test_batch_dimension_out_of_range_is_a_400_not_a_crash(cp: ControlPlane, keys: dict[str, str],
                                                          batch: int) -> None:
    # the gateway fed the declared batch to the predictor, which raised: HTTP 500 / gRPC UNKNOWN
    r = _binary_infer(cp, keys["acme"], [batch, 64])
    assert r.status_code == 400, r.text
    assert "INPUT0" in r.json()["error"]
    with pytest.raises(grpc.RpcError) as err:
        _grpc_infer(cp, keys["acme"], [batch, 64])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert _binary_infer(cp, keys["acme"], [1, 64]).status_code == 200
    assert _grpc_infer(cp, keys["acme"], [1, 64]).model_name == "mlp"


def test_guessed_model_names_neither_grow_metrics_nor_show_up_in_them(cp: ControlPlane,
                                                                     keys: dict[str, str]) -> None:
    guesses = [f"guess-{i}" for i in range(10)] + ["globex__secret-model", "_profile__globex__secret-model"]
    for name in guesses:
        r = httpx.post(f"{cp.url}/v2/models/{name}/infer", json={"inputs": []}, headers=auth(keys["acme"]))
        assert r.status_code == 404
        request = service_pb2.ModelInferRequest(model_name=name)
        with grpc.insecure_channel(cp.grpc_url) as channel, pytest.raises(grpc.RpcError) as err:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, metadata=[("authorization", f"Bearer {keys['acme']}")], timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    text = cp.metrics()
    for name in guesses:
        assert f'model="{name}"' not in text
    assert metric_value(text, 'inferplex_errors_total{tenant="acme",model="<unknown>",kind="NotFound"}') \
        >= 2 * len(guesses)


def test_metrics_need_an_admin_key_because_they_name_every_tenants_models(cp: ControlPlane,
                                                                         keys: dict[str, str]) -> None:
    r = httpx.post(f"{cp.url}/v2/models/secret-model/infer", headers=auth(keys["globex"]), json={
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]})
    assert r.status_code == 200, r.text
    assert 'tenant="globex",model="secret-model"' in cp.metrics()
    as_tenant = httpx.get(f"{cp.url}/metrics", headers=auth(keys["acme"]))
    assert as_tenant.status_code == 403 and "secret-model" not in as_tenant.text
    assert as_tenant.json()["error"] == "this operation needs an admin key"
    assert httpx.get(f"{cp.url}/metrics").status_code == 401


def test_requests_carrying_a_priority_are_served_with_the_priority_dropped(
        cp: ControlPlane, keys: dict[str, str]) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = np.ones((2, 64), np.float32)
    h = httpclient.InferenceServerClient(cp.http_url)
    hi = httpclient.InferInput("INPUT0", [2, 64], "FP32")
    hi.set_data_from_numpy(x, binary_data=True)
    res = h.infer("mlp", [hi], priority=1, request_id="p1", headers=auth(keys["acme"]))
    assert res.as_numpy("OUTPUT0").shape == (2, 10) and res.get_response()["id"] == "p1"
    g = grpcclient.InferenceServerClient(cp.grpc_url)
    gi = grpcclient.InferInput("INPUT0", [2, 64], "FP32")
    gi.set_data_from_numpy(x)
    gres = g.infer("mlp", [gi], priority=1, headers={"authorization": f"Bearer {keys['acme']}"})
    np.testing.assert_allclose(gres.as_numpy("OUTPUT0"), res.as_numpy("OUTPUT0"), rtol=1e-6)
