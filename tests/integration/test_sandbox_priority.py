"""Loads run in the worker's spare CPU time: a model host loads at the lowest priority and
serves at the worker's own, every thread of it (a runtime's threads started while loading
inherit the loading priority and must come back too)."""

from __future__ import annotations

import json
import os

import pytest

from tests.support import models
from worker.memory import MemoryBudget
from worker.repository import ModelRepository
from worker.sandbox.client import LOAD_NICE, can_restore_priority

pytestmark = pytest.mark.skipif(not can_restore_priority(), reason="this process may not raise a priority again")


def _nices(pid: int) -> list[int]:
    return [os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")]


async def test_a_host_loads_at_the_lowest_priority_and_serves_at_the_workers() -> None:
    repo = ModelRepository(MemoryBudget(2**30))
    serve_nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert repo.zygote.load_nice == LOAD_NICE and repo.zygote.serve_nice == serve_nice
    spawned: list[tuple[int, list[int]]] = []
    spawn = repo.zygote.spawn

    def spy(request):
        sock, pidfd, pid = spawn(request)
        spawned.append((pid, _nices(pid)))  # before the worker has read its ready message
        return sock, pidfd, pid

    repo.zygote.spawn = spy  # type: ignore[method-assign]
    try:
        art = models.simple("simple")
        await repo.load("simple", json.dumps(art.config), {"file:1/model.onnx": art.data})
        (pid, while_loading), = spawned
        assert while_loading and set(while_loading) == {LOAD_NICE}
        after = _nices(pid)
        assert len(after) >= 1 and set(after) == {serve_nice}, after
        # and it serves
        model, loaded = repo.get("simple", "")
        assert model is not None and loaded.version == 1
    finally:
        repo.close()


def test_a_priority_is_not_lowered_where_it_could_not_come_back(monkeypatch) -> None:
    import worker.sandbox.client as client

    monkeypatch.setattr(client, "can_restore_priority", lambda: False)
    z = client.Zygote(1)
    assert z.load_nice is None
    z.loaded(os.getpid())  # a no-op: nothing was lowered
    assert os.getpriority(os.PRIO_PROCESS, 0) == z.serve_nice
