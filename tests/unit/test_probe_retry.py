"""A probe killed by a signal is run once more; a model that crashes it twice is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane import validation
from kserve.errors import InvalidArgument


def _crashing(times: int) -> tuple[list[int], Any]:
    calls: list[int] = []

    async def probe(path: Path, *, name: str, timeout_s: float) -> dict[str, Any]:
        calls.append(1)
        if len(calls) <= times:
            raise validation._ProbeCrashed(InvalidArgument("the model file could not be checked"))
        return {"format": "onnx"}

    return calls, probe


async def test_one_crash_is_run_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls, probe = _crashing(1)
    monkeypatch.setattr(validation, "_probe_once", probe)
    assert await validation.probe_model(tmp_path / "m.onnx", name="m") == {"format": "onnx"}
    assert len(calls) == 2


async def test_two_crashes_refuse_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls, probe = _crashing(2)
    monkeypatch.setattr(validation, "_probe_once", probe)
    with pytest.raises(InvalidArgument, match="could not be checked"):
        await validation.probe_model(tmp_path / "m.onnx", name="m")
    assert len(calls) == 2
