"""Deleting a tenant while its upload is in flight, against the real app, store and a real
worker: the upload stores nothing, and a tenant re-created under the same name inherits
nothing (no models, no profiles, no old model to infer, nothing loaded on the worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kserve.errors import Conflict
from store import keys
from tests.support import models
from tests.support.cp_app import RunningApp, blobs, leftovers, upload_raw
from tests.support.procs import eventually
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(120)

INFER_BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


async def _worker_holds(cp: RunningApp, qualified: str) -> bool:
    """What the worker itself says (its repository index, through the control plane's driver)."""
    (inst,) = cp.services.instances.list()
    return any(row.name == qualified and row.state == "READY" for row in await inst.driver.index())


async def test_an_upload_outliving_its_tenant_stores_nothing_and_the_namesake_inherits_nothing(
        cp: RunningApp, worker: WorkerProcess) -> None:
    r = await cp.admin("POST", "/admin/instances", json={
        "http_url": worker.http_url, "grpc_url": worker.grpc_url, "memory_bytes": 1 << 30})
    assert r.status_code == 201, r.text
    old_key = await cp.tenant_with_key("acme")
    other_key = await cp.tenant_with_key("globex")
    for key in (old_key, other_key):
        assert (await upload_raw(cp, key, models.mlp_onnx().data, name="mlp")).status_code == 201
        r = await cp.client.post("/v2/models/mlp/infer", json=INFER_BODY, headers=cp.headers(key))
        assert r.status_code == 200, r.text
    assert await _worker_holds(cp, "acme__mlp")

    # an upload of a second model, its body held open half-way
    data = models.mlp_onnx("late").data
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        await release.wait()
        yield data[len(data) // 2:]

    upload = asyncio.create_task(cp.client.post(
        "/v1/models", content=body(), params={"name": "late"},
        headers={**cp.headers(old_key), "Content-Type": "application/octet-stream"}))
    await eventually(lambda: leftovers(cp), 10, "the upload to be receiving its body")

    assert (await cp.admin("DELETE", "/admin/tenants/acme")).status_code == 200
    new_key = await cp.tenant_with_key("acme")  # a new owner, before the old upload commits
    release.set()
    late = await upload
    assert late.status_code == 404, late.text
    assert "tenant 'acme' was deleted while the model was uploading" in late.json()["error"]
    assert leftovers(cp) == []
    assert len(blobs(cp)) == 1  # globex's mlp; acme's old bytes went with its model

    new = cp.headers(new_key)
    assert (await cp.client.get("/v1/models", headers=new)).json() == {"models": []}
    assert (await cp.admin("GET", "/admin/tenants/acme")).json()["models"] == []
    for path in ("/v1/models/mlp", "/v1/models/late", "/v2/models/mlp/profile"):
        assert (await cp.client.get(path, headers=new)).status_code == 404, path
    r = await cp.client.post("/v2/models/mlp/infer", json=INFER_BODY, headers=new)
    assert r.status_code == 404, r.text
    assert not await _worker_holds(cp, "acme__mlp")
    assert all("acme__mlp" not in held for held in cp.services.placement.placements().values())
    assert (await cp.client.get("/v1/models", headers=cp.headers(old_key))).status_code == 401
    # the other tenant is untouched
    r = await cp.client.post("/v2/models/mlp/infer", json=INFER_BODY, headers=cp.headers(other_key))
    assert r.status_code == 200, r.text


async def test_a_half_finished_delete_blocks_the_namesake_until_it_is_repeated(cp: RunningApp) -> None:
    key = await cp.tenant_with_key("acme")
    assert (await upload_raw(cp, key, models.mlp_onnx().data, name="mlp")).status_code == 201
    # what a delete that stopped after the tenant record and its keys leaves: the models
    await cp.services.tenants.delete_tenant("acme")
    r = await cp.admin("POST", "/admin/tenants", json={"name": "acme"})
    assert r.status_code == Conflict.http_status
    assert "run DELETE /admin/tenants/acme again" in r.json()["error"]
    assert (await cp.admin("DELETE", "/admin/tenants/acme")).status_code == 200
    assert await cp.services.store.list_prefix(keys.models_of("acme")) == [] and blobs(cp) == []
    assert (await cp.admin("POST", "/admin/tenants", json={"name": "acme"})).status_code == 201
    assert (await cp.admin("DELETE", "/admin/tenants/nobody")).status_code == 404
