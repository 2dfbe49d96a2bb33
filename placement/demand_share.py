"""Demand across replicas (issue 12): each control-plane replica sees only the requests that
reach it, so each publishes its per-model rates under ``demand/{replica_id}`` (bound to its
own lease: a replica that dies takes its entry with it), and the placement leader adds the
other replicas' rates, aged by how old they are, to its own before it plans.

Values: ``{"at": epoch seconds, "short_tau_s", "long_tau_s", "models": {name: [long, short]}}``,
only models with demand left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from placement.demand import Demand, DemandTracker, decayed, merged
from store import keys
from store.base import LeaseExpired, StateStore

log = logging.getLogger(__name__)

PUBLISH_S = 2.0
LEASE_TTL_S = 10


class DemandShare:
    def __init__(self, store: StateStore, replica_id: str, tracker: DemandTracker, *,
                 interval_s: float = PUBLISH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.replica_id = replica_id
        self.tracker = tracker
        self.interval_s = interval_s
        self._clock = clock
        self._lease: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.peers: dict[str, Demand] = {}
        """The other replicas' demand, summed, as last read (``read``)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="demand-share")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # best effort: the lease ends it anyway
            await self.store.delete(keys.demand(self.replica_id))

    async def publish(self) -> None:
        now = self._clock()
        models = {m: [round(d.rate_per_s, 6), round(d.short_rate_per_s, 6)]
                  for m, d in self.tracker.snapshot(now).items()}
        value = json.dumps({"at": time.time(), "short_tau_s": self.tracker.short_tau_s,
                            "long_tau_s": self.tracker.long_tau_s, "models": models}).encode()
        if self._lease is not None:
            try:
                await self.store.refresh_lease(self._lease)
            except LeaseExpired:
                self._lease = None
        if self._lease is None:
            self._lease = await self.store.grant_lease(LEASE_TTL_S)
        await self.store.put(keys.demand(self.replica_id), value, lease=self._lease)

    async def read(self) -> dict[str, Demand]:
        """The other replicas' demand now (each entry aged from when it was written)."""
        wall = time.time()
        parts = []
        for kv in await self.store.list_prefix(keys.DEMAND):
            if kv.key == keys.demand(self.replica_id):
                continue
            try:
                entry = json.loads(kv.value)
                age = wall - float(entry["at"])
                short_tau, long_tau = float(entry["short_tau_s"]), float(entry["long_tau_s"])
                part = {str(m): decayed(Demand(float(r[0]), float(r[1]), self.tracker.rising_ratio),
                                        age, short_tau, long_tau)
                        for m, r in entry["models"].items()}
            except (ValueError, KeyError, TypeError, IndexError):
                log.warning("ignoring an unreadable demand entry %s", kv.key)
                continue
            parts.append(part)
        self.peers = merged(*parts)
        return self.peers

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception:  # a store hiccup must not end the loop
                log.exception("publishing this replica's demand failed")
            await asyncio.sleep(self.interval_s)
