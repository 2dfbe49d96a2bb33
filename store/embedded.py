"""EmbeddedStore: the StateStore contract in one process, persisted to one JSON file.

Used by ``inferplex up`` (a single machine, no etcd) and as the in-memory store of
unit tests (``EmbeddedStore(None)``). Semantics follow etcd so code tested here
behaves the same on ``EtcdStore``: one global revision that every write bumps,
per-key mod revisions, leases on a monotonic clock whose keys vanish (with delete
events) when they expire, and prefix watches that replay from a past revision out of
a bounded history.

Every operation runs without an ``await`` between its read and its write, so it is
atomic with respect to other tasks on the loop; that is what makes CAS honest here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import tempfile
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.base import (
    KeyValue,
    LeaseExpired,
    OwnerGone,
    StateStore,
    StoreUnavailable,
    WatchCompacted,
    WatchEvent,
)

log = logging.getLogger(__name__)

FILE_FORMAT = 1
# Events kept for watches that start from a past revision.
HISTORY_LIMIT = 10_000
# A watcher that falls this far behind is told to relist rather than buffer forever.
WATCH_QUEUE_LIMIT = 10_000


@dataclass(slots=True)
class _Entry:
    value: bytes
    revision: int
    lease: int | None
    created: int


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
        self._fsync = fsync
        self._history_limit = history_limit
        self._watch_queue_limit = watch_queue_limit
        self._data: dict[str, _Entry] = {}
        self._leases: dict[int, _Lease] = {}
        self._revision = 1  # etcd's first revision of an empty store
        self._next_lease = 1
        self._history: deque[WatchEvent] = deque()
        self._compacted = 0  # events with revision <= this are not replayable
        self._watchers: weakref.WeakSet[_Watcher] = weakref.WeakSet()
        self._expiry_task: asyncio.Task[None] | None = None
        self._closed = False
        if path is not None and path.exists():
            self._load(path)
        self._compacted = self._revision

    # -- persistence -------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(
                f"cannot read the embedded state file {path}: {exc}; restore it from a backup "
                "or move it away to start empty"
            ) from exc
        if doc.get("format") != FILE_FORMAT:
            raise StoreUnavailable(
                f"{path} has format {doc.get('format')!r}, this build reads {FILE_FORMAT}"
            )
        self._revision = int(doc["revision"])
        self._next_lease = int(doc.get("next_lease", 1))
        dropped = 0
        for item in doc["keys"]:
            # Leases do not survive a restart: etcd would have expired them by now.
            if item.get("lease"):
                dropped += 1
                continue
            raw = item["value"]
            value = base64.b64decode(raw) if item.get("enc") == "b64" else raw.encode()
            # files written before create revisions were kept: the mod revision stands in
            created = int(item.get("created") or item["revision"])
            self._data[item["key"]] = _Entry(value, int(item["revision"]), None, created)
        if dropped:
            self._revision += 1
            log.info("embedded store %s: dropped %d lease-bound keys on load", path, dropped)
            self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        keys: list[dict[str, Any]] = []
        for key in sorted(self._data):
            e = self._data[key]
            try:
                value, enc = e.value.decode(), "utf8"
            except UnicodeDecodeError:
                value, enc = base64.b64encode(e.value).decode(), "b64"
            keys.append(
                {"key": key, "value": value, "enc": enc, "revision": e.revision, "lease": e.lease,
                 "created": e.created}
            )
        doc = {
            "format": FILE_FORMAT,
            "revision": self._revision,
            "next_lease": self._next_lease,
            "keys": keys,
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a crash leaves either the old or the new file, never half.
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the embedded store is closed")

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
        self._revision += 1
        self._bind(key, lease)
        old = self._data.get(key)
        created = old.created if old is not None else self._revision
        self._data[key] = _Entry(bytes(value), self._revision, lease, created)
        self._emit(WatchEvent("put", key, bytes(value), self._revision))
        self._save()
        return self._revision

    def _remove(self, keys: list[str]) -> None:
        """Delete keys in one new revision (like one etcd transaction); caller saves."""
        if not keys:
            return
        self._revision += 1
        for key in keys:
            e = self._data.pop(key)
            if e.lease is not None and (held := self._leases.get(e.lease)) is not None:
                held.keys.discard(key)
            self._emit(WatchEvent("delete", key, None, self._revision))

    def _expire(self) -> None:
        now = time.monotonic()
        for lease_id, lease in list(self._leases.items()):
            if lease.expires_at <= now:
                self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        keys = sorted(k for k in lease.keys if k in self._data)
        self._remove(keys)
        if keys:
            self._save()

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
        self._save()
        return True

    async def delete_prefix(self, prefix: str) -> int:
        self._op()
        keys = sorted(k for k in self._data if k.startswith(prefix))
        self._remove(keys)
        if keys:
            self._save()
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
        self._next_lease += 1
        self._leases[lease_id] = _Lease(float(ttl_s), time.monotonic() + ttl_s)
        self._save()  # persists next_lease: a lease id is never handed out twice
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
