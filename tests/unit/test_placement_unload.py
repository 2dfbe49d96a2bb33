"""Unloading a model from instances: what a gone model or a down instance does to a delete."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from controlplane.metrics import Metrics
from controlplane.services import placement_settings
from controlplane.settings import Settings
from kserve.errors import NotFound, Unavailable
from placement.service import Placed, PlacementService
from profiler.predictor import LatencyPredictor
from store import keys
from store.embedded import EmbeddedStore

Q = "acme__m"


class Driver:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.unloaded: list[str] = []

    async def unload(self, name: str) -> None:
        self.unloaded.append(name)
        if self.error is not None:
            raise self.error


class Instances:
    def __init__(self, **instances: tuple[Driver, bool]) -> None:
        self._by_id = {iid: SimpleNamespace(driver=d, healthy=h) for iid, (d, h) in instances.items()}

    def get(self, iid: str) -> Any:
        return self._by_id.get(iid)


async def _service(instances: Instances, holders: list[str]) -> tuple[PlacementService, EmbeddedStore]:
    store = EmbeddedStore()
    svc = PlacementService(store, cast(Any, instances), cast(Any, None), LatencyPredictor(),
                           Metrics(), placement_settings(Settings()))
    for iid in holders:
        svc._actual[iid] = {Q: Placed("1", 10, 1.0)}
        await store.put(keys.placement(iid, Q), b'{"version": "1", "bytes": 10, "loaded_at": 1.0}')
    return svc, store


async def test_an_instance_that_no_longer_holds_the_model_does_not_fail_the_delete() -> None:
    gone = Driver(NotFound(f"no model {Q}"))  # restarted, or another replica unloaded it
    svc, store = await _service(Instances(w1=(gone, True)), ["w1"])
    await svc.unload_everywhere(Q)
    assert gone.unloaded == [Q]
    assert await store.get(keys.placement("w1", Q)) is None
    assert svc.placements() == {"w1": {}}


async def test_a_down_instance_does_not_block_the_delete() -> None:
    down, up = Driver(Unavailable("unreachable")), Driver()
    svc, store = await _service(Instances(w1=(down, False), w2=(up, True)), ["w1", "w2"])
    await svc.unload_everywhere(Q)
    assert down.unloaded == [] and up.unloaded == [Q]
    assert await store.list_prefix(keys.PLACEMENT) == []


async def test_unload_from_deletes_only_the_placement_it_was_given() -> None:
    svc, store = await _service(Instances(w1=(Driver(), True)), ["w1"])
    old = await store.get(keys.placement("w1", Q))
    assert old is not None
    await store.put(keys.placement("w1", Q), old.value)  # rewritten since it was read
    await svc.unload_from("w1", Q, old.revision)
    assert await store.get(keys.placement("w1", Q)) is not None
