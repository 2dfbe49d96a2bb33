"""PlacementService._load against fake instances: what it loads, and where."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from controlplane.metrics import Metrics
from controlplane.services import placement_settings
from controlplane.settings import Settings
from kserve.errors import InvalidArgument, ResourceExhausted, Unavailable
from placement.service import Placed, PlacementService
from profiler.predictor import LatencyPredictor
from store.embedded import EmbeddedStore

Q = "acme__m"


class Driver:
    def __init__(self) -> None:
        self.loads: list[str] = []

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        self.loads.append(name)
        return 0.0

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        return {"model_stats": []}  # reports no memory: the profile or the estimate counts


class Instances:
    def __init__(self, *ids: str) -> None:
        self._by_id = {
            iid: SimpleNamespace(
                record=SimpleNamespace(instance_id=iid, memory_bytes=1 << 30, instance_class="cpu"),
                driver=Driver(), healthy=True, platforms=None)
            for iid in ids
        }

    def list(self) -> list[Any]:
        return list(self._by_id.values())

    def get(self, iid: str) -> Any:
        return self._by_id.get(iid)

    def draining(self, iid: str) -> bool:
        return False


class Catalog:
    def __init__(self) -> None:
        self.latest: Any = None  # the record by_qualified answers: the version being loaded

    def by_qualified(self, qualified: str, version: Any = None) -> Any:
        rec = self.latest
        if rec is None or qualified != rec.qualified_name:
            return None
        return rec if version is None or str(version) == str(rec.version) else None

    def files(self, record: Any) -> dict[str, bytes]:
        return {"1/model.onnx": b"x"}

    def triton_config(self, record: Any) -> dict[str, Any]:
        return {"name": record.qualified_name}


def _record(version: int) -> Any:
    return SimpleNamespace(qualified_name=Q, version=version, size_bytes=10, profile=None,
                           tenant="acme", name="m", status="ready", platform="onnxruntime_onnx",
                           slo_ms=100.0, max_batch_size=0, reason="")


def _service(instances: Instances) -> PlacementService:
    settings = Settings(profile_on_upload=False)
    return PlacementService(EmbeddedStore(), cast(Any, instances), cast(Any, Catalog()),
                            LatencyPredictor(), Metrics(), placement_settings(settings))


async def _load(svc: PlacementService, record: Any) -> Any:
    svc.catalog.latest = record  # type: ignore[attr-defined]
    return await svc._load(record)


async def test_a_model_that_appeared_meanwhile_is_not_loaded_again() -> None:
    instances = Instances("w1", "w2")
    svc = _service(instances)
    svc._actual["w2"] = {Q: Placed("1", 10, 1.0)}  # another replica's load, seen by the watch
    driver = await _load(svc, _record(1))
    assert driver is instances.get("w2").driver
    assert instances.get("w1").driver.loads == [] and instances.get("w2").driver.loads == []
    assert svc.used_bytes("w2") == 10


async def test_another_version_held_does_not_count_as_loaded() -> None:
    instances = Instances("w1")
    svc = _service(instances)
    svc._actual["w1"] = {Q: Placed("1", 10, 1.0)}
    driver = await _load(svc, _record(2))
    assert driver is instances.get("w1").driver and driver.loads == [Q]
    assert svc.placements()["w1"][Q].version == "2"


def test_a_model_costs_the_most_any_class_measured_else_the_estimate() -> None:
    svc = _service(Instances())
    rec = _record(1)
    assert svc._model_bytes(rec) == 1 << 20  # estimate_model_bytes(10): at least 1 MiB
    rec.profile = {"classes": {"cpu": {"memory_bytes": 5 << 20}, "h200": {"memory_bytes": 7 << 20},
                               "new": {"memory_bytes": None}}}
    assert svc._model_bytes(rec) == 7 << 20
    rec.profile = {"classes": {"cpu": {}}}
    assert svc._model_bytes(rec) == 1 << 20


class UnloadingDriver(Driver):
    def __init__(self) -> None:
        super().__init__()
        self.unloads: list[str] = []

    async def unload(self, name: str) -> None:
        self.unloads.append(name)


async def test_a_new_version_evicts_the_old_one_where_no_instance_has_room() -> None:
    instances = Instances("w1")
    instances.get("w1").driver = UnloadingDriver()
    # w1 has room for v2 (1 MiB) only once v1's bytes are freed
    instances.get("w1").record.memory_bytes = 5 << 19
    svc = _service(instances)
    svc._actual["w1"] = {Q: Placed("1", 2 << 20, 1.0)}
    driver = await _load(svc, _record(2))
    assert driver is instances.get("w1").driver and driver.loads == [Q] and driver.unloads == [Q]
    assert svc.placements()["w1"][Q].version == "2"
    assert "evicted" in svc.decisions[0][1] and "needed" in svc.decisions[0][1]


async def test_an_old_version_left_on_another_instance_is_unloaded() -> None:
    instances = Instances("w1", "w2")
    for inst in instances.list():
        inst.driver = UnloadingDriver()
    instances.get("w1").record.memory_bytes = 1 << 19  # too small for v2 (1 MiB) even after the swap
    svc = _service(instances)
    svc._actual["w1"] = {Q: Placed("1", 1 << 19, 1.0)}
    driver = await _load(svc, _record(2))
    assert driver is instances.get("w2").driver and driver.loads == [Q]
    assert instances.get("w1").driver.unloads == [Q]
    assert Q not in svc.placements().get("w1", {}) and svc.placements()["w2"][Q].version == "2"


class FailingDriver(Driver):
    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        self.loads.append(name)
        raise InvalidArgument("instance w1 refused to load the model: bad graph")


async def test_a_failed_load_is_shown_on_the_status_and_backs_off() -> None:
    instances = Instances("w1")
    instances.get("w1").driver = FailingDriver()
    svc = _service(instances)
    statuses: list[tuple[str, str]] = []

    async def set_status(record: Any, status: str, reason: str = "", profile: Any = None) -> Any:
        statuses.append((status, reason))
        return record

    svc.catalog.set_status = set_status  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument):
        await _load(svc, _record(1))
    (status, reason), = statuses
    assert status == "ready" and reason.startswith("the last load failed: ") and "tried again in" in reason
    # the only instance is backing off: refused at once with when it is tried again, no load sent
    with pytest.raises(Unavailable) as info:
        await _load(svc, _record(1))
    assert "failed to load; it is tried again in" in info.value.message
    assert instances.get("w1").driver.loads == [Q]


class MeasuringDriver(UnloadingDriver):
    """Refuses the first load as a worker does once it measured the model: needs 3 MiB."""

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        self.loads.append(name)
        if len(self.loads) == 1:
            raise ResourceExhausted(f"insufficient memory budget to load '{name}': needs {3 << 20} "
                                    f"bytes, {2 << 20} free of {4 << 20} budget")
        return 0.0


async def test_a_model_the_instance_measures_larger_is_planned_again_with_that_size() -> None:
    instances = Instances("w1")
    instances.get("w1").driver = MeasuringDriver()
    instances.get("w1").record.memory_bytes = 4 << 20
    svc = _service(instances)
    svc._actual["w1"] = {"acme__old": Placed("1", 2 << 20, 1.0)}  # a deleted model's copy
    driver = await _load(svc, _record(1))  # the estimate (1 MiB) fits beside it; 3 MiB does not
    assert driver.loads == [Q, Q] and driver.unloads == ["acme__old"]
    assert svc._model_bytes(_record(1)) >= 3 << 20


class GatedDriver(Driver):
    """A load that lasts until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        self.loads.append(name)
        await self.gate.wait()
        return 0.0


