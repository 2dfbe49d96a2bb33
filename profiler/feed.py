"""Feeding the predictor from the executions the gateway forwarded.

The basis is the instance's own compute time (compute_input + compute_infer +
compute_output of one execution): the offline profile is measured the same way
(``profile_model(timing="compute")``), so seed and live observations agree, and
transport or event-loop noise in the control plane does not enter the prediction.

Two ways in:
- in-band (``observed_exact``): the inferplex worker puts each batch's compute time
  in its response (parameter ``inferplex_compute_ns``), so every execution is
  observed exactly, paired with its dispatch-time prediction, at no I/O cost.
- statistics (``executed``), for instances that do not send it (Triton) or requests
  whose batch size the gateway could not read cheaply. After executions, one
  statistics call per (instance, model), never two at once, spaced by
  ``min_interval_s``. When exactly one execution of a batch size ran since the last
  read, its time is exact; when several did (concurrent traffic, other replicas),
  their mean is fed once. Executions already observed in-band are taken out of the
  deltas first, so none is fed twice. An instance without statistics falls back to
  the gateway's round trip, as ``ExecClock`` does when profiling it.

Predictions made at dispatch are paired with exact observations only, so the
accuracy log never flatters itself with averages.

Both ways take the execution's input elements (``elements``, ``profile.request_elements``
of the batch sent) where the gateway knows them: the predictor's size curve then
learns from live traffic too. Several executions averaged by the statistics path
carry elements only when all of them had the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kserve.errors import InferplexError
from profiler.predictor import LatencyPredictor

log = logging.getLogger(__name__)


class StatisticsSource(Protocol):
    """The part of an InstanceDriver the feed needs."""

    async def statistics(self, name: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the predictor said at dispatch time for one execution."""

    batch: int
    p50_s: float
    p99_s: float
    elements: int | None = None  # what the prediction was for, when it was by size


@dataclass(frozen=True, slots=True)
class PredictionSample:
    """A dispatch-time prediction next to the execute time then observed."""

    model: str
    instance_class: str
    batch: int
    predicted_p50_s: float
    predicted_p99_s: float
    observed_s: float
    basis: str  # "compute" (in-band or one execution between two reads) or "round_trip"
    at: float
    elements: int | None = None


