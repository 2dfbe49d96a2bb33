"""Leader election against EmbeddedStore and a real etcd: one leader, fast failover."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from store import StateStore
from store.etcd import EtcdStore
from store.leader import LeaderElection
from tests.support.etcd import EtcdServer
from tests.support.procs import eventually

pytestmark = pytest.mark.timeout(60)

TTL = 2


@pytest.fixture
def key() -> str:
    return f"/test/{uuid.uuid4().hex[:12]}/leader/placement"


def _leader(a: LeaderElection, b: LeaderElection) -> tuple[LeaderElection, LeaderElection] | None:
    if a.is_leader != b.is_leader:
        return (a, b) if a.is_leader else (b, a)
    return None


async def _one_leader(a: LeaderElection, b: LeaderElection) -> tuple[LeaderElection, LeaderElection]:
    await eventually(lambda: _leader(a, b) is not None, 10, "one leader")
    pair = _leader(a, b)
    assert pair is not None
    return pair


async def test_exactly_one_of_two_candidates_leads_and_owns_the_key(
    stores: tuple[StateStore, StateStore], key: str
) -> None:
    events: list[str] = []
    a = LeaderElection(stores[0], key, "replica-a", TTL, on_elected=lambda: events.append("a"))
    b = LeaderElection(stores[1], key, "replica-b", TTL, on_elected=lambda: events.append("b"))
    a.start(), b.start()
    try:
        leader, follower = await _one_leader(a, b)
        kv = await stores[0].get(key)
        assert kv is not None and kv.value.decode() == leader.identity
        assert kv.lease == leader.lease_id and follower.lease_id is None
        # Leadership is stable: refreshes keep it across more than a TTL.
        loop = asyncio.get_running_loop()
        until = loop.time() + TTL * 1.5
        while loop.time() < until:
            assert leader.is_leader and not follower.is_leader
            await asyncio.sleep(0.1)
        assert events == [leader.identity[-1]]
    finally:
        await a.stop()
        await b.stop()


async def test_revoking_the_leaders_lease_hands_leadership_over_within_ttl(
    stores: tuple[StateStore, StateStore], key: str
) -> None:
    lost: list[str] = []
    a = LeaderElection(stores[0], key, "replica-a", TTL, on_lost=lambda: lost.append("a"))
    b = LeaderElection(stores[1], key, "replica-b", TTL, on_lost=lambda: lost.append("b"))
    a.start(), b.start()
    try:
        leader, follower = await _one_leader(a, b)
        assert leader.lease_id is not None
        t0 = time.monotonic()
        await stores[0].revoke_lease(leader.lease_id)
        await asyncio.wait_for(follower.elected.wait(), TTL)
        took = time.monotonic() - t0
        # The old leader notices at its next refresh (ttl/3) and reports it.
        await eventually(lambda: not leader.is_leader, TTL, "old leader to step down")
        await eventually(lambda: lost == [leader.identity[-1]], TTL, "on_lost callback")
        kv = await stores[0].get(key)
        assert kv is not None and kv.value.decode() == follower.identity
        print(f"takeover after lease revoke: {took:.3f}s")
    finally:
        await a.stop()
        await b.stop()


async def test_crashed_leader_is_replaced_within_ttl(
    stores: tuple[StateStore, StateStore], key: str
) -> None:
    a = LeaderElection(stores[0], key, "replica-a", TTL)
    b = LeaderElection(stores[1], key, "replica-b", TTL)
    a.start(), b.start()
    try:
        leader, follower = await _one_leader(a, b)
        # A crash: the leader stops refreshing and never revokes its lease.
        assert leader._task is not None
        leader._task.cancel()
        t0 = time.monotonic()
        # etcd checks lease expiry every 500 ms, so allow TTL plus that granularity.
        await asyncio.wait_for(follower.elected.wait(), TTL + 1.5)
        took = time.monotonic() - t0
        print(f"failover after leader crash: {took:.3f}s (ttl {TTL}s)")
    finally:
        await a.stop()
        await b.stop()


async def test_graceful_stop_hands_over_without_waiting_for_ttl(
    stores: tuple[StateStore, StateStore], key: str
) -> None:
    a = LeaderElection(stores[0], key, "replica-a", 10)
    b = LeaderElection(stores[1], key, "replica-b", 10)
    a.start(), b.start()
    try:
        leader, follower = await _one_leader(a, b)
        await leader.stop()
        await asyncio.wait_for(follower.elected.wait(), 3)  # far less than the 10 s TTL
    finally:
        await a.stop()
        await b.stop()


async def test_election_survives_etcd_restart_and_keeps_one_leader(
    make_etcd, key: str  # type: ignore[no-untyped-def]
) -> None:
    server: EtcdServer = make_etcd()
    one, two = EtcdStore(server.url, timeout_s=1.0), EtcdStore(server.url, timeout_s=1.0)
    a = LeaderElection(one, key, "replica-a", TTL)
    b = LeaderElection(two, key, "replica-b", TTL)
    a.start(), b.start()
    try:
        await _one_leader(a, b)
        server.stop()
        # Without etcd nobody can prove leadership: the leader steps down within the TTL.
        await eventually(lambda: not a.is_leader and not b.is_leader, TTL + 1,
                         "leader to step down during the outage")
        server.start()
        leader, _ = await _one_leader(a, b)
        kv = await one.get(key)
        assert kv is not None and kv.value.decode() == leader.identity
    finally:
        await a.stop()
        await b.stop()
        await one.close()
        await two.close()
