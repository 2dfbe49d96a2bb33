"""A hostile tenant at the v2 gateway, against ``inferplex up`` as a real process: malformed
requests get a clear 4xx (never a 500), the gateway keeps serving, and nothing the tenant
sends or learns names another tenant's model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    # a negative dimension is refused by the decoder, a batch out of the model's range by its spec
    # (before the data, whose size then disagrees, is decoded)
    assert "INPUT0" in r.json()["error"] or "batch-size must be <= 8" in r.json()["error"], r.text
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


_INTERNAL = re.compile(r"__|127\.0\.0\.1|localhost|:\d{4,5}\b|\bworker-\d|\bw-\S*\d|/tmp/|/inferplex/")


def _tells_nothing(cp: ControlPlane, message: str, sent: str = "") -> None:
    """No instance-level name, instance id, address, port or server path in ``message``
    (``sent``, the name the tenant itself sent, may be shown back)."""
    leaks = [m.group() for m in _INTERNAL.finditer(message.replace(sent, "") if sent else message)]
    assert not leaks and str(cp.data_dir) not in message, (leaks, message)


def _http_error(cp: ControlPlane, r: httpx.Response, status: int, sent: str = "") -> str:
    assert r.status_code == status, r.text
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"]), r.headers
    message = r.json()["error"]
    _tells_nothing(cp, message, sent)
    return message


def _grpc_error(cp: ControlPlane, key: str, request: Any, code: grpc.StatusCode, sent: str = "") -> str:
    with grpc.insecure_channel(cp.grpc_url) as channel, pytest.raises(grpc.RpcError) as err:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=[("authorization", f"Bearer {key}")], timeout=30)
    assert err.value.code() == code, err.value.details()
    assert any(k == "x-request-id" and re.fullmatch(r"[0-9a-f]{16}", v)
               for k, v in err.value.trailing_metadata() or ()), err.value.trailing_metadata()
    _tells_nothing(cp, err.value.details(), sent)
    return err.value.details()


def test_no_error_a_tenant_can_provoke_names_anything_internal(cp: ControlPlane, keys: dict[str, str]) -> None:
    acme = keys["acme"]
    url = f"{cp.url}/v2/models"
    # unknown models, and another tenant's (answered alike), over HTTP and gRPC
    for name in ("nosuch", "secret-model", "globex__secret-model"):
        _http_error(cp, httpx.post(f"{url}/{name}/infer", json={"inputs": []}, headers=auth(acme)), 404, name)
        _http_error(cp, httpx.get(f"{url}/{name}", headers=auth(acme)), 404, name)
        _grpc_error(cp, acme, service_pb2.ModelInferRequest(model_name=name), grpc.StatusCode.NOT_FOUND, name)
    # wrong shapes and datatypes: the instance refuses them, in words about the tenant's model
    for inputs in ([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 63], "data": [0.0] * 63}],
                   [{"name": "INPUT0", "datatype": "INT64", "shape": [1, 64], "data": [0] * 64}],
                   [{"name": "NOPE", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]):
        message = _http_error(cp, httpx.post(f"{url}/mlp/infer", json={"inputs": inputs}, headers=auth(acme)),
                              400)
        assert "mlp" in message or "INPUT0" in message or "NOPE" in message, message
    wrong = service_pb2.ModelInferRequest(model_name="mlp", inputs=[
        service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32", shape=[1, 63])])
    wrong.raw_input_contents.append(np.zeros((1, 63), np.float32).tobytes())
    _grpc_error(cp, acme, wrong, grpc.StatusCode.INVALID_ARGUMENT)
    # upload refusals, including the probe's own failures (they name files it wrote)
    for data in (b"not a model", models.corrupt_onnx(), models.onnx_unknown_op()):
        r = cp.upload(acme, "bad", data)
        assert r.status_code == 400, r.text
        _http_error(cp, r, 400, "bad")
    # the tenant's own REST API and admin-only routes
    with cp.client(acme) as c:
        _http_error(cp, c.get("/v1/models/nosuch"), 404, "nosuch")
        _http_error(cp, c.get("/admin/instances"), 403)
        _http_error(cp, c.post("/v2/repository/models/mlp/load"), 403, "mlp")
    # the server keeps serving
    assert _binary_infer(cp, acme, [1, 64]).status_code == 200
