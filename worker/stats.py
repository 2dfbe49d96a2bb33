"""Triton's statistics extension: per model version counts and nanoseconds.

Recorded after each request completes, from the timestamps the executor thread
took, by the thread that served the request (the event loop for HTTP, a gRPC
server thread for gRPC), so each model's numbers are guarded by a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(frozen=True, slots=True)
class ExecTiming:
    """Monotonic nanosecond timestamps around one batch on the executor."""

    enqueued: int
    started: int
    inputs_ready: int
    inferred: int
    finished: int

    @property
    def queue_ns(self) -> int:
        return self.started - self.enqueued


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_success(self, batch_size: int, timing: ExecTiming, total_ns: int) -> None:
        with self._lock:
            self._record_success(batch_size, timing, total_ns)

    def _record_success(self, batch_size: int, timing: ExecTiming, total_ns: int) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += batch_size
        self.execution_count += 1  # no dynamic batching inside the worker: one request, one batch
        self.success.add(total_ns)
        self.queue.add(timing.queue_ns)
        phases = (timing.inputs_ready - timing.started, timing.inferred - timing.inputs_ready,
                  timing.finished - timing.inferred)
        self.compute_input.add(phases[0])
        self.compute_infer.add(phases[1])
        self.compute_output.add(phases[2])
        batch = self.batches.setdefault(batch_size, BatchStats())
        batch.compute_input.add(phases[0])
        batch.compute_infer.add(phases[1])
        batch.compute_output.add(phases[2])

    def record_failure(self, total_ns: int) -> None:
        with self._lock:
            self.fail.add(total_ns)

    def json(self, name: str, version: str) -> dict[str, Any]:
        """The HTTP form (``v2/models/{m}/stats``), one ``model_stats`` entry."""
        with self._lock:
            return self._json(name, version)

    def _json(self, name: str, version: str) -> dict[str, Any]:
        zero = Duration().json()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "response_stats": {},  # Triton's per-response (decoupled) statistics: none here
            "batch_stats": [
                {"batch_size": size, "compute_input": b.compute_input.json(),
                 "compute_infer": b.compute_infer.json(), "compute_output": b.compute_output.json()}
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
