"""Leader election on a StateStore: a lease plus create-if-absent.

A candidate grants a lease and creates ``key`` bound to it (one transaction on
etcd). Whoever creates it leads while it keeps the lease alive (refresh every
ttl/3). The leader steps down, and says so, the moment it cannot prove it still
holds the key: the lease expired, the key was deleted or taken over, or etcd has
not confirmed a refresh for 2/3 of the TTL (so it stops acting before etcd could
hand the key to someone else). Followers watch the key and campaign as soon as it
is deleted or expires, so failover after a crash takes at most one TTL.

A crashed leader simply stops refreshing; ``stop()`` (graceful shutdown) also
revokes the lease so a follower takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable

from store.base import LeaseExpired, StateStore, StoreUnavailable, cancel_and_wait

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None] | None]


class LeaderElection:
    def __init__(
        self,
        store: StateStore,
        key: str,
        identity: str,
        ttl_s: int = 5,
        *,
        on_elected: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"leader TTL must be at least 1 s, got {ttl_s}")
        self.store = store
        self.key = key
        self.identity = identity
        self.ttl_s = ttl_s
        self.on_elected = on_elected
        self.on_lost = on_lost
        # Set while this candidate leads; cleared when it steps down.
        self.elected = asyncio.Event()
        self.terms = 0  # how many times this candidate has been elected
        self._lease: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.elected.is_set()

    @property
    def lease_id(self) -> int | None:
        """The lease backing the current term (None when not leading)."""
        return self._lease if self.is_leader else None

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"leader-election {self.key}"
            )
        return self._task

    async def stop(self) -> None:
        """Stop campaigning and resign (followers take over without waiting for the TTL)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)  # run() clears `elected` as it ends; on_lost is not called
            if not task.cancelled() and task.exception() is not None:
                log.warning("leader election task ended with %r", task.exception())
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(StoreUnavailable, LeaseExpired):
                await self.store.revoke_lease(lease)
            log.info("%s resigned leadership of %s", self.identity, self.key)

    async def run(self) -> None:
        """Campaign forever; never dies on an error (it logs, backs off and retries)."""
        backoff = 0.2
        try:
            while True:
                try:
                    await self._campaign()
                    backoff = 0.2
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("election for %s failed (%s); retrying in %.1fs",
                                self.key, exc, backoff)
                    await self._step_down(f"error: {exc}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.ttl_s / 2)
        finally:
            # Cancelled (shutdown or crash-like stop): stop claiming leadership locally.
            # The lease is left to expire unless stop() revokes it.
            self.elected.clear()

    async def _campaign(self) -> None:
        lease = await self.store.grant_lease(self.ttl_s)
        try:
            rev = await self.store.create(self.key, self.identity.encode(), lease=lease)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.revoke_lease(lease)
            raise
        if rev is None:
            with contextlib.suppress(StoreUnavailable, LeaseExpired):
                await self.store.revoke_lease(lease)
            await self._wait_for_vacancy()
            return
        self._lease = lease
        self.terms += 1
        self.elected.set()
        log.info("%s elected leader of %s (lease %x, term %d)",
                 self.identity, self.key, lease, self.terms)
        await self._notify(self.on_elected)
        reason = await self._hold(lease)
        await self._step_down(reason)

    async def _hold(self, lease: int) -> str:
        """Keep the lease alive; return why leadership ended."""
        loop = asyncio.get_running_loop()
        confirmed = loop.time()
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            sent = loop.time()
            try:
                await self.store.refresh_lease(lease)
                kv = await self.store.get(self.key)
            except LeaseExpired:
                return "lease expired"
            except StoreUnavailable as exc:
                # etcd's clock started no earlier than `confirmed`; leave a margin.
                if loop.time() - confirmed > self.ttl_s * 2 / 3:
                    return f"store unreachable for too long ({exc})"
                continue
            if kv is None or kv.lease != lease:
                return "leader key deleted or taken over"
            confirmed = sent

    async def _step_down(self, reason: str) -> None:
        lease, self._lease = self._lease, None
        if not self.is_leader:
            return
        self.elected.clear()
        log.warning("%s lost leadership of %s: %s", self.identity, self.key, reason)
        if lease is not None:
            with contextlib.suppress(Exception):
                await self.store.revoke_lease(lease)
        await self._notify(self.on_lost)

    async def _wait_for_vacancy(self) -> None:
        """Return once the leader key is gone (or may be: re-checked every TTL)."""
        while True:
            kv = await self.store.get(self.key)
            if kv is None:
                return
            watch = self.store.watch_prefix(self.key, start_revision=kv.revision + 1)
            try:
                async with asyncio.timeout(self.ttl_s):
                    async for ev in watch:
                        if ev.key == self.key and ev.type == "delete":
                            return
            except TimeoutError:
                pass  # re-read: guards against a watch that silently stalled
            finally:
                await watch.aclose()  # type: ignore[attr-defined]

    async def _notify(self, callback: Callback | None) -> None:
        if callback is None:
            return
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("leader callback for %s failed", self.key)
