"""Offline profiling: measure one model's load and execute latency on one instance.

Runs only through the ``InstanceDriver`` ABC, so the same code profiles on Triton
and on ``inferplex worker``. The caller picks an idle instance (or a slot granted
by the scheduler) and a dedicated instance-level name, so profiling never shares
a loaded model with tenants' traffic.

A model with dynamic dimensions besides the batch (a transformer's sequence length,
-1 in the config's dims) is measured at several values of them per batch size
(``DYNAMIC_SIZES``, within ``max_profile_elements``), each point recorded with its
input elements in ``ClassProfile.sizes``, so predictions follow the request's size.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from kserve.errors import DeadlineExceeded, InferplexError, InvalidArgument
from placement.driver import InstanceDriver, LoadSeconds, reported_memory_bytes
from profiler.feed import model_entries, phases_ns
from profiler.inputs import (  # re-exported: callers and tests import them from here
    DYNAMIC_SIZES,
    EXERCISE_INT_MAX,
    MAX_PROFILE_ELEMENTS,
    InputSpec,
    default_batch_sizes,
    dynamic_sizes,
    execution_elements,
    has_dynamic_dims,
    input_specs,
    max_batch_size,
    synthetic_inputs,
)
from profiler.profile import ClassProfile, LatencyStats, SizePoint

__all__ = ["DYNAMIC_SIZES", "EXERCISE_INT_MAX", "MAX_PROFILE_ELEMENTS", "ExecClock", "InputSpec",
           "compute_ns", "default_batch_sizes", "dynamic_sizes", "execution_elements", "exercise",
           "has_dynamic_dims", "input_specs", "max_batch_size", "memory_from_statistics",
           "profile_model", "synthetic_inputs"]

log = logging.getLogger(__name__)

FilesSource = dict[str, bytes] | Callable[[], Awaitable[dict[str, bytes]] | dict[str, bytes]]
"""Model files keyed ``"<version>/<filename>"``, or a callable fetching them; the
first call is timed as the cold load (artifact store cold), later calls as warm."""

Progress = Callable[[str, float], Awaitable[None] | None]
"""Called with (stage, fraction done) as profiling advances; may be async (e.g. a store write)."""

# a point slower than the execution limit over this is the largest size profiled
SLOW_POINT_DIVISOR = 8.0
# the exercise run's bound: this many times the measured p99 at that batch, at least
EXERCISE_FACTOR, EXERCISE_MIN_S = 10.0, 0.05


async def exercise(driver: InstanceDriver, name: str, specs: list[InputSpec], batch: int, batched: bool,
                   rng: np.random.Generator, output_names: list[str] | None, timeout_s: float) -> None:
    """One execution with ``exercise`` inputs under ``timeout_s``: an execution the
    instance has to stop there means the model runs as long as its inputs tell it to,
    and the upload is refused. Any other refusal of these inputs is the model's right."""
    inputs = synthetic_inputs(specs, batch, batched, rng, exercise=True)
    try:
        await driver.infer_arrays(name, inputs, output_names, timeout_s=timeout_s)
    except DeadlineExceeded:
        raise InvalidArgument(
            f"an execution with large integer inputs (up to {EXERCISE_INT_MAX}) ran past "
            f"{timeout_s:g} s and was stopped: the model's running time must not be controlled by "
            "its inputs (e.g. an ONNX Loop whose trip count is an input); bound it in the graph"
        ) from None
    except InferplexError as exc:
        log.info("profiling %s: the model refused exercise inputs (fine): %s", name, exc.message)


async def _fetch(files: FilesSource) -> dict[str, bytes]:
    if isinstance(files, dict):
        return files
    result = files()
    if inspect.isawaitable(result):
        result = await result
    return result


def memory_from_statistics(stats: dict[str, Any], name: str) -> int | None:
    """Bytes the instance reports for ``name`` (Triton's ``memory_usage``), if any."""
    entries = model_entries(stats, name)
    if not entries:
        return None
    return reported_memory_bytes(entries[0])


def compute_ns(stats: dict[str, Any], name: str) -> int | None:
    """Total compute_input + compute_infer + compute_output nanoseconds the instance's
    statistics extension reports for ``name`` (summed over versions)."""
    entries = model_entries(stats, name)
    if not entries:
        return None
    return sum(phases_ns(e.get("inference_stats") or {}) for e in entries)


