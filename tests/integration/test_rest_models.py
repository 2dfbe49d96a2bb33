"""Model upload, list, describe and delete over REST, against the real app and store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import models
from tests.support.cp_app import (
    RunningApp,
    blobs,
    leftovers,
    running_app,
    settings_for,
    upload_multipart,
    upload_raw,
    wait_status,
)

MLP_PT_SPECS = {
    "inputs": json.dumps([{"name": "INPUT__0", "datatype": "FP32", "dims": [64]}]),
    "outputs": json.dumps([{"name": "OUTPUT__0", "datatype": "FP32", "dims": [10]}]),
}
UPLOAD_LIMIT = 64 * 1024


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with running_app(settings_for(tmp_path / "data", max_upload_bytes=UPLOAD_LIMIT)) as app:
        yield app


async def test_onnx_raw_upload_infers_specs_and_becomes_ready(cp: RunningApp, keys: dict[str, str]) -> None:
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, name="mlp", slo_ms=50)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"], body["platform"], body["max_batch_size"]) == (
        "mlp", 1, "onnxruntime_onnx", 8)
    assert body["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "dims": [64]}]
    assert body["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "dims": [10]}]
    assert "qualified_name" not in body and body["slo_ms"] == 50  # the instance-level name is internal
    detail = await wait_status(cp, keys["acme"], "mlp", "ready")
    assert [v["version"] for v in detail["versions"]] == [1]
    config = cp.services.catalog.triton_config(cp.services.catalog.resolve("acme", "mlp"))
    assert config["name"] == "acme__mlp" and config["input"][0]["data_type"] == "TYPE_FP32"
    assert cp.services.catalog.files(cp.services.catalog.resolve("acme", "mlp")) == {
        "1/model.onnx": models.mlp_onnx().data}


async def test_torchscript_multipart_upload_needs_declared_specs(cp: RunningApp, keys: dict[str, str]) -> None:
    data = models.mlp_torchscript().data
    r = await upload_multipart(cp, keys["acme"], data, "weights.onnx", name="mlp_pt", max_batch_size=16)
    assert r.status_code == 400
    assert "TorchScript models need declared inputs and outputs" in r.json()["error"]
    r = await upload_multipart(cp, keys["acme"], data, "weights.onnx", name="mlp_pt", max_batch_size=16,
                               **MLP_PT_SPECS)
    assert r.status_code == 201, r.text
    assert (r.json()["platform"], r.json()["filename"], r.json()["max_batch_size"]) == (
        "pytorch_libtorch", "model.pt", 16)


@pytest.mark.parametrize(("data", "message"), [
    (models.corrupt_onnx(), "unknown model format: upload an ONNX (.onnx) or TorchScript (.pt) file"),
    (models.pickle_pt(), "not a TorchScript archive: export with torch.jit.script"),
    (models.state_dict_pt(), "not a TorchScript archive: export with torch.jit.script"),
    (models.onnx_external_data(), "uses external data: upload one self-contained file"),
])
async def test_bad_files_are_refused_and_leave_nothing_behind(
        cp: RunningApp, keys: dict[str, str], data: bytes, message: str) -> None:
    r = await upload_multipart(cp, keys["acme"], data, "model.pt", name="bad")
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert (await cp.client.get("/v1/models", headers=cp.headers(keys["acme"]))).json() == {"models": []}
    assert blobs(cp) == [] and leftovers(cp) == []
    assert cp.services.metrics.counter_value(
        "inferplex_errors_total", tenant="acme", model="bad", kind="upload_refused") == 1


async def test_declared_inputs_not_matching_the_file_are_named(cp: RunningApp, keys: dict[str, str]) -> None:
    wrong = json.dumps([{"name": "INPUT0", "datatype": "FP16", "dims": [64]}])
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, name="mlp", inputs=wrong)
    assert r.status_code == 400
    assert r.json()["error"] == "input 'INPUT0': declared datatype FP16 but the model file has FP32"
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, name="mlp", inputs="[{oops")
    assert r.status_code == 400 and r.json()["error"].startswith("inputs is not valid JSON")
    assert blobs(cp) == [] and leftovers(cp) == []


async def test_oversized_upload_is_413_with_the_limit(cp: RunningApp, keys: dict[str, str]) -> None:
    big = b"\x08" * (UPLOAD_LIMIT + 1)
    r = await upload_raw(cp, keys["acme"], big, name="big")  # Content-Length known up front
    assert r.status_code == 413 and f"upload limit of {UPLOAD_LIMIT} bytes" in r.json()["error"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
        for _ in range(4):
            yield b"\x08" * (UPLOAD_LIMIT // 2)

    r = await cp.client.post("/v1/models", content=chunked(), params={"name": "big"},
                             headers=cp.headers(keys["acme"]))
    assert r.status_code == 413 and f"upload limit of {UPLOAD_LIMIT} bytes" in r.json()["error"]
    r = await upload_multipart(cp, keys["acme"], big + b"\x00" * (2 * 2**20), name="big")
    assert r.status_code == 413
    assert blobs(cp) == [] and leftovers(cp) == []


async def test_versions_and_content_addressing(cp: RunningApp, keys: dict[str, str]) -> None:
    data = models.simple().data
    assert (await upload_raw(cp, keys["acme"], data, name="simple")).json()["version"] == 1
    assert (await upload_raw(cp, keys["acme"], data, name="simple")).json()["version"] == 2
    r = await upload_raw(cp, keys["acme"], data, name="simple", version=2)
    assert r.status_code == 409 and "version 2 already exists" in r.json()["error"]
    assert (await upload_raw(cp, keys["globex"], data, name="other")).status_code == 201
    assert len(blobs(cp)) == 1  # same bytes, stored once
    r = await cp.client.delete("/v1/models/simple/versions/1", headers=cp.headers(keys["acme"]))
    assert r.json() == {"name": "simple", "versions": [1]}
    assert len(blobs(cp)) == 1
    r = await cp.client.delete("/v1/models/simple", headers=cp.headers(keys["acme"]))
    assert r.json() == {"name": "simple", "versions": [2]}
    assert len(blobs(cp)) == 1  # globex still uses the bytes
    assert (await cp.client.delete("/v1/models/other", headers=cp.headers(keys["globex"]))).status_code == 200
    assert blobs(cp) == []


async def test_other_tenants_model_is_indistinguishable_from_a_missing_one(
        cp: RunningApp, keys: dict[str, str]) -> None:
    assert (await upload_raw(cp, keys["acme"], models.simple().data, name="secret")).status_code == 201
    g = cp.headers(keys["globex"])
    for method, path in [("GET", "/v1/models/{}"), ("DELETE", "/v1/models/{}"),
                         ("DELETE", "/v1/models/{}/versions/1")]:
        theirs = await cp.client.request(method, path.format("secret"), headers=g)
        missing = await cp.client.request(method, path.format("nosuch"), headers=g)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"] == missing.json()["error"].replace("nosuch", "secret")
    assert theirs.json()["error"] == "Request for unknown model: 'secret' version 1 is not found"
    assert (await cp.client.get("/v1/models", headers=g)).json() == {"models": []}
    r = await cp.client.get("/v1/models", params={"tenant": "acme"}, headers=g)
    assert r.status_code == 403
    # still there for its owner, and for an admin naming the tenant
    assert (await cp.client.get("/v1/models/secret", headers=cp.headers(keys["acme"]))).status_code == 200
    r = await cp.admin("GET", "/v1/models", params={"tenant": "acme"})
    assert [m["name"] for m in r.json()["models"]] == ["secret"]
    r = await cp.admin("GET", "/v1/models")
    assert r.status_code == 400 and "?tenant=" in r.json()["error"]


async def test_missing_name_and_bad_options_are_400(cp: RunningApp, keys: dict[str, str]) -> None:
    r = await upload_raw(cp, keys["acme"], models.simple().data)
    assert r.status_code == 400 and r.json()["error"].startswith("missing model name")
    r = await upload_raw(cp, keys["acme"], models.simple().data, name="../etc")
    assert r.status_code == 400 and "invalid model name" in r.json()["error"]
    r = await upload_raw(cp, keys["acme"], models.simple().data, name="s", max_batch_size="lots")
    assert r.status_code == 400 and r.json()["error"] == "max_batch_size must be an integer, got 'lots'"
    r = await cp.client.post("/v1/models", data={"name": "x"}, files={"other": ("a", b"b")},
                             headers=cp.headers(keys["acme"]))
    assert r.status_code == 400 and "send the model as the 'file' field" in r.json()["error"]
    assert blobs(cp) == [] and leftovers(cp) == []


async def test_deleting_a_tenant_deletes_its_models(cp: RunningApp, keys: dict[str, str]) -> None:
    assert (await upload_raw(cp, keys["acme"], models.simple().data, name="s")).status_code == 201
    assert (await cp.admin("DELETE", "/admin/tenants/acme")).status_code == 200
    assert cp.services.catalog.list("acme") == [] and blobs(cp) == []


async def test_restart_keeps_models(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    async with running_app(settings) as cp:
        key = await cp.tenant_with_key("acme")
        assert (await upload_raw(cp, key, models.mlp_onnx().data, name="mlp")).status_code == 201
        await wait_status(cp, key, "mlp", "ready")
    async with running_app(settings_for(tmp_path / "data")) as cp:
        r = await cp.client.get("/v1/models/mlp", headers=cp.headers(key))
        assert r.status_code == 200 and r.json()["versions"][0]["status"] == "ready"
        record = cp.services.catalog.resolve("acme", "mlp")
        assert cp.services.catalog.files(record) == {"1/model.onnx": models.mlp_onnx().data}
