"""The scheduler core is pure (ARCHITECTURE principle 1): it imports the standard library,
``kserve.errors`` and itself only: no controlplane, no asyncio, nothing doing I/O."""

from __future__ import annotations

import pytest

from tests.support.imports import imported_modules

CORE = ("model", "quota", "instance_queue", "batch_choice", "feasibility", "scheduler")
ALLOWED = {"__future__", "bisect", "collections", "dataclasses", "heapq", "math", "typing",
           "admission", "kserve"}


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_impure(module: str) -> None:
    names = imported_modules("admission", module)
    assert {n.split(".")[0] for n in names} <= ALLOWED, names
    assert not {n for n in names if n.startswith("kserve") and n != "kserve.errors"}