class ExecClock:
    """What one execution 'took': the client's round trip, or (``compute``) the
    instance's own compute time from its statistics extension, which leaves out
    transport and the client's event loop. Both Triton and the worker keep these."""

    def __init__(self, driver: InstanceDriver, name: str, timing: str,
                 timeout_s: float | None = None) -> None:
        if timing not in ("round_trip", "compute"):
            raise ValueError(f"timing must be 'round_trip' or 'compute', got {timing!r}")
        self.driver, self.name, self.timing, self.timeout_s = driver, name, timing, timeout_s
        self._last_ns: int | None = None

    async def run(self, inputs: dict[str, np.ndarray], output_names: list[str] | None) -> float:
        if self.timing == "round_trip":
            return (await self.driver.infer_arrays(self.name, inputs, output_names,
                                                   timeout_s=self.timeout_s)).round_trip_s
        if self._last_ns is None:
            self._last_ns = await self._read()
        timing = await self.driver.infer_arrays(self.name, inputs, output_names, timeout_s=self.timeout_s)
        now = await self._read()
        before, self._last_ns = self._last_ns, now
        if now is None or before is None or now <= before:
            return timing.round_trip_s  # instance without compute statistics
        return (now - before) / 1e9

    def reset(self) -> None:
        """Forget the last reading (other executions ran since, e.g. warm-up)."""
        self._last_ns = None

    async def _read(self) -> int | None:
        return compute_ns(await self.driver.statistics(self.name), self.name)


async def _measure(driver: InstanceDriver, name: str, inputs: dict[str, np.ndarray],
                   output_names: list[str] | None, exec_clock: ExecClock, warmup: int,
                   runs: int, chunk: int, stable_within: float, exec_timeout_s: float | None,
                   deadline: float, clock: Callable[[], float], min_runs: int | None = None) -> list[float]:
    """One profile point: ``warmup`` executions, then chunks of ``chunk`` until p50 and
    p99 are stable, ``runs`` are done or ``deadline`` passes (after one chunk at least,
    or with ``min_runs``, after that many once the deadline has passed)."""
    for _ in range(warmup):
        await driver.infer_arrays(name, inputs, output_names, timeout_s=exec_timeout_s)
    exec_clock.reset()
    samples: list[float] = []
    prev: LatencyStats | None = None
    while len(samples) < runs:
        for _ in range(min(chunk, runs - len(samples))):
            samples.append(await exec_clock.run(inputs, output_names))
            if min_runs is not None and len(samples) >= min_runs and clock() >= deadline:
                return samples
        cur = LatencyStats.of(samples)
        if _stable(prev, cur, stable_within) or clock() >= deadline:
            break
        prev = cur
    return samples


def _stable(prev: LatencyStats | None, cur: LatencyStats, tolerance: float) -> bool:
    if prev is None or prev.p50_s <= 0 or prev.p99_s <= 0:
        return False
    return (abs(cur.p50_s - prev.p50_s) <= tolerance * prev.p50_s
            and abs(cur.p99_s - prev.p99_s) <= tolerance * prev.p99_s)


