"""EtcdStore: the StateStore contract on a real etcd cluster, through ``aetcd``.

Failure behaviour is the point of this file:

- Every call carries a deadline (``timeout_s``); an unreachable etcd surfaces as
  ``StoreUnavailable`` (HTTP 503) within that deadline, never as a hang.
- The gRPC channel reconnects by itself (short reconnect backoff) once etcd is back,
  so the same ``EtcdStore`` object serves again without being rebuilt. With several
  endpoints, a failed call moves the next call to the next endpoint.
- Watches resume after an outage from the last revision they delivered + 1, so a
  consumer sees every event exactly once; if etcd compacted that revision meanwhile
  the iterator raises ``WatchCompacted`` and the consumer relists. Each watch has
  its own gRPC stream (see ``_watch_stream``), so one watch's failure cannot feed
  another prefix's events to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aetcd
import grpc
from aetcd import exceptions as etcd_errors
from aetcd import rpc
from aetcd.utils import prefix_range_end

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

T = TypeVar("T")

_CHANNEL_OPTIONS = {
    # Listing many keys (profiles, placements) can exceed gRPC's 4 MiB default.
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    # Reconnect quickly after an etcd restart instead of gRPC's default (up to 120 s).
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Detect a silently dead connection (etcd host gone) for long-lived watches.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}


class EtcdStore(StateStore):
    def __init__(
        self,
        endpoints: list[tuple[str, int]] | str,
        *,
        timeout_s: float = 3.0,
        watch_retry_s: float = 0.25,
    ) -> None:
        if isinstance(endpoints, str):
            from store import parse_etcd_url

            endpoints = parse_etcd_url(endpoints)
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._index = 0
        self._timeout_s = timeout_s
        self._watch_retry_s = watch_retry_s
        self._client: aetcd.Client | None = None
        self._closed = False
        self._retired: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        host, port = self._endpoints[self._index]
        return f"{host}:{port}"

    # -- plumbing ------------------------------------------------------------------

    def _get_client(self) -> aetcd.Client:
        if self._closed:
            raise StoreUnavailable("the etcd store is closed")
        if self._client is None:
            host, port = self._endpoints[self._index]
            # aetcd hands timeout to every unary RPC as its gRPC deadline.
            self._client = aetcd.Client(
                host=host, port=port, timeout=self._timeout_s, options=dict(_CHANNEL_OPTIONS)
            )
        return self._client

    def _failed(self, client: aetcd.Client) -> None:
        """A call could not reach etcd. With one endpoint the channel reconnects by
        itself; with several, the next call tries the next endpoint."""
        if len(self._endpoints) == 1 or self._client is not client:
            return
        self._client = None
        self._index = (self._index + 1) % len(self._endpoints)
        task = asyncio.get_running_loop().create_task(self._close_quietly(client))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    @staticmethod
    async def _close_quietly(client: aetcd.Client) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await client.close()

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        detail = str(exc) or type(exc).__name__
        return StoreUnavailable(
            f"etcd at {self.endpoint} did not answer {what} ({detail}); "
            "nothing was written, retry when etcd is reachable"
        )

    async def _call(self, what: str, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        client = self._get_client()
        try:
            # gRPC enforces timeout_s per RPC; this outer bound also covers connecting.
            # (asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that races with completion, which left cancelled tasks running.)
            async with asyncio.timeout(self._timeout_s + 1.0):
                return await fn(client)
        except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError,
                TimeoutError) as exc:
            self._failed(client)
            raise self._unavailable(what, exc) from exc
        except etcd_errors.ClientError as exc:
            if "lease not found" in str(exc):
                raise LeaseExpired(
                    f"lease used by {what} has expired or was revoked; grant a new one"
                ) from exc
            raise self._unavailable(what, exc) from exc

    @staticmethod
    def _kv(kv: aetcd.rtypes.KeyValue) -> KeyValue:
        return KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.lease or None, kv.create_revision)

    # -- StateStore ------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        got = await self._call(f"get {key}", lambda c: c.get(key.encode()))
        return None if got is None else self._kv(got)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        res = await self._call(f"put {key}", lambda c: c.put(key.encode(), value, lease=lease))
        return res.header.revision

    async def _txn_put(
        self, what: str, key: str, value: bytes, compare: list, lease: int | None
    ) -> int | None:
        def txn(c: aetcd.Client) -> Awaitable[tuple[bool, list]]:
            return c.transaction(
                compare=compare,
                success=[c.transactions.put(key.encode(), value, lease=lease)],
                failure=[],
            )

        ok, responses = await self._call(what, txn)
        return responses[0].response_put.header.revision if ok else None

    async def create(self, key: str, value: bytes, *, lease: int | None = None) -> int | None:
        tx = aetcd.client.Transactions()
        return await self._txn_put(
            f"create {key}", key, value, [tx.version(key.encode()) == 0], lease
        )

    async def create_under(self, key: str, value: bytes, *, owner: str, owner_created: int) -> int | None:
        tx = aetcd.client.Transactions()

        def txn(c: aetcd.Client) -> Awaitable[tuple[bool, list]]:
            return c.transaction(
                compare=[tx.create(owner.encode()) == owner_created, tx.version(key.encode()) == 0],
                success=[c.transactions.put(key.encode(), value)],
                # on failure, read the owner back to tell "owner gone" from "key exists"
                failure=[c.transactions.get(owner.encode())],
            )

        ok, responses = await self._call(f"create {key} under {owner}", txn)
        if ok:
            return responses[0].response_put.header.revision
        found = responses[0] if responses else []
        if not found or found[0][1].create_revision != owner_created:
            raise OwnerGone(f"{owner} is gone or was re-created; nothing was written")
        return None

    def _unchanged(self, key: str, expected_revision: int) -> list:
        tx = aetcd.client.Transactions()
        # version > 0 keeps expected_revision=0 from matching an absent key.
        return [tx.mod(key.encode()) == expected_revision, tx.version(key.encode()) > 0]

    async def compare_and_set(
        self, key: str, value: bytes, expected_revision: int, *, lease: int | None = None
    ) -> int | None:
        return await self._txn_put(
            f"compare-and-set {key}", key, value, self._unchanged(key, expected_revision), lease
        )

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        if expected_revision is None:
            res = await self._call(f"delete {key}", lambda c: c.delete(key.encode()))
            return res is not None and res.deleted > 0

        def txn(c: aetcd.Client) -> Awaitable[tuple[bool, list]]:
            return c.transaction(
                compare=self._unchanged(key, expected_revision),
                success=[c.transactions.delete(key.encode())],
                failure=[],
            )

        ok, responses = await self._call(f"delete {key}", txn)
        return bool(ok and responses[0].response_delete_range.deleted > 0)

    async def delete_prefix(self, prefix: str) -> int:
        res = await self._call(f"delete prefix {prefix}", lambda c: c.delete_prefix(prefix.encode()))
        return res.deleted

    async def snapshot_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        res = await self._call(
            f"list {prefix}",
            lambda c: c.get_prefix(prefix.encode(), sort_order="ascend", sort_target="key"),
        )
        return [self._kv(kv) for kv in res], res.header.revision

    async def current_revision(self) -> int:
        # An empty range read still carries the store's revision in its header.
        res = await self._call(
            "read revision", lambda c: c.get_prefix(b"\x00", keys_only=True)
        )
        return res.header.revision

    async def grant_lease(self, ttl_s: int) -> int:
        if ttl_s <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl_s}")
        lease = await self._call("grant lease", lambda c: c.lease(ttl_s))
        return lease.id

    async def refresh_lease(self, lease_id: int) -> None:
        reply = await self._call(f"refresh lease {lease_id}", lambda c: c.refresh_lease(lease_id))
        if reply is None:
            raise self._unavailable(f"refresh lease {lease_id}", RuntimeError("no reply"))
        if reply.TTL <= 0:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked; grant a new one")

    async def revoke_lease(self, lease_id: int) -> None:
        # Revoking a lease that already expired is not an error: the keys are gone either way.
        with contextlib.suppress(LeaseExpired):
            await self._call(f"revoke lease {lease_id}", lambda c: c.revoke_lease(lease_id))

    async def watch_prefix(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Events under prefix from start_revision (None: from when iteration begins).

        Survives etcd outages: it retries until etcd answers and resumes from the last
        delivered revision + 1. Raises WatchCompacted when that revision is gone.
        Ends when the store is closed.
        """
        next_rev = start_revision
        while next_rev is None:
            if self._closed:
                return
            try:
                next_rev = await self.current_revision() + 1
            except StoreUnavailable as exc:
                log.info("watch %s waiting for etcd: %s", prefix, exc)
                await asyncio.sleep(self._watch_retry_s)
        while not self._closed:
            client: aetcd.Client | None = None
            try:
                client = self._get_client()
                async for event in self._watch_stream(client, prefix, next_rev):
                    yield event
                    next_rev = event.revision + 1
                # The stream ended without an error: the client was closed or rotated.
            except WatchCompacted:
                raise
            except Exception as exc:  # any stream failure: etcd down, restarted, rotated
                if client is not None:
                    self._failed(client)
                log.info("watch %s interrupted (%s); resuming at revision %d",
                         prefix, exc or type(exc).__name__, next_rev)
            if not self._closed:
                await asyncio.sleep(self._watch_retry_s)

    async def _watch_stream(
        self, client: aetcd.Client, prefix: str, start_revision: int
    ) -> AsyncIterator[WatchEvent]:
        """One watch on its own gRPC stream, for as long as that stream lives.

        Not aetcd's ``watch_prefix``: that multiplexes every watch of a client over one
        stream and pairs each "created" answer with whichever creation is pending when it
        arrives, so a creation that timed out (etcd slow or hung, then back) hands its
        late answer, and with it another prefix's events, to the next watch created on
        that stream, whose own prefix then goes unwatched without any error. Here a
        stream carries exactly one watch: a creation that times out cancels its stream,
        and nothing of it can reach another watch.
        """
        await client.connect()
        key = prefix.encode()
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            async with asyncio.timeout(self._timeout_s + 1.0):
                await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                    key=key, range_end=prefix_range_end(key), start_revision=start_revision)))
                created = await _read(call)
            while True:
                if created is grpc.aio.EOF:
                    return
                response: rpc.WatchResponse = created
                if response.compact_revision:
                    raise WatchCompacted(
                        f"cannot resume watch on {prefix!r} at revision {start_revision}: etcd "
                        f"compacted history up to {response.compact_revision}; relist and watch again",
                        compact_revision=response.compact_revision,
                    )
                if response.canceled:
                    raise StoreUnavailable(f"etcd cancelled the watch on {prefix!r}: "
                                           f"{response.cancel_reason or 'no reason given'}")
                for ev in response.events:
                    if ev.type == rpc.Event.DELETE:
                        yield WatchEvent("delete", ev.kv.key.decode(), None, ev.kv.mod_revision)
                    else:
                        yield WatchEvent("put", ev.kv.key.decode(), ev.kv.value, ev.kv.mod_revision)
                created = await _read(call)
        finally:
            call.cancel()

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await self._close_quietly(client)
        for task in list(self._retired):
            with contextlib.suppress(Exception):
                await task


async def _read(call: grpc.aio.StreamStreamCall) -> object:
    """The next response, or ``grpc.aio.EOF`` when the stream ended, also when its
    channel was closed under it: grpc then raises CancelledError in the reading task
    although nobody cancelled that task, and that must not pass for a cancellation."""
    try:
        return await call.read()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if call.cancelled() and task is not None and not task.cancelling():
            return grpc.aio.EOF
        raise

