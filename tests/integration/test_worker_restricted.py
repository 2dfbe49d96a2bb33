"""A real worker restricted as Triton restricts itself: without the control plane's
credential (or with a wrong value), every API group but health is refused with
Triton's own status and words, over HTTP and gRPC, and nothing changes on the worker;
with it, the same calls work. Health stays open for probes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kserve.errors import Unavailable
from kserve.restricted import InstanceCredential
from placement.driver import InstanceInfo
from placement.triton_driver import TritonDriver
from tests.support.cp_app import running_app, settings_for
from tests.support.models import model_files, simple_inputs
from tests.support.procs import free_port
from tests.support.worker import TEST_CREDENTIAL, WorkerProcess, run_worker

KEY = TEST_CREDENTIAL.key
A = np.arange(16, dtype=np.int32).reshape(1, 16)
HTTP_REFUSAL = {"error": f"This API is restricted, expecting header '{KEY}'"}
GRPC_REFUSAL = f"This protocol is restricted, expecting header 'triton-grpc-protocol-{KEY}'"
WRONG_HTTP = {KEY: TEST_CREDENTIAL.value + "x"}
WRONG_GRPC = {f"triton-grpc-protocol-{KEY}": TEST_CREDENTIAL.value[:-1]}

# (method, path, JSON body) of every restricted HTTP API the worker serves, by Triton group
HTTP_RESTRICTED = [
    ("POST", "/v2/models/simple/infer", {"inputs": []}),  # inference
    ("GET", "/v2", None),  # metadata
    ("GET", "/v2/models/simple", None),
    ("GET", "/v2/models/simple/versions/1", None),
    ("GET", "/v2/models/simple/config", None),  # model-config
    ("POST", "/v2/repository/index", {}),  # model-repository
    ("POST", "/v2/repository/models/simple/unload", {}),
    ("POST", "/v2/repository/models/other/load", {}),
    ("GET", "/v2/models/simple/stats", None),  # statistics
    ("GET", "/v2/models/stats", None),
    ("GET", "/v2/inferplex/memory", None),
]
HEALTH = ["/v2/health/live", "/v2/health/ready", "/v2/models/simple/ready"]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with run_worker(tmp_path_factory.mktemp("restricted"), "--demo", credential=TEST_CREDENTIAL) as w:
        yield w


def _http(worker: WorkerProcess, method: str, path: str, body: Any,
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, f"http://{worker.http_url}{path}", headers=headers,
                         content=None if body is None else json.dumps(body), timeout=10)


def _grpc_calls(client: grpcclient.InferenceServerClient) -> dict[str, Callable[..., Any]]:
    """One unmodified-tritonclient call per restricted gRPC group; each takes headers=."""
    load = model_files("mlp")
    inputs = simple_inputs(grpcclient, A)
    return {
        "infer": lambda **h: client.infer("simple", inputs, **h),
        "server metadata": lambda **h: client.get_server_metadata(**h),
        "model metadata": lambda **h: client.get_model_metadata("simple", **h),
        "model config": lambda **h: client.get_model_config("simple", **h),
        "index": lambda **h: client.get_model_repository_index(**h),
        "load": lambda **h: client.load_model("mlp", config=json.dumps(load[0]), files=load[1], **h),
        "unload": lambda **h: client.unload_model("mlp", **h),
        "statistics": lambda **h: client.get_inference_statistics("simple", **h),
    }


@pytest.mark.parametrize(("method", "path", "body"), HTTP_RESTRICTED)
def test_http_refuses_every_restricted_api_without_the_credential_or_with_a_wrong_one(
        worker: WorkerProcess, method: str, path: str, body: Any) -> None:
    for headers in (None, WRONG_HTTP, {KEY.upper(): ""}):
        r = _http(worker, method, path, body, headers)
        assert (r.status_code, r.json()) == (403, HTTP_REFUSAL), (path, headers)
    # the refused unload changed nothing
    assert _http(worker, "GET", "/v2/models/simple/ready", None).status_code == 200


def test_http_accepts_the_credential_and_health_needs_none(worker: WorkerProcess) -> None:
    for path in HEALTH:
        assert _http(worker, "GET", path, None).status_code == 200, path
    ok = worker.http_headers()
    index = _http(worker, "POST", "/v2/repository/index", {}, ok)
    assert index.status_code == 200 and {m["name"] for m in index.json()} >= {"simple"}
    # header names are case-insensitive on HTTP, as in Triton (libevhtp)
    assert _http(worker, "GET", "/v2/models/simple/config", None, {KEY.upper(): TEST_CREDENTIAL.value}).status_code == 200
    assert _http(worker, "GET", "/v2/inferplex/memory", None, ok).json()["models"].keys() >= {"simple"}
    with httpclient.InferenceServerClient(worker.http_url) as client:
        inputs = simple_inputs(httpclient, A)
        out = client.infer("simple", inputs, headers=ok).as_numpy("OUTPUT0")
        assert np.array_equal(out, A + A)
        stats = client.get_inference_statistics("simple", headers=ok)
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 1


def test_grpc_refuses_every_restricted_protocol_as_triton_does(worker: WorkerProcess) -> None:
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        for what, call in _grpc_calls(client).items():
            for headers in ({}, {"headers": WRONG_GRPC}):
                with pytest.raises(InferenceServerException) as info:
                    call(**headers)
                assert (info.value.status(), info.value.message()) == \
                    ("StatusCode.UNAVAILABLE", GRPC_REFUSAL), (what, headers)
        # health stays open; the refused load and unload changed nothing
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("simple") and not client.is_model_ready("mlp")


def test_grpc_accepts_the_credential_on_every_protocol(worker: WorkerProcess) -> None:
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        calls = _grpc_calls(client)
        for what in ("infer", "server metadata", "model metadata", "model config", "statistics", "load"):
            calls[what](headers=worker.grpc_headers())
        assert "mlp" in {m.name for m in calls["index"](headers=worker.grpc_headers()).models}
        calls["unload"](headers=worker.grpc_headers())
        assert not client.is_model_ready("mlp")


def test_grpc_refuses_a_restricted_stream_before_the_handler(worker: WorkerProcess) -> None:
    with grpc.insecure_channel(worker.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="simple")]), timeout=10))
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAVAILABLE, GRPC_REFUSAL)


def test_the_aio_grpc_server_is_restricted_the_same_way(tmp_path: Path) -> None:
    with run_worker(tmp_path, "--demo", "--grpc-server", "aio", credential=TEST_CREDENTIAL) as w, \
            grpcclient.InferenceServerClient(w.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            client.infer("simple", simple_inputs(grpcclient, A))
        assert client.is_server_ready()
        assert client.infer("simple", simple_inputs(grpcclient, A), headers=w.grpc_headers()).as_numpy("OUTPUT1") \
            is not None


def test_a_registering_worker_is_locked_and_not_ready_until_the_control_plane_answers(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # no control plane: the credential never arrives
    with run_worker(tmp_path, "--demo", "--register", nobody, env={"INFERPLEX_KEY": "k"}, probe="live") as w:
        r = _http(w, "GET", "/v2/health/ready", None)
        assert r.status_code == 400  # a probe sees it is not ready for the control plane yet
        assert _http(w, "GET", "/v2/health/live", None).status_code == 200
        for headers in (None, {KEY: "anything"}):
            r = _http(w, "POST", "/v2/models/simple/infer", {"inputs": []}, headers)
            assert (r.status_code, r.json()) == (403, HTTP_REFUSAL)
        with grpcclient.InferenceServerClient(w.grpc_url) as client:
            with pytest.raises(InferenceServerException, match="This protocol is restricted"):
                client.get_model_repository_index()


async def test_registration_hands_over_the_credential_and_is_refused_without_one(tmp_path: Path) -> None:
    body = {"instance_id": "w1", "http_url": "127.0.0.1:1", "grpc_url": "127.0.0.1:2", "memory_bytes": 1 << 20}
    async with running_app(settings_for(tmp_path / "open")) as cp:
        r = await cp.admin("POST", "/admin/instances/register", json=body)
        assert r.status_code == 403 and "INFERPLEX_INSTANCE_RESTRICTED_VALUE" in r.json()["error"]
        assert (await cp.admin("GET", "/admin/instances")).json() == []  # nothing half-done
    async with running_app(settings_for(tmp_path / "restricted", instance_restricted_key=KEY,
                                        instance_restricted_value=TEST_CREDENTIAL.value)) as cp:
        r = await cp.admin("POST", "/admin/instances/register", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["credential"] == {"key": KEY, "value": TEST_CREDENTIAL.value}


async def test_a_driver_with_the_wrong_credential_gets_an_error_that_names_no_header(
        worker: WorkerProcess) -> None:
    info = InstanceInfo("w1", worker.http_url, worker.grpc_url, 1 << 30)
    wrong = TritonDriver(info, credential=InstanceCredential(KEY, "not-the-secret"))
    right = TritonDriver(info, credential=TEST_CREDENTIAL)
    try:
        assert await wrong.is_ready()  # health is open
        body = json.dumps({"inputs": [{"name": n, "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}
                                      for n in ("INPUT0", "INPUT1")]}).encode()
        for call in (wrong.index(), wrong.statistics("simple"),
                     wrong.infer_raw_http("simple", "", body, {"content-type": "application/json"})):
            with pytest.raises(Unavailable) as info_:
                await call
            assert "refused the control plane's credential" in info_.value.message
            assert KEY not in info_.value.message
        assert {m.name for m in await right.index()} >= {"simple"}
        status, _, _ = await right.infer_raw_http("simple", "", body, {"content-type": "application/json"})
        assert status == 200
    finally:
        await wrong.close()
        await right.close()
