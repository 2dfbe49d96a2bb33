"""The repository under reloads and unloads while other threads look models up (the
gRPC server's handlers run on their own threads): a lookup sees the old model, the
new one or none, never one torn half-way; and the budget stays charged right."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from kserve.errors import InferplexError, NotFound
from tests.support import models
from worker.memory import MemoryBudget
from worker.repository import ModelRepository

NAME = "simple"


def _two_versions() -> tuple[str, dict[str, bytes]]:
    """The simple model as versions 1 and 2, both loaded (version_policy all)."""
    art = models.simple(NAME)
    config = {**art.config, "version_policy": {"all": {}}}
    return json.dumps(config), {"file:1/model.onnx": art.data, "file:2/model.onnx": art.data}


def _workdir(repo: ModelRepository) -> Path:
    model = repo.entries[NAME].model
    assert model is not None and model.workdir is not None
    return model.workdir


async def test_lookups_on_other_threads_never_see_a_half_swapped_model() -> None:
    repo = ModelRepository(MemoryBudget(8 * 2**30))
    config, files = _two_versions()
    await repo.load(NAME, config, files)

    stop = threading.Event()
    unexpected: list[BaseException] = []
    lookups = [0]

    def hammer() -> None:
        while not stop.is_set():
            try:
                for version in ("", "1", "2"):
                    model, loaded = repo.get(NAME, version)
                    assert loaded.version == (int(version) if version else 2)
                    assert sorted(model.versions) == [1, 2]
                    repo.is_ready(NAME, version)
                for row in repo.index():
                    assert row.version in ("", "1", "2")
                lookups[0] += 1
            except NotFound as exc:
                # between an unload and the next load there is no model: that answer only
                if "has no available versions" not in exc.message:
                    unexpected.append(exc)
            except BaseException as exc:  # noqa: BLE001 - the test is that nothing else is raised
                unexpected.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        cycles = 0
        # enough swaps for the lookups to land inside them, however the threads are scheduled
        while (cycles < 8 or lookups[0] < 200) and not unexpected and time.monotonic() < deadline:
            await repo.load(NAME, config, files)  # reload over a serving model
            await repo.unload(NAME)
            await repo.load(NAME, config, files)
            cycles += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not unexpected, repr(unexpected[:3])
    assert lookups[0] >= 200, "the lookup threads hardly ran"


async def test_reload_and_unload_charge_release_and_clean_up() -> None:
    budget = MemoryBudget(8 * 2**30)
    repo = ModelRepository(budget)
    config, files = _two_versions()
    await repo.load(NAME, config, files)
    first = _workdir(repo)
    assert budget.charged == {NAME: repo.entries[NAME].model.charged_bytes}

    await repo.load(NAME, config, files)
    second = _workdir(repo)
    assert budget.charged == {NAME: repo.entries[NAME].model.charged_bytes}
    assert not first.exists() and second.exists()

    # a failed reload leaves the previous model serving, charged and on disk
    with pytest.raises(InferplexError):
        await repo.load(NAME, config, {"file:1/model.onnx": models.corrupt_onnx()})
    assert repo.is_ready(NAME, "2") and _workdir(repo) == second and second.exists()
    assert budget.charged == {NAME: repo.entries[NAME].model.charged_bytes}

    await repo.unload(NAME)
    assert budget.charged == {} and not second.exists()
    assert not repo.is_ready(NAME) and repo.index()[0].reason == "unloaded"
    await repo.unload(NAME)  # again: nothing left to release
    assert budget.charged == {}
