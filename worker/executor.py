"""Runs batches off the event loop: by default one thread, one batch at a time, so
a model's execute time does not depend on what else is running in the worker."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from worker.runtimes import Runtime
from worker.stats import ExecTiming


class Executor:
    def __init__(self, concurrency: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inferplex-exec")

    async def run(self, runtime: Runtime, inputs: dict[str, np.ndarray],
                  output_names: list[str]) -> tuple[dict[str, np.ndarray], ExecTiming]:
        enqueued = time.monotonic_ns()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _execute, runtime, inputs, output_names, enqueued)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _execute(runtime: Runtime, inputs: dict[str, np.ndarray], output_names: list[str],
             enqueued: int) -> tuple[dict[str, np.ndarray], ExecTiming]:
    started = time.monotonic_ns()
    prepared = runtime.prepare(inputs)
    inputs_ready = time.monotonic_ns()
    raw = runtime.infer(prepared, output_names)
    inferred = time.monotonic_ns()
    outputs = runtime.collect(raw, output_names)
    finished = time.monotonic_ns()
    return outputs, ExecTiming(enqueued, started, inputs_ready, inferred, finished)
