"""The state store interface: every piece of inferplex metadata goes through it.

Two implementations honour the same contract (tests/integration/test_store_contract.py):
``EtcdStore`` (aetcd, production and multi-replica) and ``EmbeddedStore`` (one
process, persisted to a file, used by ``inferplex up``).

Who needs compare-and-set: every read-modify-write. A caller reads a value with
its ``revision`` (``get``), computes the new value, and writes it with
``compare_and_set(key, value, revision)``; on ``False`` it re-reads and retries
(see ``update_json``). Creating something that must be unique (a tenant, a model
version, the leader key) uses ``create`` (create-if-absent); something that belongs to
another record (a model version to its tenant) uses ``create_under``, which checks in the
same transaction that the owner is still the very record that was read (its create
revision), so nothing is created for an owner deleted, or deleted and re-created, meanwhile.
Plain ``put`` is only for values a single writer owns (an instance's own registration,
observed timings).
"""

from __future__ import annotations

import abc
import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from kserve.errors import Conflict, NotFound, Unavailable

PREFIX = "/inferplex/"


class StoreUnavailable(Unavailable):
    """The store cannot be reached; writes were not applied."""


class LeaseExpired(Unavailable):
    """A lease was refreshed after it expired (or was revoked)."""


class OwnerGone(NotFound):
    """``create_under`` found its owner absent, or re-created since it was read."""


class WatchCompacted(Unavailable):
    """A watch cannot replay from its start revision (history compacted, or the watcher
    fell too far behind). The consumer must relist (``snapshot_prefix``) and watch again."""

    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    # mod revision: changes on every write of this key; 0 never occurs for a present key
    revision: int
    lease: int | None = None
    # create revision: set when the key is created, kept by every later write; a key deleted
    # and written again gets a new one, so it tells a record from its namesake successor
    created: int = 0

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    key: str
    value: bytes | None
    revision: int


class StateStore(abc.ABC):
    """Key-value metadata with revisions, CAS, leases and prefix watches."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Unconditional write; returns the new revision."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes, *, lease: int | None = None) -> int | None:
        """Write only if the key is absent; returns the new revision, or None if it exists."""

    @abc.abstractmethod
    async def create_under(self, key: str, value: bytes, *, owner: str, owner_created: int) -> int | None:
        """``create`` in one transaction with a check that ``owner`` exists with create revision
        ``owner_created`` (``KeyValue.created`` as read). Returns the new revision, or None if
        ``key`` exists; raises OwnerGone (and writes nothing) when the owner check fails."""

    @abc.abstractmethod
    async def compare_and_set(
        self, key: str, value: bytes, expected_revision: int, *, lease: int | None = None
    ) -> int | None:
        """Write only if the key's revision is still ``expected_revision``.

        Returns the new revision, or None when the key changed (or vanished) since.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        """Delete; with ``expected_revision`` only if unchanged. True if a key was removed."""

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under prefix; returns how many."""

    @abc.abstractmethod
    async def snapshot_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under prefix, sorted by key, plus the store revision the list was read
        at: watching from that revision + 1 misses nothing."""

    @abc.abstractmethod
    async def grant_lease(self, ttl_s: int) -> int:
        """A new lease id; keys written with it vanish when it expires or is revoked."""

    @abc.abstractmethod
    async def refresh_lease(self, lease_id: int) -> None:
        """Keep a lease alive; raises LeaseExpired if it is gone."""

    @abc.abstractmethod
    async def revoke_lease(self, lease_id: int) -> None: ...

    @abc.abstractmethod
    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Events under prefix, in revision order, from start_revision (or now)."""

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # Helpers shared by all implementations.

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key under prefix, sorted by key."""
        return (await self.snapshot_prefix(prefix))[0]

    async def get_json(self, key: str) -> tuple[Any, int] | None:
        kv = await self.get(key)
        return None if kv is None else (kv.json(), kv.revision)

    async def create_json(self, key: str, value: Any, *, what: str = "object") -> int:
        rev = await self.create(key, _dump(value))
        if rev is None:
            raise Conflict(f"{what} already exists")
        return rev

    async def update_json(
        self, key: str, change: Callable[[Any], Any], *, attempts: int = 20
    ) -> tuple[Any, int] | None:
        """Read-modify-write with CAS and retry. ``change`` gets the current value and
        returns the new one. Returns (new value, revision), or None if the key is absent."""
        for attempt in range(attempts):
            cur = await self.get(key)
            if cur is None:
                return None
            new = change(cur.json())
            rev = await self.compare_and_set(key, _dump(new), cur.revision, lease=cur.lease)
            if rev is not None:
                return new, rev
            # lost the race: back off a random while, growing, so writers in lockstep
            # (each reading just before the other's write lands) fall out of it
            await asyncio.sleep(random.uniform(0.0, min(0.05, 0.0005 * 2**attempt)))
        raise Conflict(f"too much contention updating {key}; try again")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel a background task (a watch, a campaign) and wait until it is done."""
    # Repeat: a cancellation racing with completion inside a library's wait_for can be lost.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
