"""The scheduler core is pure (ARCHITECTURE principle 1): it imports the standard library,
``kserve.errors`` and itself only: no controlplane, no asyncio, nothing doing I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = ("model", "quota", "instance_queue", "batch_choice", "feasibility", "scheduler")
ALLOWED = {"__future__", "bisect", "collections", "dataclasses", "heapq", "math", "typing",
           "admission", "kserve"}


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_impure(module: str) -> None:
    path = Path(__file__).resolve().parents[2] / "admission" / f"{module}.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    assert {n.split(".")[0] for n in names} <= ALLOWED, names
    assert not {n for n in names if n.startswith("kserve") and n != "kserve.errors"}
