"""The scheduler through ``inferplex up`` with unmodified tritonclient: concurrent requests
are merged into batches on the instance (its batch statistics show executions of more than
one row) and every caller gets exactly what it would have got alone, over HTTP JSON and
binary and gRPC, BYTES included; a request that cannot meet its deadline is refused at once
with the predicted breakdown, and a client's tighter `timeout` is honoured."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import ControlPlane, auth, running_up
from tests.support import hostile_models, models
from tests.support.procs import wait_until

CALLERS = 24


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("sched")
    with running_up(root / "data", root / "up.log", workers=1) as cp:
        yield cp


@pytest.fixture(scope="module")
def key(cp: ControlPlane) -> str:
    key = cp.create_tenant("acme")
    assert cp.upload(key, "mlp", models.mlp_onnx().data, slo_ms=2000).status_code == 201
    bytes_model = models.identity("BYTES")("ids")
    assert cp.upload(key, "ids", bytes_model.data, slo_ms=2000).status_code == 201
    assert cp.upload(key, "tight", models.mlp_onnx().data, slo_ms=0.001).status_code == 201
    for name in ("mlp", "ids", "tight"):
        cp.wait_model_status(key, name, "ready", timeout_s=120)
    return key


def _rows(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((1 + i % 3, 64)).astype(np.float32)


async def _http_call(cp: ControlPlane, key: str, i: int) -> tuple[int, np.ndarray]:
    x = _rows(i)
    async with httpaio.InferenceServerClient(cp.http_url) as client:
        inp = httpaio.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=i % 2 == 0)  # half JSON, half binary
        out = httpaio.InferRequestedOutput("OUTPUT0", binary_data=i % 4 < 2)
        result = await client.infer("mlp", [inp], outputs=[out], request_id=f"r{i}", headers=auth(key))
        assert result.get_response()["id"] == f"r{i}"
        return i, result.as_numpy("OUTPUT0")


async def _grpc_call(cp: ControlPlane, key: str, i: int) -> tuple[int, np.ndarray]:
    x = _rows(i)
    async with grpcaio.InferenceServerClient(cp.grpc_url) as client:
        inp = grpcaio.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = await client.infer("mlp", [inp], request_id=f"g{i}", headers=auth(key))
        assert result.get_response().id == f"g{i}"
        return i, result.as_numpy("OUTPUT0")


def _batched_executions(cp: ControlPlane, key: str, name: str) -> dict[int, int]:
    with cp.client(key) as c:
        stats = c.get(f"/v2/models/{name}/stats").json()["model_stats"]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for s in stats for b in s.get("batch_stats", [])}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_concurrent_callers_are_batched_and_each_gets_its_own_answer(
        cp: ControlPlane, key: str, transport: str) -> None:
    call = _http_call if transport == "http" else _grpc_call
    before = _batched_executions(cp, key, "mlp")

    async def burst() -> list[tuple[int, np.ndarray]]:
        return await asyncio.gather(*(call(cp, key, i) for i in range(CALLERS)))

    for i, out in asyncio.run(burst()):
        np.testing.assert_allclose(out, models.mlp_reference(_rows(i)), rtol=1e-4, atol=1e-5)
    after = _batched_executions(cp, key, "mlp")
    callers_rows = sum(1 + i % 3 for i in range(CALLERS))
    new = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    assert sum(b * n for b, n in new.items()) == callers_rows  # every row ran exactly once
    # merged: fewer executions than callers, some of more rows than any one caller sent
    assert sum(new.values()) < CALLERS and any(b > 3 and n > 0 for b, n in new.items()), new


def test_bytes_callers_are_batched_with_their_own_strings(cp: ControlPlane, key: str) -> None:
    async def one(i: int) -> tuple[int, np.ndarray]:
        data = np.array([[f"caller-{i}-{j}".encode() * (1 + j) for j in range(3)]], dtype=np.object_)
        async with httpaio.InferenceServerClient(cp.http_url) as client:
            inp = httpaio.InferInput("INPUT0", [1, 3], "BYTES")
            inp.set_data_from_numpy(data, binary_data=i % 2 == 0)
            result = await client.infer("ids", [inp], headers=auth(key))
            return i, result.as_numpy("OUTPUT0")

    async def burst() -> list[tuple[int, np.ndarray]]:
        return await asyncio.gather(*(one(i) for i in range(16)))

    for i, out in asyncio.run(burst()):
        assert out.tolist() == [[f"caller-{i}-{j}".encode() * (1 + j) for j in range(3)]]


def test_a_request_that_cannot_meet_its_slo_is_refused_with_the_prediction(cp: ControlPlane, key: str) -> None:
    async def one() -> None:
        async with httpaio.InferenceServerClient(cp.http_url) as client:
            inp = httpaio.InferInput("INPUT0", [1, 64], "FP32")
            inp.set_data_from_numpy(np.ones((1, 64), np.float32))
            await client.infer("tight", [inp], headers=auth(key))

    with pytest.raises(InferenceServerException) as caught:
        asyncio.run(one())
    assert caught.value.status() == "503"
    message = caught.value.message()
    assert "cannot meet the 0.001 ms SLO of model 'tight'" in message or "cannot meet" in message, message
    assert "predicted" in message and "acme__" not in message


def test_a_client_timeout_tightens_the_deadline(cp: ControlPlane, key: str) -> None:
    async def one() -> None:
        async with grpcaio.InferenceServerClient(cp.grpc_url) as client:
            inp = grpcaio.InferInput("INPUT0", [1, 64], "FP32")
            inp.set_data_from_numpy(np.ones((1, 64), np.float32))
            await client.infer("mlp", [inp], timeout=1, headers=auth(key))  # 1 us: Triton's parameter

    with pytest.raises(InferenceServerException) as caught:
        asyncio.run(one())
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "deadline the client set" in caught.value.message(), caught.value.message()


def _raw_infer(cp: ControlPlane, key: str, model: str) -> httpx.Response:
    x = np.ones((1, 64), np.float32)
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64],
                                   "data": x.reshape(-1).tolist()}]})
    with cp.client(key) as c:
        return c.post(f"/v2/models/{model}/infer", content=body)


def test_a_tenant_over_its_rate_quota_gets_429_with_retry_after(cp: ControlPlane, key: str) -> None:
    with cp.admin() as admin:
        r = admin.patch("/admin/tenants/acme", json={"rate_per_s": 0.5, "burst": 1})
        assert r.status_code == 200 and r.json()["rate_per_s"] == 0.5, r.text
        try:
            answers = [_raw_infer(cp, key, "mlp") for _ in range(3)]
            assert answers[0].status_code == 200, answers[0].text
            refused = answers[1]
            assert refused.status_code == 429, refused.text
            assert "rate" in refused.json()["error"]
            assert 1 <= int(refused.headers["retry-after"]) <= 2
        finally:
            assert admin.patch("/admin/tenants/acme", json={"rate_per_s": None}).status_code == 200
    assert _raw_infer(cp, key, "mlp").status_code == 200  # the quota is gone at once


def test_bad_tenant_settings_are_refused_and_change_nothing(cp: ControlPlane, key: str) -> None:
    with cp.admin() as admin:
        r = admin.patch("/admin/tenants/acme", json={"weight": -1})
        assert r.status_code == 400 and "weight" in r.json()["error"], r.text
        r = admin.patch("/admin/tenants/acme", json={"service_class": "urgent"})
        assert r.status_code == 400, r.text
        assert admin.patch("/admin/tenants/nobody", json={"weight": 2}).status_code == 404
        assert admin.get("/admin/tenants/acme").json()["weight"] == 1.0


def test_every_scheduler_decision_is_counted_in_metrics(cp: ControlPlane, key: str) -> None:
    assert _raw_infer(cp, key, "mlp").status_code == 200
    text = cp.metrics()
    assert 'inferplex_scheduler_decisions_total{tenant="acme",model="acme__mlp@1",reason="completed"}' in text
    assert 'reason="infeasible"' in text  # the refusal of the test above
    # what admission adds to every prediction, and the dispatch overhead it learned, as gauges
    gauges = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(("inferplex_admission_margin_seconds", "inferplex_dispatch_overhead_seconds"))}
    assert set(gauges) == {'inferplex_admission_margin_seconds{part="learned"}',
                           'inferplex_admission_margin_seconds{part="shell"}', "inferplex_dispatch_overhead_seconds"}
    assert all(v >= 0 for v in gauges.values()) and gauges["inferplex_dispatch_overhead_seconds"] > 0


def test_a_caller_that_disconnects_leaves_the_queue(cp: ControlPlane, key: str) -> None:
    slow = hostile_models.runaway_loop("slow", float_trips=True)
    assert cp.upload(key, "slow", slow.data, max_batch_size=0, slo_ms=10_000).status_code == 201
    cp.wait_model_status(key, "slow", "ready", timeout_s=120)
    series = 'inferplex_scheduler_decisions_total{tenant="acme",model="acme__slow@1",reason="cancelled"}'

    def body(trips: float) -> bytes:
        return json.dumps({"inputs": [
            {"name": "TRIPS", "datatype": "FP32", "shape": [1], "data": [trips]},
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, hostile_models.LOOP_WIDTH],
             "data": [0.5] * hostile_models.LOOP_WIDTH}]}).encode()

    def post(trips: float) -> int:
        with cp.client(key) as c:
            return c.post("/v2/models/slow/infer", content=body(trips)).status_code

    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(post, 400_000.0)  # about 2 s of the instance's one slot
        wait_until(lambda: 'model="acme__slow@1",reason="dispatched"' in cp.metrics(), 30, "the first dispatch")
        request = body(1.0)
        with socket.create_connection(("127.0.0.1", cp.http_port)) as sock:
            sock.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\n"
                         + f"Authorization: Bearer {key}\r\nContent-Length: {len(request)}\r\n\r\n".encode()
                         + request)
            wait_until(lambda: 'model="acme__slow@1",reason="admitted"} 2' in cp.metrics(), 30,
                       "the second request queued")
        # the socket is closed: the queued request goes, long before the first one ends
        wait_until(lambda: series + " 1" in cp.metrics(), 30, "the queued request to be cancelled")
        assert not busy.done()
        assert busy.result(timeout=60) == 200
