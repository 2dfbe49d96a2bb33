"""The scheduler's async shell: applies the core's decisions on the event loop.

Every admitted request waits on a future. When the core dispatches a batch, the shell
runs it through ``run_batch`` (the gateway's: merge the callers' requests, send one
inference to the instance, split the answer) and resolves each caller's future with
its own answer; when the core drops a request, its future fails with the core's
reason. The shell wakes the core when something changes (an arrival, a completion, a
caller that went away) and at the next moment a queued request stops being able to
meet its deadline (``Scheduler.next_expiry_s``), so drops happen on time with no
polling. One shell per control-plane replica; the core is not shared across replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from admission.model import Dispatch, Drop, PendingRequest
from admission.overhead import RollingPercentile
from admission.scheduler import Scheduler

log = logging.getLogger(__name__)

# what run_batch returns per request: its answer, or the error to raise to that caller
BatchRunner = Callable[[Dispatch, list[Any]], Awaitable[tuple[list[Any], float | None]]]

# How often the shell measures how late the event loop runs a timer: a request waits
# about that long before its handler reaches the core, and again after its answer.
LAG_PROBE_S = 0.02


@dataclass
class _Waiting:
    future: asyncio.Future[Any]
    payload: Any


class SchedulingShell:
    """``run_batch(dispatch, payloads)`` returns (one result or exception per payload, in
    dispatch order; the batch's observed execute time in seconds or None)."""

    def __init__(self, core: Scheduler, run_batch: BatchRunner,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.run_batch = run_batch
        self.clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._lag = RollingPercentile(window=50, percentile=90.0, refresh_every=10)  # the last second
        self._probe: asyncio.TimerHandle | None = None

    def _probe_lag(self, due: float | None = None) -> None:
        """Every ``LAG_PROBE_S``: how late this callback ran is the loop's lag now; twice
        its recent p90 (the wait before a request reaches the core, and after its answer)
        is what admission adds for the shell."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if due is not None:
            self._lag.add(max(0.0, now - due))
            self.core.set_external_delay(2 * self._lag.value)
        self._probe = loop.call_at(now + LAG_PROBE_S, self._probe_lag, now + LAG_PROBE_S)

    async def submit(self, request: PendingRequest, payload: Any) -> Any:
        """Admit, queue and wait for ``request``'s answer; raises the refusal or drop."""
        if self._probe is None:
            self._probe_lag()
        refusal = self.core.admit(request, self.clock())
        if refusal is not None:
            raise refusal.error()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = _Waiting(future, payload)
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            # the caller went away: a queued request leaves the queue; a dispatched one
            # finishes with its batch (its answer is dropped)
            if self._waiting.pop(request.id, None) is not None:
                self.core.cancel(request.id)
                self._wake()
            raise

    def _wake(self) -> None:
        for decision in self.core.schedule(self.clock()):
            if isinstance(decision, Drop):
                waiting = self._waiting.pop(decision.request_id, None)
                if waiting is not None and not waiting.future.done():
                    waiting.future.set_exception(decision.error())
            else:
                self._start(decision)
        self._arm()

    def _start(self, dispatch: Dispatch) -> None:
        members = [self._waiting.pop(rid) for rid in dispatch.request_ids]
        task = asyncio.create_task(self._run(dispatch, members))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, dispatch: Dispatch, members: list[_Waiting]) -> None:
        observed: float | None = None
        try:
            results, observed = await self.run_batch(dispatch, [m.payload for m in members])
        except Exception as exc:  # the whole batch failed: every caller gets the error
            log.info("batch %s of %s on %s failed: %s", dispatch.batch_id, dispatch.model,
                     dispatch.instance_id, exc)
            results = [exc] * len(members)
        finally:
            self.core.complete(dispatch.batch_id, self.clock(), observed)
        for member, result in zip(members, results, strict=True):
            if member.future.done():
                continue
            if isinstance(result, BaseException):
                member.future.set_exception(result)
            else:
                member.future.set_result(result)
        self._wake()

    def _arm(self) -> None:
        """Wake again when the next queued request would expire."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        expiry = self.core.next_expiry_s()
        if expiry is not None:
            delay = max(0.001, expiry - self.clock())  # a past expiry: next tick, not a spin
            self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