def _slow_loading() -> tuple[PlacementService, GatedDriver, Any]:
    """One instance whose load waits for its gate; a load measured at 2 s, the SLO 100 ms."""
    instances = Instances("w1")
    driver = instances.get("w1").driver = GatedDriver()
    svc = _service(instances)
    rec = _record(1)
    svc.catalog.latest = rec  # type: ignore[attr-defined]
    svc.predictor.observe_load(Q, "cpu", 2.0)
    return svc, driver, rec


async def test_a_cold_request_that_the_load_would_make_late_is_refused_at_once_and_the_load_goes_on() -> None:
    svc, driver, rec = _slow_loading()
    with pytest.raises(Unavailable) as info:
        await svc.ensure_loaded(rec, deadline=time.monotonic() + rec.slo_ms / 1e3)
    msg = info.value.message
    assert msg.startswith("cannot meet the 100 ms SLO of model 'm': it is not loaded; predicted 20")
    assert "(load 2000 ms, execute 10 ms)" in msg
    # the 2 s load plus a batch of one, rounded up
    assert info.value.retry_after_s == 3 and "retry in 3 s" in msg
    assert Q not in msg and "w1" not in msg  # nothing internal
    # the load started anyway, for the requests after it; one arriving while it runs is refused
    # from the load's own ready time, without a second load
    await _until(lambda: driver.loads == [Q])
    with pytest.raises(Unavailable):
        await svc.ensure_loaded(rec, deadline=time.monotonic() + 0.1)
    # a request with time to spare waits for it and is served
    waiting = asyncio.create_task(svc.ensure_loaded(rec, deadline=time.monotonic() + 60))
    driver.gate.set()
    assert await waiting is driver and driver.loads == [Q]


