"""PlacementService._profile against fake instances: a model the instance fails is `failed`
with what to fix and left loaded nowhere; an instance that fails (went away, timed out) leaves
the model `ready`, served unprofiled (issue 11)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from controlplane.metrics import Metrics
from controlplane.services import placement_settings
from controlplane.settings import Settings
from kserve.errors import DeadlineExceeded, InferplexError, Internal, NotFound, Unavailable
from placement.service import PROFILE_NAME_PREFIX, Placed, PlacementService
from profiler.predictor import LatencyPredictor
from store.embedded import EmbeddedStore

Q = "acme__m"
PROFILED = PROFILE_NAME_PREFIX + Q
TORCH_ERROR = Internal(
    f"instance w1 failed while running {PROFILED}: inference failed for model '{PROFILED}' "
    "(pytorch_libtorch): The following operation failed in the TorchScript interpreter.\n"
    "Traceback of TorchScript (most recent call last):\n  File \"code/__torch__.py\", line 12\n"
    "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x32 and 64x128)\n")


class Driver:
    def __init__(self, infer_error: InferplexError | None = None) -> None:
        self.infer_error = infer_error
        self.held: set[str] = set()
        self.unloads: list[str] = []

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        self.held.add(name)
        return 0.0

    async def unload(self, name: str) -> None:
        self.unloads.append(name)
        if name not in self.held:
            raise NotFound(f"model '{name}' is not loaded")
        self.held.discard(name)

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        return {"model_stats": []}

    async def memory_used(self) -> int | None:
        return None

    async def infer_arrays(self, name: str, inputs: dict[str, np.ndarray], output_names: Any = None,
                           timeout_s: float | None = None) -> Any:
        if self.infer_error is not None:
            raise self.infer_error
        return SimpleNamespace(outputs={}, round_trip_s=0.001)


class Instances:
    def __init__(self, **drivers: Driver) -> None:
        self._by_id = {
            iid: SimpleNamespace(
                record=SimpleNamespace(instance_id=iid, memory_bytes=1 << 30, instance_class="cpu"),
                driver=driver, healthy=True, platforms=None)
            for iid, driver in drivers.items()
        }

    def list(self) -> list[Any]:
        return list(self._by_id.values())

    def get(self, iid: str) -> Any:
        return self._by_id.get(iid)


class Catalog:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, str]] = []

    def files(self, record: Any) -> dict[str, bytes]:
        return {"1/model.pt": b"x"}

    def triton_config(self, record: Any) -> dict[str, Any]:
        return {"name": record.qualified_name, "max_batch_size": 0,
                "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [32]}],
                "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}]}

    async def set_status(self, record: Any, status: str, reason: str = "",
                         profile: dict[str, Any] | None = None) -> Any:
        self.statuses.append((status, reason))
        return record

    async def set_progress(self, record: Any, progress: float) -> None:
        pass

    def by_qualified(self, qualified: str, version: Any = None) -> Any:
        return None


def _record(version: int = 2) -> Any:
    return SimpleNamespace(qualified_name=Q, version=version, size_bytes=10, profile=None,
                           tenant="acme", name="m", status="profiling", platform="pytorch_libtorch")


def _service(instances: Instances, catalog: Catalog) -> PlacementService:
    return PlacementService(EmbeddedStore(), cast(Any, instances), cast(Any, catalog), LatencyPredictor(),
                            Metrics(), placement_settings(Settings(profile_on_upload=True)))


async def test_a_model_the_instance_fails_to_run_is_failed_saying_what_to_fix_and_loaded_nowhere() -> None:
    profiling, other = Driver(TORCH_ERROR), Driver()
    other.held.add(Q)
    instances, catalog = Instances(w1=profiling, w2=other), Catalog()
    svc = _service(instances, catalog)
    svc._actual["w2"] = {Q: Placed("2", 10, 1.0)}  # this version placed meanwhile (another replica)
    await svc._profile(_record(2))
    [(status, reason)] = catalog.statuses
    assert status == "failed"
    assert "mat1 and mat2 shapes cannot be multiplied (1x32 and 64x128)" in reason, reason
    assert "declare the inputs and outputs" in reason and "Traceback" not in reason, reason
    assert profiling.held == set() and other.held == set()
    assert svc.placements()["w2"] == {}


async def test_another_versions_placement_stays_when_a_new_version_fails() -> None:
    profiling, serving = Driver(TORCH_ERROR), Driver()
    serving.held.add(Q)
    instances, catalog = Instances(w1=profiling, w2=serving), Catalog()
    svc = _service(instances, catalog)
    svc._actual["w2"] = {Q: Placed("1", 10, 1.0)}  # version 1 serves tenants
    await svc._profile(_record(2))
    assert catalog.statuses[0][0] == "failed"
    assert serving.held == {Q} and svc.placements()["w2"][Q].version == "1"


async def test_an_instance_that_goes_away_or_times_out_leaves_the_model_ready_unprofiled() -> None:
    for error in (Unavailable("instance w1 is unreachable while running it: connection refused"),
                  DeadlineExceeded("the client's deadline passed")):
        catalog = Catalog()
        svc = _service(Instances(w1=Driver(error)), catalog)
        await svc._profile(_record(2))
        [(status, reason)] = catalog.statuses
        assert status == "ready" and reason.startswith("not profiled: "), (error, reason)


async def test_a_one_line_runtime_error_is_shown_without_the_instance_and_model_prefixes() -> None:
    error = Internal(f"instance w1 failed while running {PROFILED}: inference failed for model "
                     f"'{PROFILED}' (onnxruntime_onnx): [ONNXRuntimeError] : 2 : Got: 32 Expected: 64")
    catalog = Catalog()
    await _service(Instances(w1=Driver(error)), catalog)._profile(_record(1))
    [(status, reason)] = catalog.statuses
    assert status == "failed"
    assert reason.startswith("the model failed when run on inputs of its declared shapes and datatypes "
                             "([ONNXRuntimeError] : 2 : Got: 32 Expected: 64): "), reason
