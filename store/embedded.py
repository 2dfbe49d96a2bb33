"""EmbeddedStore: the StateStore contract in one process, persisted to one SQLite file.

Used by ``inferplex up`` (a single machine, no etcd) and as the in-memory store of
unit tests (``EmbeddedStore(None)``). Semantics follow etcd so code tested here
behaves the same on ``EtcdStore``: one global revision that every write bumps,
per-key mod revisions, leases on a monotonic clock whose keys vanish (with delete
events) when they expire, and prefix watches that replay from a past revision out of
a bounded history.

Every operation runs without an ``await`` between its read and its write, so it is
atomic with respect to other tasks on the loop; that is what makes CAS honest here.
Reads are served from memory; each write is first committed as one SQLite transaction
(``store/embedded_file.py``: WAL mode, only the rows it changes plus the store revision),
then applied in memory, so a write that cannot be stored changes nothing. A file in the
old format (one JSON document, rewritten whole on every write) found at the path is
imported once, atomically; the old file is kept beside it as ``<name>.v1.bak``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from store.base import (
    KeyValue,
    LeaseExpired,
    OwnerGone,
    StateStore,
    StoreUnavailable,
    WatchCompacted,
    WatchEvent,
)
from store.embedded_file import Database, Entry

log = logging.getLogger(__name__)

# Events kept for watches that start from a past revision.
HISTORY_LIMIT = 10_000
# A watcher that falls this far behind is told to relist rather than buffer forever.
WATCH_QUEUE_LIMIT = 10_000

@dataclass(slots=True)
class _Lease:
    ttl_s: float
    expires_at: float
    keys: set[str] = field(default_factory=set)


class _Watcher:
    """One watch_prefix consumer. Held weakly by the store so an abandoned iterator
    does not keep buffering events."""

    __slots__ = ("prefix", "queue", "lagged", "error", "__weakref__")

    def __init__(self, prefix: str, limit: int) -> None:
        self.prefix = prefix
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(limit)
        self.lagged = False
        self.error: WatchCompacted | None = None

    def offer(self, event: WatchEvent) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True




class EmbeddedStore(StateStore):
    """In-process store; ``path=None`` keeps everything in memory."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        fsync: bool = True,
        history_limit: int = HISTORY_LIMIT,
        watch_queue_limit: int = WATCH_QUEUE_LIMIT,
    ) -> None:
        self._path = path
        self._history_limit = history_limit
        self._watch_queue_limit = watch_queue_limit
        self._data: dict[str, Entry] = {}
        self._leases: dict[int, _Lease] = {}
        self._revision = 1  # etcd's first revision of an empty store
        self._next_lease = 1
        self._history: deque[WatchEvent] = deque()
        self._compacted = 0  # events with revision <= this are not replayable
        self._watchers: weakref.WeakSet[_Watcher] = weakref.WeakSet()
        self._expiry_task: asyncio.Task[None] | None = None
        self._closed = False
        self._db = Database(path, fsync=fsync) if path is not None else None
        if self._db is not None:
            try:
                self._data, self._revision, self._next_lease = self._db.load()
            except BaseException:
                self._db.close()
                raise
        self._compacted = self._revision

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the embedded store is closed")

    def _persist(self, revision: int, *, puts: Iterable[tuple[str, Entry]] = (),
                 deletes: Iterable[str] = (), next_lease: int | None = None) -> None:
        """Commit a change before memory sees it: if the file refuses it, nothing changed."""
        if self._db is not None:
            self._db.commit(revision, self._next_lease if next_lease is None else next_lease,
                            puts=puts, deletes=deletes)

    def _emit(self, event: WatchEvent) -> None:
        self._history.append(event)
        while len(self._history) > self._history_limit:
            self._compacted = self._history.popleft().revision
        for w in list(self._watchers):
            if event.key.startswith(w.prefix):
                w.offer(event)

    def _bind(self, key: str, lease: int | None) -> None:
        old = self._data.get(key)
        if old is not None and old.lease is not None and old.lease != lease:
            if (held := self._leases.get(old.lease)) is not None:
                held.keys.discard(key)
        if lease is not None:
            self._leases[lease].keys.add(key)

    def _write(self, key: str, value: bytes, lease: int | None) -> int:
        if lease is not None and lease not in self._leases:
            raise LeaseExpired(f"lease {lease} has expired or was revoked; grant a new one")
        revision = self._revision + 1
        old = self._data.get(key)
        entry = Entry(bytes(value), revision, lease, old.created if old is not None else revision)
        self._persist(revision, puts=[(key, entry)])
        self._revision = revision
        self._bind(key, lease)
        self._data[key] = entry
        self._emit(WatchEvent("put", key, entry.value, revision))
        return revision

    def _remove(self, keys: list[str]) -> None:
        """Delete keys in one new revision (like one etcd transaction)."""
        if not keys:
            return
        revision = self._revision + 1
        self._persist(revision, deletes=keys)
        self._revision = revision
        for key in keys:
            e = self._data.pop(key)
            if e.lease is not None and (held := self._leases.get(e.lease)) is not None:
                held.keys.discard(key)
            self._emit(WatchEvent("delete", key, None, revision))

    def _expire(self) -> None:
        now = time.monotonic()
        for lease_id, lease in list(self._leases.items()):
            if lease.expires_at <= now:
                self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        # keys first: if their deletion cannot be stored, the lease stays to expire them later
        self._remove(sorted(k for k in lease.keys if k in self._data))
        del self._leases[lease_id]

    def _ensure_expiry_task(self) -> None:
        if self._expiry_task is None or self._expiry_task.done():
            self._expiry_task = asyncio.get_running_loop().create_task(
                self._expire_loop(), name="embedded-store-lease-expiry"
            )

    async def _expire_loop(self) -> None:
        # Keys bound to a lease must vanish (and watchers hear of it) even when nobody
        # touches the store; operations also expire lazily, so this only adds promptness.
        while not self._closed:
            try:
                self._expire()
            except Exception:
                log.exception("embedded store lease expiry failed")
            if not self._leases:
                await asyncio.sleep(1.0)
                continue
            nearest = min(lease.expires_at for lease in self._leases.values())
            await asyncio.sleep(min(1.0, max(0.01, nearest - time.monotonic())))

    def _op(self) -> None:
        self._check_open()
        self._expire()

    # -- StateStore ----------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._op()
        e = self._data.get(key)
        return None if e is None else KeyValue(key, e.value, e.revision, e.lease, e.created)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        self._op()
        return self._write(key, value, lease)

    async def create(self, key: str, value: bytes, *, lease: int | None = None) -> int | None:
        self._op()
        if key in self._data:
            return None
        return self._write(key, value, lease)

    async def create_under(self, key: str, value: bytes, *, owner: str, owner_created: int) -> int | None:
        self._op()
        held = self._data.get(owner)
        if held is None or held.created != owner_created:
            raise OwnerGone(f"{owner} is gone or was re-created; nothing was written")
        if key in self._data:
            return None
        return self._write(key, value, None)

    async def compare_and_set(
        self, key: str, value: bytes, expected_revision: int, *, lease: int | None = None
    ) -> int | None:
        self._op()
        e = self._data.get(key)
        if e is None or e.revision != expected_revision:
            return None
        return self._write(key, value, lease)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        self._op()
        e = self._data.get(key)
        if e is None or (expected_revision is not None and e.revision != expected_revision):
            return False
        self._remove([key])
        return True

    async def delete_prefix(self, prefix: str) -> int:
        self._op()
        keys = sorted(k for k in self._data if k.startswith(prefix))
        self._remove(keys)
        return len(keys)

    async def snapshot_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        self._op()
        kvs = [
            KeyValue(k, e.value, e.revision, e.lease, e.created)
            for k, e in sorted(self._data.items())
            if k.startswith(prefix)
        ]
        return kvs, self._revision

    async def grant_lease(self, ttl_s: int) -> int:
        self._op()
        if ttl_s <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl_s}")
        lease_id = self._next_lease
        # stored first: a lease id is never handed out twice, not even across a restart
        self._persist(self._revision, next_lease=lease_id + 1)
        self._next_lease = lease_id + 1
        self._leases[lease_id] = _Lease(float(ttl_s), time.monotonic() + ttl_s)
        self._ensure_expiry_task()
        return lease_id

    async def refresh_lease(self, lease_id: int) -> None:
        self._op()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked; grant a new one")
        lease.expires_at = time.monotonic() + lease.ttl_s

    async def revoke_lease(self, lease_id: int) -> None:
        self._op()
        self._drop_lease(lease_id)

    def watch_prefix(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        # Subscribe now, not at first iteration, so nothing written after this call is
        # missed even when start_revision is None. On a closed store the iterator just
        # ends, as every watch does when its store closes.
        w = _Watcher(prefix, self._watch_queue_limit)
        if start_revision is not None:
            if start_revision <= self._compacted:
                w.error = WatchCompacted(
                    f"cannot watch {prefix!r} from revision {start_revision}: history starts "
                    f"after {self._compacted}; relist and watch again",
                    compact_revision=self._compacted,
                )
            else:
                for event in self._history:
                    if event.revision >= start_revision and event.key.startswith(prefix):
                        w.offer(event)
        self._watchers.add(w)
        return self._iterate(w)

    async def _iterate(self, w: _Watcher) -> AsyncIterator[WatchEvent]:
        try:
            if w.error is not None:
                raise w.error
            while True:
                if w.queue.empty():
                    if self._closed:
                        return
                    if w.lagged:
                        raise WatchCompacted(
                            f"watch on {w.prefix!r} fell more than {w.queue.maxsize} events "
                            "behind; relist and watch again",
                            compact_revision=self._revision,
                        )
                event = await w.queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._watchers.discard(w)

    async def current_revision(self) -> int:
        self._op()
        return self._revision

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        for w in list(self._watchers):
            with contextlib.suppress(asyncio.QueueFull):
                w.queue.put_nowait(None)
        if self._db is not None:
            self._db.close()