async def profile_model(
    driver: InstanceDriver,
    name: str,
    config: dict[str, Any],
    files: FilesSource,
    *,
    batch_sizes: list[int] | None = None,
    warmup: int = 5,
    runs_per_batch: int = 200,
    min_runs_per_batch: int = 30,
    stable_within: float = 0.05,
    loads: int = 3,
    max_seconds: float = 120.0,
    timing: str = "round_trip",
    exec_timeout_s: float | None = None,
    keep_loaded: bool = False,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
    wall_clock: Callable[[], float] = time.time,
    seed: int = 0,
    dynamic_dim_sizes: Sequence[int] = DYNAMIC_SIZES,
    max_profile_elements: int = MAX_PROFILE_ELEMENTS,
) -> ClassProfile:
    """Profile ``name`` on ``driver``'s instance and return its ``ClassProfile``.

    Loads ``loads`` times (the first cold, the rest warm; unloading in between; a load
    the instance served from its artifact cache is warm even when first, so a model the
    instance had cached gets no cold time),
    then per batch size runs ``warmup`` executions and then chunks of
    ``min_runs_per_batch`` until p50 and p99 move by less than ``stable_within``
    (relative) between chunks, ``runs_per_batch`` runs, or the batch's share of
    ``max_seconds`` is spent. Every batch size gets at least one chunk, so a
    profile never lacks a requested size. A model with dynamic dims besides the batch
    is measured at each batch size for each of ``dynamic_dim_sizes`` (see
    ``dynamic_sizes``; ``max_seconds`` is shared by every point); one the model refuses
    (above 1) is skipped with the larger ones. Every point lands in the profile's
    ``sizes`` with its elements, those at size 1 in ``exec`` too. With ``exec_timeout_s``,
    every execution is bounded by it, and the model is last run once on ``exercise``
    inputs (see there), bounded by EXERCISE_FACTOR times its measured p99 at the largest
    batch. ``timing`` is what an execution's time means (see ``ExecClock``); the
    predictor must be fed the same kind later.
    Unloads at the end unless ``keep_loaded``.
    """
    if loads < 1 or runs_per_batch < 1 or min_runs_per_batch < 1 or warmup < 0:
        raise ValueError("loads, runs_per_batch and min_runs_per_batch must be >= 1, warmup >= 0")
    specs = input_specs(config)
    max_batch = max_batch_size(config)
    batched = max_batch > 0
    sizes = sorted(set(batch_sizes)) if batch_sizes else default_batch_sizes(max_batch)
    if sizes[0] < 1 or (sizes[-1] > max(1, max_batch)):
        raise InvalidArgument(f"batch sizes {sizes} must be within 1..{max(1, max_batch)} "
                              f"(the config's max_batch_size is {max_batch})")
    exec_clock = ExecClock(driver, name, timing, exec_timeout_s)
    rng = np.random.default_rng(seed)
    output_names = [o["name"] for o in config.get("output", []) if o.get("name")] or None
    started = clock()
    points = [(b, v) for b in sizes
              for v in dynamic_sizes(specs, b, batched, dynamic_dim_sizes, max_profile_elements)]
    total_units = loads + len(points)
    done_units = 0

    async def report(stage: str) -> None:
        if progress is not None:
            result = progress(stage, done_units / total_units)
            if inspect.isawaitable(result):
                await result

    cold: list[float] = []
    warm: list[float] = []
    loaded = False
    used_before = await driver.memory_used()
    try:
        for i in range(loads):
            kind = "cold" if i == 0 else "warm"
            await report(f"load {kind} {i + 1}/{loads}")
            if loaded:
                await driver.unload(name)
                loaded = False
            t0 = clock()
            model_files = await _fetch(files)
            took = await driver.load(name, config, model_files)
            # warm: the bytes were already on the instance (its artifact cache had them, or
            # this is a reload after the first); cold: the first load, its files sent
            cached = isinstance(took, LoadSeconds) and took.cached
            (warm if i > 0 or cached else cold).append(clock() - t0)
            loaded = True
            done_units += 1

        memory = memory_from_statistics(await driver.statistics(name), name)
        if memory is None and used_before is not None:
            # on an idle instance, what the model added is what it costs
            used_after = await driver.memory_used()
            if used_after is not None and used_after > used_before:
                memory = used_after - used_before

        exec_stats: dict[int, LatencyStats] = {}
        size_points: list[SizePoint] = []
        samples_total = 0
        refused_from: int | None = None  # the smallest dynamic size the model would not take
        too_slow_from: int | None = None  # elements past which an execution nears the time limit
        for k, (batch, size) in enumerate(points):
            elements = max(1, execution_elements(specs, batch, batched, size))
            if size > 1 and ((refused_from is not None and size >= refused_from)
                             or (too_slow_from is not None and elements >= too_slow_from)):
                done_units += 1
                continue
            await report(f"batch {batch}" if size == 1 else f"batch {batch} size {size}")
            remaining = max(0.0, max_seconds - (clock() - started))
            point_deadline = clock() + remaining / (len(points) - k)
            inputs = synthetic_inputs(specs, batch, batched, rng, size=size)
            try:
                # past size 1 the batch is warm (one run re-plans for the shape), and a few
                # runs of a large point are enough once its share of max_seconds is spent
                samples = await _measure(driver, name, inputs, output_names, exec_clock,
                                         warmup if size == 1 else min(warmup, 1), runs_per_batch,
                                         min_runs_per_batch, stable_within, exec_timeout_s,
                                         point_deadline, clock, None if size == 1 else 3)
            except InferplexError as exc:
                if size == 1:
                    raise  # the smallest input refused: the model cannot be served
                # dynamic dims have bounds the config does not state (positions, image sizes):
                # serve the sizes it took; larger ones are extrapolated, conservatively
                log.warning("profiling %s: batch %d with dynamic dims at %d refused (%s); "
                            "not profiling that size or larger", name, batch, size, exc.message)
                refused_from = size if refused_from is None else min(refused_from, size)
                done_units += 1
                continue
            stats = LatencyStats.of(samples)
            if size == 1:
                exec_stats[batch] = stats
            size_points.append(SizePoint(elements=elements, batch=batch, stats=stats))
            if exec_timeout_s is not None and stats.p99_s > exec_timeout_s / SLOW_POINT_DIVISOR:
                # the next size would be stopped at the limit (and stops count toward
                # quarantine): the curve extrapolates past here instead
                too_slow_from = elements + 1 if too_slow_from is None else min(too_slow_from, elements + 1)
            samples_total += len(samples)
            done_units += 1
            log.info("profiled %s batch %d size %d: p50 %.6fs p99 %.6fs over %d runs", name, batch,
                     size, stats.p50_s, stats.p99_s, len(samples))
        if exec_timeout_s is not None:
            # far longer than the measured time is "runs as long as its inputs say"; short,
            # because on a shared instance it holds everyone else's requests that long
            bound = min(exec_timeout_s, max(EXERCISE_FACTOR * exec_stats[sizes[-1]].p99_s, EXERCISE_MIN_S))
            await exercise(driver, name, specs, sizes[-1], batched, rng, output_names, bound)
        await report("done")
    finally:
        if loaded and not keep_loaded:
            try:
                await driver.unload(name)
            except InferplexError as exc:  # the profile (or the original error) matters more
                log.warning("could not unload %s after profiling: %s", name, exc)

    return ClassProfile(
        load_time_cold_s=LatencyStats.of(cold) if cold else None,
        load_time_warm_s=LatencyStats.of(warm) if warm else None,
        exec=exec_stats,
        sizes=size_points,
        memory_bytes=memory,
        observations=len(cold) + len(warm) + samples_total,
        updated_at=wall_clock(),
    )
