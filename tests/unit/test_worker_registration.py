"""The worker's registration client against fake control-plane replicas: a replica
that does not answer or answers 5xx passes the turn to the next; 404 on a heartbeat
means register again; any other refusal is the operator's to fix."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import httpx
import pytest

from kserve.restricted import InstanceCredential
from worker.main import options_from_args
from worker.main import register as register_worker
from worker.registration import Registration, RegistrationClient, _Rejected

URLS = ["http://cp-a:8000", "http://cp-b:8000", "http://cp-c:8000"]
REG = Registration("w-host-8001", "host:8000", "host:8001", 1 << 30)


def _client(answer: Callable[[httpx.Request], httpx.Response]) -> tuple[RegistrationClient, list[str]]:
    """A client whose replicas answer with ``answer``; returns it and the URLs it called."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return answer(request)

    client = RegistrationClient(URLS, "key", REG)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     headers={"Authorization": "Bearer key"})
    return client, calls


def _by_host(**status: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        code = status[request.url.host.replace("-", "_")]
        if code == 0:
            raise httpx.ConnectError("refused", request=request)
        if code == 200 and request.url.path.endswith("/register"):
            return httpx.Response(200, json={"lease_id": 0xABC, "ttl_s": 9})
        return httpx.Response(code, json={"error": f"status {code}"})

    return answer


async def test_register_passes_over_dead_and_failing_replicas() -> None:
    client, calls = _client(_by_host(cp_a=0, cp_b=503, cp_c=200))
    await client._register()
    assert calls == [u + "/admin/instances/register" for u in URLS]
    assert (client.lease_id, client.ttl_s) == (0xABC, 9)

    # the heartbeat starts at the replica that answered
    assert await client._heartbeat()
    assert calls[-1] == "http://cp-c:8000/admin/instances/w-host-8001/heartbeat"
    await client.close()
    assert calls[-1] == "http://cp-c:8000/admin/instances/w-host-8001/deregister"
    assert client.lease_id is None


async def test_register_refused_is_rejected_and_no_answer_is_a_later_try() -> None:
    client, _ = _client(_by_host(cp_a=503, cp_b=403, cp_c=200))
    with pytest.raises(_Rejected, match="403 from http://cp-b:8000: status 403"):
        await client._register()
    assert client.lease_id is None
    await client.close()

    client, calls = _client(_by_host(cp_a=0, cp_b=0, cp_c=500))
    await client._register()  # backs off, no exception
    assert len(calls) == 3 and client.lease_id is None
    await client.close()


async def test_heartbeat_404_means_register_again_and_5xx_everywhere_is_unconfirmed() -> None:
    status = {"cp_a": 200, "cp_b": 200, "cp_c": 200}
    client, calls = _client(lambda r: _by_host(**status)(r))
    await client._register()
    status["cp_a"] = 502
    status["cp_b"] = 404
    assert not await client._heartbeat()
    assert client.lease_id is None
    assert [c.split("/")[2] for c in calls[-2:]] == ["cp-a:8000", "cp-b:8000"]

    with pytest.raises(_Rejected, match="404 from http://cp-b:8000"):  # 404 to a register: a refusal
        await client._register()
    await client.close()


async def test_heartbeat_fails_over_and_reports_unconfirmed_when_all_fail() -> None:
    status = {"cp_a": 200, "cp_b": 200, "cp_c": 200}
    client, calls = _client(lambda r: _by_host(**status)(r))
    await client._register()
    status.update(cp_a=0, cp_b=503, cp_c=500)
    assert not await client._heartbeat()
    assert client.lease_id == 0xABC  # unconfirmed, not lost: the run loop decides after a TTL
    assert [c.split("/")[2] for c in calls[-3:]] == ["cp-a:8000", "cp-b:8000", "cp-c:8000"]
    status.update(cp_b=200)
    assert await client._heartbeat()
    assert calls[-1].startswith("http://cp-b:8000/")
    status.update(cp_b=401)
    with pytest.raises(_Rejected, match="401"):
        await client._heartbeat()
    await client.close()


def _worker_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_worker(parser.add_subparsers())
    return parser.parse_args(["worker", *argv])


def test_the_worker_logs_and_registers_under_one_id() -> None:
    args = _worker_args("--grpc-port", "9001", "--advertise-host", "node-7")
    assert options_from_args(args).instance_id == "w-node-7-9001"
    args = _worker_args("--host", "10.0.0.5", "--grpc-port", "9001", "--register", "http://cp:8000")
    assert options_from_args(args).instance_id == "w-10.0.0.5-9001"
    args = _worker_args("--instance-id", "pod/worker 3")
    assert options_from_args(args).instance_id == "pod-worker-3"


async def test_the_register_answer_hands_the_credential_to_the_worker() -> None:
    adopted: list[InstanceCredential] = []
    client, _ = _client(lambda r: httpx.Response(200, json={
        "lease_id": 1, "ttl_s": 9, "credential": {"key": "K", "value": "secret"}}))
    client.on_credential = adopted.append
    await client._register()
    assert adopted == [InstanceCredential("k", "secret")] and client.lease_id == 1
    await client.close()
