"""Catalog lookups: latest usable version, tenant scoping, qualified names, Triton config.
A real EmbeddedStore in a temp dir (cheap, in-process) feeds the catalog's watched index."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.artifacts import ArtifactStore, StagedUpload
from controlplane.catalog import BATCHING_NOTE, ModelCatalog
from controlplane.settings import Settings
from controlplane.validation import TensorSpec, ValidatedModel
from kserve.errors import Conflict, NotFound
from store import keys
from store.embedded import EmbeddedStore

MODEL = ValidatedModel(
    format="onnx", platform="onnxruntime_onnx", filename="model.onnx", max_batch_size=4,
    inputs=[TensorSpec(name="TEXT", datatype="BYTES", dims=[-1])],
    outputs=[TensorSpec(name="SCORE", datatype="FP32", dims=[2])],
)


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[ModelCatalog]:
    store = EmbeddedStore(tmp_path / "state.json")
    cat = ModelCatalog(store, ArtifactStore(tmp_path / "artifacts"), Settings(data_dir=tmp_path))
    await cat.start()
    try:
        yield cat
    finally:
        await cat.close()
        await store.close()


async def stage(cat: ModelCatalog, data: bytes) -> StagedUpload:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return await cat.artifacts.stage(chunks(), 1 << 20)


async def tenant_created(cat: ModelCatalog, tenant: str) -> int:
    """The tenant record's identity, creating the record on first use."""
    await cat.store.create(keys.tenant(tenant), b"{}")
    kv = await cat.store.get(keys.tenant(tenant))
    assert kv is not None
    return kv.created


async def add(cat: ModelCatalog, tenant: str, name: str, data: bytes = b"bytes", version: int | None = None):
    created = await tenant_created(cat, tenant)
    return await cat.add_version(tenant, created, name, version, await stage(cat, data), MODEL, 100.0)


async def test_a_version_for_a_tenant_deleted_and_recreated_meanwhile_stores_nothing(
        catalog: ModelCatalog) -> None:
    before = await tenant_created(catalog, "acme")
    staged = await stage(catalog, b"old owner's bytes")
    assert await catalog.store.delete(keys.tenant("acme"))
    now = await tenant_created(catalog, "acme")  # a new tenant under the same name
    with pytest.raises(NotFound, match="tenant 'acme' was deleted while the model was uploading"):
        await catalog.add_version("acme", before, "m", None, staged, MODEL, 100.0)
    assert catalog.list("acme") == [] and await catalog.stored_model_names("acme") == []
    assert not catalog.artifacts.exists(staged.sha256)
    assert (await add(catalog, "acme", "m")).version == 1 and now > before


async def test_latest_version_skips_failed_ones(catalog: ModelCatalog) -> None:
    v1 = await add(catalog, "acme", "m")
    v2 = await add(catalog, "acme", "m")
    assert (v1.version, v2.version) == (1, 2)
    assert catalog.resolve("acme", "m").version == 2
    await catalog.set_status(v2, "failed", reason="instance refused it")
    assert catalog.resolve("acme", "m").version == 1
    assert catalog.resolve("acme", "m", "2").reason == "instance refused it"
    await catalog.set_status(v1, "failed")
    assert catalog.resolve("acme", "m").version == 2  # all failed: the newest, with its reason


async def test_lookups_are_scoped_to_the_tenant(catalog: ModelCatalog) -> None:
    await add(catalog, "acme", "m")
    with pytest.raises(NotFound) as err:
        catalog.resolve("globex", "m")
    assert err.value.message == "Request for unknown model: 'm' is not found"
    with pytest.raises(NotFound, match="'m' version x is not found"):
        catalog.resolve("acme", "m", "x")
    with pytest.raises(NotFound):
        catalog.resolve(None, "m")  # admin principals own no models
    assert catalog.list("globex") == []
    assert catalog.by_qualified("acme__m").version == 1
    assert catalog.by_qualified("globex__m") is None
    assert catalog.by_qualified("not-qualified") is None


async def test_concurrent_uploads_get_distinct_versions(catalog: ModelCatalog) -> None:
    records = await asyncio.gather(*(add(catalog, "acme", "m", bytes([i])) for i in range(3)))
    assert sorted(r.version for r in records) == [1, 2, 3]
    with pytest.raises(Conflict, match="version 2 already exists"):
        await add(catalog, "acme", "m", version=2)
    assert [r.version for r in catalog.versions("acme", "m")] == [1, 2, 3]


async def test_triton_config_and_files_use_the_qualified_name(catalog: ModelCatalog) -> None:
    record = await add(catalog, "acme", "m", b"onnx-bytes")
    assert record.sha256 == hashlib.sha256(b"onnx-bytes").hexdigest()
    assert catalog.triton_config(record) == {
        "name": "acme__m", "platform": "onnxruntime_onnx", "max_batch_size": 4,
        "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [{"name": "SCORE", "data_type": "TYPE_FP32", "dims": [2]}],
        # the control plane batches: Triton's dynamic batcher stays off, and the config says so
        "parameters": {"inferplex_batching": {"string_value": BATCHING_NOTE}},
    }
    assert "dynamic_batching" not in catalog.triton_config(record)
    assert catalog.files(record) == {"1/model.onnx": b"onnx-bytes"}


async def test_set_status_on_a_deleted_version_is_ignored(catalog: ModelCatalog) -> None:
    record = await add(catalog, "acme", "m")
    await catalog.delete("acme", "m")
    assert await catalog.set_status(record, "ready") is None
    with pytest.raises(NotFound):
        catalog.versions("acme", "m")
    assert not catalog.artifacts.exists(record.sha256)


async def test_deleting_one_version_shows_in_the_index_at_once(catalog: ModelCatalog) -> None:
    v1 = await add(catalog, "acme", "m", b"one")
    await add(catalog, "acme", "m", b"two")
    assert [r.version for r in await catalog.delete("acme", "m", 2)] == [2]
    assert [r.version for r in catalog.versions("acme", "m")] == [1]
    assert catalog.resolve("acme", "m") == v1
    with pytest.raises(NotFound, match="version 2 is not found"):
        await catalog.delete("acme", "m", 2)


async def test_a_stored_reason_names_nothing_internal(catalog: ModelCatalog) -> None:
    v1 = await add(catalog, "acme", "m")
    await catalog.set_status(v1, "failed", reason="failed to load '_profile__acme__m' on worker-0: "
                                                  "cannot open /srv/inferplex/w0/acme__m/1/model.onnx")
    assert catalog.resolve("acme", "m", 1).reason == \
        "failed to load 'm' on an instance: cannot open a server path"
