"""The executor's promise: at most ``concurrency`` batches run at once, whether they
come from the event loop (HTTP) or run on a caller's own thread (gRPC handlers)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from worker.executor import Executor
from worker.runtimes.base import Runtime


class OverlapProbe(Runtime):
    """Counts how many batches are inside ``infer`` at the same moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.batches = 0

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        return inputs

    def infer(self, prepared: Any, output_names: list[str], deadline_ns: int | None = None) -> Any:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.002)  # the batch's work: long enough for others to try to overlap it
        with self._lock:
            self.active -= 1
            self.batches += 1
        return prepared

    def collect(self, raw: Any, output_names: list[str]) -> dict[str, np.ndarray]:
        return raw


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_batches_from_the_loop_and_from_threads_never_exceed_the_concurrency(concurrency: int) -> None:
    executor = Executor(concurrency)
    probe = OverlapProbe()
    x = {"X": np.zeros(1, np.float32)}
    try:
        def from_thread() -> None:
            for _ in range(10):
                out, timing = executor.run_blocking(probe, x, ["X"])
                assert out is x and timing.enqueued <= timing.started <= timing.finished

        threads = [threading.Thread(target=from_thread) for _ in range(4)]
        for t in threads:
            t.start()
        await asyncio.gather(*(executor.run(probe, x, ["X"]) for _ in range(40)))
        await asyncio.to_thread(lambda: [t.join(timeout=30) for t in threads])
        assert probe.batches == 80
        assert probe.most == concurrency  # reached (there was contention), never exceeded
    finally:
        executor.shutdown()


def test_a_failing_batch_releases_its_permit() -> None:
    class Broken(OverlapProbe):
        def infer(self, prepared: Any, output_names: list[str], deadline_ns: int | None = None) -> Any:
            raise RuntimeError("model failed")

    executor = Executor(1)
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            executor.run_blocking(Broken(), {}, [])
        probe = OverlapProbe()
        executor.run_blocking(probe, {}, [])
        assert probe.batches == 1
    finally:
        executor.shutdown()
