"""One StateStore contract, run against EmbeddedStore and a real etcd server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kserve.errors import Conflict
from store import (
    LeaseExpired,
    OwnerGone,
    StateStore,
    StoreUnavailable,
    WatchCompacted,
    WatchEvent,
    open_store,
)
from store.embedded import EmbeddedStore
from store.etcd import EtcdStore
from tests.support.etcd import EtcdServer
from tests.support.procs import eventually, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(stores: tuple[StateStore, StateStore]) -> StateStore:
    return stores[0]


async def _collect(it: AsyncIterator[WatchEvent], n: int, timeout_s: float = 10) -> list[WatchEvent]:
    out: list[WatchEvent] = []

    async def take() -> None:
        async for ev in it:
            out.append(ev)
            if len(out) == n:
                return

    await asyncio.wait_for(take(), timeout_s)
    return out


async def test_put_then_get_returns_value_and_revisions_increase(store: StateStore, ns: str) -> None:
    r1 = await store.put(ns + "a", b"1")
    r2 = await store.put(ns + "a", b"2")
    r3 = await store.put(ns + "b", b"3")
    assert 0 < r1 < r2 < r3
    kv = await store.get(ns + "a")
    assert kv is not None and kv.value == b"2" and kv.revision == r2 and kv.lease is None
    assert await store.get(ns + "missing") is None
    assert await store.current_revision() >= r3


async def test_create_if_absent_second_create_returns_none(store: StateStore, ns: str) -> None:
    rev = await store.create(ns + "t", b"first")
    assert rev is not None
    assert await store.create(ns + "t", b"second") is None
    kv = await store.get(ns + "t")
    assert kv is not None and (kv.value, kv.revision) == (b"first", rev)
    with pytest.raises(Conflict, match="tenant already exists"):
        await store.create_json(ns + "t", {"x": 1}, what="tenant")


async def test_create_under_needs_the_same_owner_record_not_a_namesake(
    stores: tuple[StateStore, StateStore], ns: str
) -> None:
    one, two = stores
    await one.put(ns + "tenant", b"v1")
    owner = await two.get(ns + "tenant")
    assert owner is not None and owner.created > 0
    # an update keeps the owner's identity: the child is created, and only once
    await one.put(ns + "tenant", b"v2")
    rev = await two.create_under(ns + "child/1", b"c", owner=ns + "tenant", owner_created=owner.created)
    assert rev is not None
    kv = await one.get(ns + "tenant")
    assert kv is not None and kv.created == owner.created and kv.revision > owner.revision
    assert await one.create_under(ns + "child/1", b"again", owner=ns + "tenant",
                                  owner_created=owner.created) is None
    # deleted, then re-created under the same name: a different record
    assert await one.delete(ns + "tenant")
    with pytest.raises(OwnerGone):
        await two.create_under(ns + "child/2", b"c", owner=ns + "tenant", owner_created=owner.created)
    await one.put(ns + "tenant", b"new owner")
    reborn = await two.get(ns + "tenant")
    assert reborn is not None and reborn.created > owner.created
    with pytest.raises(OwnerGone):
        await two.create_under(ns + "child/2", b"c", owner=ns + "tenant", owner_created=owner.created)
    assert await one.get(ns + "child/2") is None
    assert await two.create_under(ns + "child/2", b"c", owner=ns + "tenant",
                                  owner_created=reborn.created) is not None


async def test_compare_and_set_succeeds_on_current_revision_fails_on_stale(
    store: StateStore, ns: str
) -> None:
    r1 = await store.put(ns + "k", b"v1")
    r2 = await store.compare_and_set(ns + "k", b"v2", r1)
    assert r2 is not None and r2 > r1
    assert await store.compare_and_set(ns + "k", b"stale", r1) is None
    kv = await store.get(ns + "k")
    assert kv is not None and kv.value == b"v2"
    # An absent key never matches, not even expected revision 0.
    assert await store.compare_and_set(ns + "absent", b"x", 0) is None
    assert await store.compare_and_set(ns + "absent", b"x", r2) is None
    assert await store.get(ns + "absent") is None


async def test_delete_with_expected_revision_only_when_unchanged(store: StateStore, ns: str) -> None:
    r1 = await store.put(ns + "k", b"v1")
    r2 = await store.put(ns + "k", b"v2")
    assert await store.delete(ns + "k", expected_revision=r1) is False
    assert await store.get(ns + "k") is not None
    assert await store.delete(ns + "k", expected_revision=r2) is True
    assert await store.get(ns + "k") is None
    assert await store.delete(ns + "k") is False
    await store.put(ns + "k", b"v3")
    assert await store.delete(ns + "k") is True


async def test_list_prefix_sorted_and_isolated_from_sibling_prefixes(
    store: StateStore, ns: str
) -> None:
    for key in ["a/z", "a/b", "a/m", "ab/x", "a", "b/a"]:
        await store.put(ns + key, key.encode())
    listed = await store.list_prefix(ns + "a/")
    assert [kv.key for kv in listed] == [ns + "a/b", ns + "a/m", ns + "a/z"]
    assert [kv.value for kv in listed] == [b"a/b", b"a/m", b"a/z"]
    kvs, rev = await store.snapshot_prefix(ns + "a/")
    assert kvs == listed and rev >= max(kv.revision for kv in listed)
    assert await store.list_prefix(ns + "nothing/") == []


async def test_delete_prefix_removes_only_that_prefix(store: StateStore, ns: str) -> None:
    for key in ["m/1", "m/2", "m/3", "mm/1"]:
        await store.put(ns + key, b"x")
    assert await store.delete_prefix(ns + "m/") == 3
    assert [kv.key for kv in await store.list_prefix(ns)] == [ns + "mm/1"]
    assert await store.delete_prefix(ns + "m/") == 0


async def test_keys_vanish_when_lease_is_revoked(store: StateStore, ns: str) -> None:
    lease = await store.grant_lease(30)
    await store.put(ns + "inst/1", b"a", lease=lease)
    await store.put(ns + "inst/2", b"b", lease=lease)
    await store.put(ns + "kept", b"c")
    kv = await store.get(ns + "inst/1")
    assert kv is not None and kv.lease == lease
    await store.revoke_lease(lease)
    assert await store.list_prefix(ns + "inst/") == []
    assert await store.get(ns + "kept") is not None
    await store.revoke_lease(lease)  # revoking twice is harmless
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(lease)
    with pytest.raises(LeaseExpired):
        await store.put(ns + "inst/3", b"x", lease=lease)


async def test_keys_vanish_after_lease_ttl_and_refresh_then_raises(
    store: StateStore, ns: str
) -> None:
    lease = await store.grant_lease(1)
    await store.refresh_lease(lease)  # alive: no error
    await store.put(ns + "ephemeral", b"x", lease=lease)
    watch = store.watch_prefix(ns, start_revision=await store.current_revision() + 1)

    async def gone() -> bool:
        return await store.get(ns + "ephemeral") is None

    # etcd checks expiry on its own schedule, so allow it a few seconds past the TTL.
    await eventually(gone, 8, "leased key to expire")
    (event,) = await _collect(watch, 1)
    assert (event.type, event.key) == ("delete", ns + "ephemeral")
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(lease)


async def test_watch_sees_puts_and_deletes_in_order(store: StateStore, ns: str) -> None:
    start = await store.current_revision() + 1
    watch = store.watch_prefix(ns + "w/", start_revision=start)
    r1 = await store.put(ns + "w/a", b"1")
    await store.put(ns + "other", b"not watched")
    r2 = await store.put(ns + "w/b", b"2")
    r3 = await store.put(ns + "w/a", b"3")
    assert await store.delete(ns + "w/b")
    events = await _collect(watch, 4)
    await watch.aclose()
    assert [(e.type, e.key, e.value) for e in events] == [
        ("put", ns + "w/a", b"1"),
        ("put", ns + "w/b", b"2"),
        ("put", ns + "w/a", b"3"),
        ("delete", ns + "w/b", None),
    ]
    assert [e.revision for e in events[:3]] == [r1, r2, r3]
    assert events[3].revision > r3


async def test_watch_from_past_revision_replays_history(store: StateStore, ns: str) -> None:
    r1 = await store.put(ns + "h/1", b"a")
    await store.put(ns + "h/2", b"b")
    await store.delete(ns + "h/1")
    watch = store.watch_prefix(ns + "h/", start_revision=r1 + 1)
    events = await _collect(watch, 2)
    await watch.aclose()
    assert [(e.type, e.key) for e in events] == [("put", ns + "h/2"), ("delete", ns + "h/1")]


async def test_watch_without_start_sees_writes_made_after_it_began(
    store: StateStore, ns: str
) -> None:
    await store.put(ns + "n/old", b"before")
    watch = store.watch_prefix(ns + "n/")
    first = asyncio.ensure_future(_collect(watch, 1))

    # A watch without a start revision begins when it is iterated; keep writing until
    # it reports (the first delivered event must be a write made after it started).
    async def delivered() -> bool:
        await store.put(ns + "n/new", b"after")
        return first.done()

    await eventually(delivered, 10, "watch to deliver a new write")
    (event,) = first.result()
    assert (event.key, event.value) == (ns + "n/new", b"after")
    await watch.aclose()


async def test_update_json_gives_exact_total_under_concurrent_writers(
    stores: tuple[StateStore, StateStore], ns: str
) -> None:
    one, two = stores
    await one.create_json(ns + "counter", {"n": 0})
    n = 25

    async def bump(s: StateStore) -> None:
        for _ in range(n):
            assert await s.update_json(ns + "counter", lambda v: {"n": v["n"] + 1}) is not None

    await asyncio.gather(bump(one), bump(two))
    got = await one.get_json(ns + "counter")
    assert got is not None and got[0] == {"n": 2 * n}
    assert await one.update_json(ns + "absent", lambda v: v) is None


async def test_two_racers_creating_the_same_key_exactly_one_wins(
    stores: tuple[StateStore, StateStore], ns: str
) -> None:
    one, two = stores
    for i in range(10):
        key = f"{ns}race/{i}"
        results = await asyncio.gather(
            one.create(key, b"one"), two.create(key, b"two"), return_exceptions=True
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        kv = await one.get(key)
        assert kv is not None and kv.value == (b"one" if results[0] is not None else b"two")


# -- embedded only -----------------------------------------------------------------


async def test_embedded_store_keeps_every_key_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data" / "state.json"
    store = EmbeddedStore(path)
    created = await store.put("/inferplex/tenants/acme", b'{"name":"?"}')
    await store.put("/inferplex/tenants/acme", b'{"name":"acme"}')
    await store.put("/inferplex/bin", bytes(range(256)))  # not UTF-8: stored as base64
    lease = await store.grant_lease(60)
    await store.put("/inferplex/instances/i1", b"x", lease=lease)
    last = await store.current_revision()
    await store.close()

    reopened = open_store(None, tmp_path / "data")
    try:
        kv = await reopened.get("/inferplex/tenants/acme")
        assert kv is not None and kv.value == b'{"name":"acme"}'
        assert kv.created == created  # what create_under compares survives a restart
        bin_kv = await reopened.get("/inferplex/bin")
        assert bin_kv is not None and bin_kv.value == bytes(range(256))
        # Leases do not survive a restart, so keys bound to them are gone.
        assert await reopened.get("/inferplex/instances/i1") is None
        with pytest.raises(LeaseExpired):
            await reopened.refresh_lease(lease)
        assert await reopened.grant_lease(5) != lease  # lease ids are never reused
        assert await reopened.put("/inferplex/x", b"1") > last
        # History is not persisted: a watch from before the restart must relist.
        with pytest.raises(WatchCompacted):
            await _collect(reopened.watch_prefix("/inferplex/", start_revision=2), 1)
    finally:
        await reopened.close()
    assert not list(path.parent.glob(".state-*")), "temp files must not be left behind"


async def test_embedded_store_refuses_a_corrupt_state_file_with_a_clear_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(Exception, match="cannot read the embedded state file"):
        EmbeddedStore(tmp_path / "state.json")


# -- etcd only ---------------------------------------------------------------------


@pytest.mark.etcd
async def test_etcd_outage_raises_store_unavailable_fast_then_same_store_recovers(
    make_etcd: Callable[[], EtcdServer],
) -> None:
    server = make_etcd()
    store = EtcdStore(server.url, timeout_s=2.0)
    ns = "/outage/"
    seen: list[WatchEvent] = []
    watcher_task: asyncio.Task[None] | None = None
    try:
        await store.put(ns + "before", b"1")
        start = await store.current_revision() + 1

        async def watch() -> None:
            async for ev in store.watch_prefix(ns, start_revision=start):
                seen.append(ev)

        watcher_task = asyncio.create_task(watch())
        await store.put(ns + "w1", b"1")
        await eventually(lambda: len(seen) == 1, 10, "watch event before outage")

        server.stop()
        for op in (
            lambda: store.get(ns + "before"),
            lambda: store.put(ns + "during", b"x"),
            lambda: store.create(ns + "during", b"x"),
            lambda: store.list_prefix(ns),
            lambda: store.grant_lease(5),
        ):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await op()
            assert info.value.http_status == 503 and "etcd" in info.value.message
            assert time.monotonic() - t0 < 4.0

        server.start()

        async def works() -> bool:
            return await store.put(ns + "after", b"2") > 0

        await eventually(works, 20, "the same EtcdStore to work after etcd restart")
        kv = await store.get(ns + "before")
        assert kv is not None and kv.value == b"1"
        assert await store.get(ns + "during") is None  # failed writes were not applied
        # The watch resumed from where it stopped: no gap, no duplicates.
        await eventually(lambda: any(e.key == ns + "after" for e in seen), 20,
                         "watch to resume after restart")
        keys = [e.key for e in seen]
        assert keys[0] == ns + "w1" and keys.count(ns + "w1") == 1
        revs = [e.revision for e in seen]
        assert revs == sorted(set(revs))
    finally:
        if watcher_task is not None:
            watcher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher_task
        await store.close()


@pytest.mark.etcd
async def test_etcd_hung_server_raises_store_unavailable_within_timeout(
    make_etcd: Callable[[], EtcdServer],
) -> None:
    import signal

    server = make_etcd()
    store = EtcdStore(server.url, timeout_s=1.0)
    try:
        await store.put("/hung/k", b"1")
        assert server.proc is not None
        server.proc.signal(signal.SIGSTOP)  # accepts connections, never answers
        wait_until(lambda: _stopped(server.proc.popen.pid), 5, "etcd to be stopped")
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.get("/hung/k")
            assert time.monotonic() - t0 < 3.0
        finally:
            server.proc.signal(signal.SIGCONT)

        async def answers() -> bool:
            return await store.get("/hung/k") is not None

        await eventually(answers, 10, "etcd to answer again")
    finally:
        await store.close()


@pytest.mark.etcd
async def test_etcd_watch_from_compacted_revision_raises_watch_compacted(
    etcd_server: EtcdServer, ns: str
) -> None:
    import aetcd

    store = EtcdStore(etcd_server.url)
    try:
        r1 = await store.put(ns + "c", b"1")
        r2 = await store.put(ns + "c", b"2")
        async with aetcd.Client(host="127.0.0.1", port=etcd_server.client_port) as raw:
            await raw.compact(r2)
        with pytest.raises(WatchCompacted):
            await _collect(store.watch_prefix(ns, start_revision=r1), 1)
    finally:
        await store.close()


def _stopped(pid: int) -> bool:
    """Every thread of pid is in state T (signal delivery is asynchronous)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(st in ("T", "t") for st in states)