async def test_without_a_measured_load_time_a_cold_request_waits_for_the_load() -> None:
    instances = Instances("w1")
    svc = _service(instances)
    rec = _record(1)
    svc.catalog.latest = rec  # type: ignore[attr-defined]
    # nothing measured: the 1 s default is a guess and refuses nobody
    assert await svc.ensure_loaded(rec, deadline=time.monotonic() + 0.1) is instances.get("w1").driver


async def _until(cond: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_cold_request_is_refused_early_only_when_a_typical_load_is_too_slow() -> None:
    instances = Instances("w1")
    svc = _service(instances)
    rec = _record(1)
    svc.catalog.latest = rec  # type: ignore[attr-defined]
    for s in [0.05] * 9 + [2.0]:  # usually 50 ms; the p99 the planner plans with is ~2 s
        svc.predictor.observe_load(Q, "cpu", s)
    # a typical load meets the 100 ms SLO: the request waits for it rather than being refused
    assert await svc.ensure_loaded(rec, deadline=time.monotonic() + 0.1) is instances.get("w1").driver


def _counting_snapshots(svc: PlacementService) -> list[int]:
    calls: list[int] = []
    cluster = svc.cluster

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return cluster(*args, **kwargs)

    svc.cluster = counted  # type: ignore[method-assign]
    return calls


def _full() -> tuple[PlacementService, Instances, Any]:
    """One instance where nothing fits."""
    instances = Instances("w1")
    instances.get("w1").record.memory_bytes = 1
    svc = _service(instances)
    rec = _record(1)
    svc.catalog.latest = rec  # type: ignore[attr-defined]
    return svc, instances, rec


async def test_a_model_with_no_room_is_refused_again_without_planning_until_placements_change() -> None:
    svc, instances, rec = _full()
    snapshots = _counting_snapshots(svc)
    with pytest.raises(Unavailable) as first:
        await svc.ensure_loaded(rec)
    planned = len(snapshots)
    assert planned >= 1 and first.value.message.startswith("cannot load model 'm': ")
    for _ in range(50):  # a flood of requests for it: the same answer, no plan made again
        with pytest.raises(Unavailable) as again:
            await svc.ensure_loaded(rec)
        assert again.value.message == first.value.message and again.value.retry_after_s == 5
    assert len(snapshots) == planned
    assert instances.get("w1").driver.loads == []
    # an eviction or a load elsewhere (here: another replica's, seen by the watch) may make
    # room: the next request plans again
    svc._placement_changed("w1/acme__other", None, 0)
    with pytest.raises(Unavailable):
        await svc.ensure_loaded(rec)
    assert len(snapshots) > planned


async def test_a_held_refusal_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import placement.service as service

    svc, instances, rec = _full()
    monkeypatch.setattr(service, "REFUSAL_HOLD_S", 0.0)  # held for no time at all
    snapshots = _counting_snapshots(svc)
    with pytest.raises(Unavailable):
        await svc.ensure_loaded(rec)
    planned = len(snapshots)
    with pytest.raises(Unavailable):
        await svc.ensure_loaded(rec)
    assert len(snapshots) > planned


async def test_cold_requests_during_one_load_share_its_ready_estimate() -> None:
    svc, driver, rec = _slow_loading()
    with pytest.raises(Unavailable):
        await svc.ensure_loaded(rec, deadline=time.monotonic() + 0.1)
    await _until(lambda: driver.loads == [Q])
    snapshots = _counting_snapshots(svc)
    messages = []
    for _ in range(20):
        with pytest.raises(Unavailable) as info:
            await svc.ensure_loaded(rec, deadline=time.monotonic() + 0.1)
        messages.append(info.value.message)
    assert len(snapshots) == 1  # one estimate for the load in flight, not one per request
    # counted down from the load's own ready time: never later, as the load goes on
    predicted = [int(re.search(r"predicted (\d+) ms", m).group(1)) for m in messages]  # type: ignore[union-attr]
    assert all(m.startswith("cannot meet the 100 ms SLO of model 'm'") for m in messages)
    assert 1000 < predicted[0] <= 2010 and predicted == sorted(predicted, reverse=True)
    # a request with time to spare still waits for the same load and is served
    waiting = asyncio.create_task(svc.ensure_loaded(rec, deadline=time.monotonic() + 60))
    driver.gate.set()
    assert await waiting is driver and driver.loads == [Q]
    assert svc._ready == {}  # the load is over: its estimate is gone with it