def model_entries(stats: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The statistics answer's ``model_stats`` entries of ``name`` (one per version)."""
    return [e for e in stats.get("model_stats", []) or [] if e.get("name") == name]


def phases_ns(d: dict[str, Any]) -> int:
    """compute_input + compute_infer + compute_output nanoseconds of an ``inference_stats``
    or ``batch_stats`` row."""
    return sum(int((d.get(k) or {}).get("ns", 0))
               for k in ("compute_input", "compute_infer", "compute_output"))


def batch_compute_ns(stats: dict[str, Any], name: str) -> dict[int, tuple[int, int]] | None:
    """Per batch size: (executions, total compute ns) from a statistics answer; None when
    the answer has no entry for ``name`` (an instance without statistics). An entry
    without ``batch_stats`` means no executions yet (protobuf JSON leaves empty lists out)."""
    entries = model_entries(stats, name)
    if not entries:
        return None
    out: dict[int, tuple[int, int]] = {}
    for entry in entries:
        for row in entry.get("batch_stats") or []:
            size = int(row.get("batch_size", 0))
            count = int((row.get("compute_infer") or {}).get("count", 0))
            prev = out.get(size, (0, 0))
            out[size] = (prev[0] + count, prev[1] + phases_ns(row))  # summed over versions
    return out


@dataclass(slots=True)
class _Pending:
    batch: int | None
    round_trip_s: float
    prediction: Prediction | None
    elements: int | None = None


@dataclass(slots=True)
class _Source:
    driver: StatisticsSource
    instance_class: str
    pending: list[_Pending] = field(default_factory=list)
    baseline: dict[int, tuple[int, int]] | None = None
    reading: bool = False
    inband: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per batch size: (executions, compute ns) observed in-band since the last read."""


class ExecutionFeed:
    """Turns forwarded executions into predictor observations (and an accuracy log)."""

    def __init__(self, predictor: LatencyPredictor, *, min_interval_s: float = 0.0,
                 log_size: int = 20_000, wall_clock: Callable[[], float] = time.time) -> None:
        self.predictor = predictor
        self.min_interval_s = min_interval_s
        self.samples: deque[PredictionSample] = deque(maxlen=log_size)
        self.exact = 0
        """Executions observed exactly (in-band, or alone between two statistics reads)."""
        self.merged = 0
        """Executions only seen as part of a mean (several ran between two reads)."""
        self._wall = wall_clock
        self._sources: dict[tuple[str, str], _Source] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="execution-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def executed(self, instance_id: str, driver: StatisticsSource, model: str, instance_class: str,
                 batch: int | None, round_trip_s: float, prediction: Prediction | None,
                 *, elements: int | None = None) -> None:
        """One successful forward of ``model`` to ``instance_id`` (cheap: no I/O here) of
        ``batch`` rows and ``elements`` input elements, when known."""
        key = (instance_id, model)
        src = self._sources.get(key)
        if src is None or src.driver is not driver:
            src = self._sources[key] = _Source(driver, instance_class)
        src.pending.append(_Pending(batch, round_trip_s, prediction, elements))
        self._dirty.add(key)
        self._wake.set()

    def observed_exact(self, model: str, instance_class: str, batch: int, compute_s: float,
                       prediction: Prediction | None, *, instance_id: str | None = None,
                       elements: int | None = None) -> None:
        """One execution whose compute time the instance reported in its response
        (``elements``: its input elements, when known)."""
        at = self._wall()
        self.predictor.observe_exec(model, instance_class, batch, compute_s, elements=elements, at=at)
        self.exact += 1
        self._record(model, instance_class, prediction, batch, compute_s, "compute", at, elements)
        src = self._sources.get((instance_id, model)) if instance_id is not None else None
        if src is not None and src.baseline is not None:
            # the next statistics delta includes this execution: keep it from counting twice
            count, ns = src.inband.get(batch, (0, 0))
            src.inband[batch] = (count + 1, ns + round(compute_s * 1e9))

    def forget(self, model: str) -> None:
        for key in [k for k in self._sources if k[1] == model]:
            del self._sources[key]
        self._dirty = {k for k in self._dirty if k[1] != model}

    async def drain(self) -> None:
        """Process everything pending now (tests and shutdown; the loop does it otherwise)."""
        await self._read_dirty()

    # ---- internals ---------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._read_dirty()
            except Exception:  # the feed must outlive one bad answer
                log.exception("execution feed read failed")
            if self.min_interval_s > 0:
                await asyncio.sleep(self.min_interval_s)

    async def _read_dirty(self) -> None:
        keys, self._dirty = self._dirty, set()
        await asyncio.gather(*(self._read(k) for k in keys))

    async def _read(self, key: tuple[str, str]) -> None:
        src = self._sources.get(key)
        if src is None or src.reading:
            if src is not None:
                self._dirty.add(key)  # read again once the one in flight is done
            return
        src.reading = True
        pending, src.pending = src.pending, []
        model = key[1]
        try:
            try:
                now = batch_compute_ns(await src.driver.statistics(model), model)
            except InferplexError as exc:
                log.debug("statistics of %s on %s unavailable: %s", model, key[0], exc)
                now = None
            if now is None:
                self._round_trips(model, src.instance_class, pending)
                return
            before, src.baseline = src.baseline, now
            # in-band observations that arrive while this read is in flight may land on
            # either side of it; a negative remainder is skipped below
            inband, src.inband = src.inband, {}
            if before is None:
                return  # first read of this (instance, model): only a baseline
            self._deltas(model, src.instance_class, before, now, pending, inband)
        finally:
            src.reading = False
            if src.pending:
                self._dirty.add(key)
                self._wake.set()

    def _round_trips(self, model: str, instance_class: str, pending: list[_Pending]) -> None:
        at = self._wall()
        for p in pending:
            if p.batch is None:
                continue
            self._record(model, instance_class, p.prediction, p.batch, p.round_trip_s, "round_trip", at,
                         p.elements)
            self.predictor.observe_exec(model, instance_class, p.batch, p.round_trip_s,
                                        elements=p.elements, at=at)
            self.exact += 1

    def _deltas(self, model: str, instance_class: str, before: dict[int, tuple[int, int]],
                now: dict[int, tuple[int, int]], pending: list[_Pending],
                inband: dict[int, tuple[int, int]]) -> None:
        at = self._wall()
        by_batch: dict[int, list[_Pending]] = {}
        for p in pending:
            if p.batch is not None:
                by_batch.setdefault(p.batch, []).append(p)
        for batch, (count, ns) in now.items():
            c0, n0 = before.get(batch, (0, 0))
            c1, n1 = inband.get(batch, (0, 0))
            runs, spent = count - c0 - c1, ns - n0 - n1
            if runs <= 0 or spent < 0:
                continue  # nothing new, or the instance restarted (counters went back)
            seconds = spent / runs / 1e9
            mine = by_batch.get(batch, [])
            # the mean is of a size only if every execution behind it was of that size
            sizes = {p.elements for p in mine}
            elements = sizes.pop() if len(mine) == runs and len(sizes) == 1 else None
            self.predictor.observe_exec(model, instance_class, batch, seconds, elements=elements, at=at)
            if runs == 1:
                self.exact += 1
                if len(mine) == 1:
                    self._record(model, instance_class, mine[0].prediction, batch, seconds, "compute", at,
                                 elements)
            else:
                self.merged += runs

    def _record(self, model: str, instance_class: str, prediction: Prediction | None, batch: int,
                observed: float, basis: str, at: float, elements: int | None = None) -> None:
        if prediction is None or prediction.batch != batch:
            return
        self.samples.append(PredictionSample(model, instance_class, batch, prediction.p50_s,
                                             prediction.p99_s, observed, basis, at,
                                             elements if elements is not None else prediction.elements))
