"""PrefixCache: an in-memory copy of one key prefix, kept current by a watch.

The request path reads these caches, never etcd: a replica lists the prefix once,
then applies watch events from the list's revision + 1, so a write made through any
replica shows up here within the watch lag. When the watch cannot continue (history
compacted, watcher fell behind) the cache relists and reports every difference to
the change callback, so consumers never miss a change, they may only see it late.
The initial list is reported too, so a consumer can build its state from callbacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from store.base import (
    KeyValue,
    StateStore,
    WatchCompacted,
    WatchEvent,
    cancel_and_wait,
)

log = logging.getLogger(__name__)

# Called as on_change(key, value or None when deleted, revision).
ChangeCallback = Callable[[str, Any | None, int], None]

# How long a replica waits for its own cache to show a write it just made.
CATCH_UP_S = 5.0


class PrefixCache:
    def __init__(
        self,
        store: StateStore,
        prefix: str,
        *,
        on_change: ChangeCallback | None = None,
        decode: Callable[[bytes], Any] = json.loads,
        retry_s: float = 0.5,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.on_change = on_change
        self._decode = decode
        self._retry_s = retry_s
        self._items: dict[str, tuple[Any, int]] = {}
        # The cache reflects every write to the prefix up to this store revision.
        self.revision = 0
        self.relists = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- reading -------------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def get_with_revision(self, key: str) -> tuple[Any, int] | None:
        """(value, mod revision): the revision to CAS on when writing it back."""
        return self._items.get(key)

    def items(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, (v, _) in sorted(self._items.items())]

    def keys(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    async def wait_for(self, pred: Callable[[PrefixCache], bool], within_s: float = 10.0) -> None:
        """Wait until ``pred(cache)`` holds; raises TimeoutError after ``within_s``."""
        async with asyncio.timeout(within_s):
            while True:
                changed = self._changed
                if pred(self):
                    return
                await changed.wait()

    async def caught_up(self, revision: int, within_s: float = CATCH_UP_S) -> bool:
        """Wait until the cache reflects every write to its prefix up to ``revision`` (one
        just made through this replica, so that it shows here at once). After ``within_s``
        logs a warning and returns False: the write stands, only this cache is late."""
        return await self._settle(lambda c: c.revision >= revision, f"revision {revision}", within_s)

    async def caught_up_with_deletes(self, deleted: Iterable[KeyValue],
                                     within_s: float = CATCH_UP_S) -> bool:
        """``caught_up`` for keys just deleted, given as read before the delete: each is gone
        from the cache or holds a later write. (Waiting for the store's current revision
        instead could last ``within_s``: writes under other prefixes never reach this cache.)"""
        gone = [(kv.key, kv.revision) for kv in deleted]

        def applied(c: PrefixCache) -> bool:
            return all((item := c._items.get(key)) is None or item[1] > rev for key, rev in gone)

        return await self._settle(applied, f"{len(gone)} deletes", within_s)

    async def _settle(self, pred: Callable[[PrefixCache], bool], what: str, within_s: float) -> bool:
        try:
            await self.wait_for(pred, within_s)
            return True
        except TimeoutError:
            log.warning("cache %s has not caught up with %s after %.0fs", self.prefix, what, within_s)
            return False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load the prefix (raises StoreUnavailable if the store is down), then follow it."""
        await self._relist()
        self._task = asyncio.get_running_loop().create_task(
            self._follow(), name=f"prefix-cache {self.prefix}"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    # -- internals -----------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                watch = self.store.watch_prefix(self.prefix, start_revision=self.revision + 1)
                try:
                    async for event in watch:
                        self._apply(event)
                finally:
                    await watch.aclose()  # type: ignore[attr-defined]
                return  # the store was closed
            except asyncio.CancelledError:
                raise
            except WatchCompacted as exc:
                log.info("cache %s must relist: %s", self.prefix, exc)
            except Exception:
                log.exception("cache %s watch failed; relisting", self.prefix)
                await asyncio.sleep(self._retry_s)
            await self._relist_until_done()

    async def _relist_until_done(self) -> None:
        while True:
            try:
                await self._relist()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cache %s relist failed (%s); retrying", self.prefix, exc)
                await asyncio.sleep(self._retry_s)

    async def _relist(self) -> None:
        kvs, revision = await self.store.snapshot_prefix(self.prefix)
        fresh: dict[str, tuple[Any, int]] = {}
        for kv in kvs:
            value = self._decoded(kv)
            if value is not None:
                fresh[kv.key] = (value, kv.revision)
        old, self._items = self._items, fresh
        self.revision = max(self.revision, revision)
        self.relists += 1
        for key in sorted(old.keys() | fresh.keys()):
            before, after = old.get(key), fresh.get(key)
            if before != after:
                self._report(key, None if after is None else after[0],
                             after[1] if after is not None else revision)
        self._wake()

    def _decoded(self, kv: KeyValue | WatchEvent) -> Any | None:
        assert kv.value is not None
        try:
            return self._decode(kv.value)
        except ValueError as exc:
            log.warning("cache %s skips %s: value is not valid (%s)", self.prefix, kv.key, exc)
            return None

    def _apply(self, event: WatchEvent) -> None:
        current = self._items.get(event.key)
        # Replayed events older than what the list already showed change nothing.
        if current is None or current[1] < event.revision:
            if event.type == "put":
                value = self._decoded(event)
                if value is None:
                    self._items.pop(event.key, None)
                else:
                    self._items[event.key] = (value, event.revision)
                self._report(event.key, value, event.revision)
            elif current is not None:
                del self._items[event.key]
                self._report(event.key, None, event.revision)
        self.revision = max(self.revision, event.revision)
        self._wake()

    def _report(self, key: str, value: Any | None, revision: int) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(key, value, revision)
        except Exception:
            log.exception("cache %s change callback failed for %s", self.prefix, key)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
