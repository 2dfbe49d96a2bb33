"""The gateway's index, statistics and metadata tell a model's versions apart.

A real catalog (EmbeddedStore in a temp dir) and a real PlacementService whose actual
state is set directly; the instances are fakes answering statistics like Triton does
(one entry per version the instance holds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controlplane.artifacts import ArtifactStore
from controlplane.catalog import ModelCatalog
from controlplane.gateway import Gateway
from controlplane.metrics import Metrics
from controlplane.services import placement_settings
from controlplane.settings import Settings
from controlplane.validation import TensorSpec, ValidatedModel
from placement.service import Placed, PlacementService
from profiler.predictor import LatencyPredictor
from store import keys
from store.embedded import EmbeddedStore
from tenants.auth import Principal

MODEL = ValidatedModel(
    format="onnx", platform="onnxruntime_onnx", filename="model.onnx", max_batch_size=4,
    inputs=[TensorSpec(name="X", datatype="FP32", dims=[3])],
    outputs=[TensorSpec(name="Y", datatype="FP32", dims=[2])],
)
ACME = Principal(role="tenant", tenant="acme", key_id="k1")


class _Driver:
    def __init__(self, instance: _Instances, iid: str) -> None:
        self.instances, self.iid = instance, iid

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        held = self.instances.placement.placements().get(self.iid, {})
        return {"model_stats": [
            {"name": q, "version": p.version, "last_inference": 1, "inference_count": 7,
             "execution_count": 7, "inference_stats": {}, "batch_stats": []}
            for q, p in held.items() if name in (None, q)]}


@dataclass
class _Instance:
    healthy: bool
    driver: _Driver


class _Instances:
    placement: PlacementService

    def __init__(self) -> None:
        self.by_id: dict[str, _Instance] = {}

    def get(self, iid: str) -> _Instance | None:
        return self.by_id.get(iid)

    def list(self) -> list[_Instance]:
        return list(self.by_id.values())


@dataclass
class _Setup:
    gateway: Gateway
    catalog: ModelCatalog
    placement: PlacementService

    def load(self, iid: str, qualified: str, version: int) -> None:
        instances: _Instances = self.gateway.instances  # type: ignore[assignment]
        instances.by_id.setdefault(iid, _Instance(True, _Driver(instances, iid)))
        self.placement._actual.setdefault(iid, {})[qualified] = Placed(str(version), 100, 0.0)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[_Setup]:
    settings = Settings(data_dir=tmp_path)
    store = EmbeddedStore(tmp_path / "state.json")
    catalog = ModelCatalog(store, ArtifactStore(tmp_path / "artifacts"), settings)
    await catalog.start()
    instances = _Instances()
    predictor = LatencyPredictor()
    metrics = Metrics()
    placement = PlacementService(store, instances, catalog, predictor, metrics,  # type: ignore[arg-type]
                                 placement_settings(settings))
    instances.placement = placement
    tenants = SimpleNamespace(policy=lambda _tenant: None)  # every tenant on the default policy
    gateway = Gateway(tenants, catalog, placement, instances, predictor, metrics, settings)  # type: ignore[arg-type]
    try:
        yield _Setup(gateway, catalog, placement)
    finally:
        await catalog.close()
        await store.close()


async def _add(catalog: ModelCatalog, name: str, data: bytes) -> Any:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    staged = await catalog.artifacts.stage(chunks(), 1 << 20)
    await catalog.store.create(keys.tenant("acme"), b"{}")
    tenant = await catalog.store.get(keys.tenant("acme"))
    assert tenant is not None
    return await catalog.add_version("acme", tenant.created, name, None, staged, MODEL, 100.0)


async def test_index_marks_only_the_loaded_version_ready(setup: _Setup) -> None:
    await _add(setup.catalog, "m", b"one")
    v2 = await _add(setup.catalog, "m", b"two")
    setup.load("i1", v2.qualified_name, 2)
    rows = {r["version"]: r["state"] for r in setup.gateway.repository_index(ACME)}
    assert rows == {"1": "UNAVAILABLE", "2": "READY"}


async def test_stats_of_a_version_that_is_not_loaded_are_empty_not_another_versions(setup: _Setup) -> None:
    await _add(setup.catalog, "m", b"one")
    v2 = await _add(setup.catalog, "m", b"two")
    setup.load("i1", v2.qualified_name, 2)
    (one,) = (await setup.gateway.statistics(ACME, "m", "1"))["model_stats"]
    assert (one["name"], one["version"], one["inference_count"]) == ("m", "1", 0)
    (two,) = (await setup.gateway.statistics(ACME, "m", "2"))["model_stats"]
    assert (two["name"], two["version"], two["inference_count"]) == ("m", "2", 7)
    (latest,) = (await setup.gateway.statistics(ACME, "m", None))["model_stats"]
    assert (latest["version"], latest["inference_count"]) == ("2", 7)


async def test_all_models_stats_list_each_models_latest_usable_version(setup: _Setup) -> None:
    await _add(setup.catalog, "m", b"one")
    v2 = await _add(setup.catalog, "m", b"two")
    await _add(setup.catalog, "n", b"three")
    await setup.catalog.set_status(v2, "failed", reason="instance refused it")
    stats = (await setup.gateway.statistics(ACME, None, None))["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("m", "1"), ("n", "1")]


async def test_metadata_lists_every_version(setup: _Setup) -> None:
    await _add(setup.catalog, "m", b"one")
    await _add(setup.catalog, "m", b"two")
    await _add(setup.catalog, "other", b"three")
    assert setup.gateway.model_metadata(ACME, "m", "1")["versions"] == ["1", "2"]
    assert setup.gateway.model_metadata(ACME, "other", None)["versions"] == ["1"]