@pytest.mark.etcd
async def test_etcd_store_moves_to_the_next_endpoint_when_one_is_down(
    etcd_server: EtcdServer,
) -> None:
    from tests.support.procs import free_port

    dead = f"127.0.0.1:{free_port()}"
    store = EtcdStore(f"etcd://{dead},{etcd_server.endpoint}", timeout_s=1.0)
    try:
        with pytest.raises(StoreUnavailable, match=dead):
            await store.get("/rotate/k")
        assert store.endpoint == etcd_server.endpoint
        assert await store.put("/rotate/k", b"1") > 0
    finally:
        await store.close()


async def test_watches_end_when_the_store_closes(kind: str, request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    if kind == "embedded":
        store: StateStore = EmbeddedStore(tmp_path / "state.json")
    else:
        store = EtcdStore(request.getfixturevalue("etcd_server").url)
    running = store.watch_prefix("/closing/", start_revision=await store.current_revision() + 1)
    pending = asyncio.ensure_future(_collect(running, 1))
    await store.put("/closing/a", b"1")
    await asyncio.wait_for(pending, 5)
    rest = asyncio.ensure_future(_collect(running, 1))
    await store.close()
    await asyncio.wait_for(rest, 5)  # the iterator finished instead of hanging
    assert rest.result() == []
    assert await _collect(store.watch_prefix("/closing/"), 1) == []


@pytest.mark.etcd
async def test_etcd_watches_whose_creation_timed_out_never_receive_another_prefix_events(
    make_etcd: Callable[[], EtcdServer],
) -> None:
    """A watch that could not be created in time (etcd hung, then back) must not end up
    attached to another watch's prefix: several caches re-watch at once after an outage,
    and a cache fed another prefix's events never sees its own writes again (the replica
    test's 'caches to follow again' flake)."""
    import signal

    server = make_etcd()
    store = EtcdStore(server.url, timeout_s=0.3, watch_retry_s=0.05)
    prefixes = [f"/crossed/p{i}/" for i in range(4)]
    seen: dict[str, list[str]] = {p: [] for p in prefixes}
    tasks: list[asyncio.Task[None]] = []
    try:
        start = await store.put("/crossed/connected", b"1") + 1  # the connection is up
        assert server.proc is not None
        server.proc.signal(signal.SIGSTOP)  # creates queue up on the connection, unanswered
        wait_until(lambda: _stopped(server.proc.popen.pid), 5, "etcd to be stopped")

        async def watch(prefix: str) -> None:
            async for ev in store.watch_prefix(prefix, start_revision=start):
                seen[prefix].append(ev.key)

        tasks = [asyncio.create_task(watch(p)) for p in prefixes]
        await asyncio.sleep(0)  # every watch has begun
        t0 = time.monotonic()
        await eventually(lambda: time.monotonic() - t0 > 1.5, 5, "several create attempts to time out")
        server.proc.signal(signal.SIGCONT)

        async def each_sees_its_own() -> bool:
            for p in prefixes:
                if not seen[p]:
                    with contextlib.suppress(StoreUnavailable):
                        await store.put(p + "k", b"1")
            return all(seen.values())

        await eventually(each_sees_its_own, 15, "every watch to see a write to its own prefix")
        for p in prefixes:
            assert all(k.startswith(p) for k in seen[p]), (p, seen[p])
    finally:
        if server.proc is not None:
            server.proc.signal(signal.SIGCONT)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await store.close()
