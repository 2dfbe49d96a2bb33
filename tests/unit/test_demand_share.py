"""Demand across replicas: each publishes its rates under its own lease, the leader adds the
others' (aged by how old they are) to its own; against the embedded store."""

from __future__ import annotations

import json
import math

import pytest

from placement.cluster_view import Activity, InstanceState, cluster_snapshot
from placement.demand import Demand, DemandTracker, decayed, merged
from placement.demand_share import DemandShare
from store import keys
from store.embedded import EmbeddedStore
from tests.unit.planner_fixtures import spec


def test_merged_adds_rates_and_decayed_ages_them() -> None:
    a = {"m": Demand(1.0, 2.0), "x": Demand(0.5, 0.5)}
    b = {"m": Demand(3.0, 4.0)}
    out = merged(a, b)
    assert out["m"].rate_per_s == 4.0 and out["m"].short_rate_per_s == 6.0 and out["x"] == a["x"]
    aged = decayed(Demand(1.0, 1.0), 10.0, short_tau_s=10.0, long_tau_s=100.0)
    assert aged.short_rate_per_s == pytest.approx(math.exp(-1)) and aged.rate_per_s == pytest.approx(math.exp(-0.1))
    assert decayed(Demand(1.0, 1.0), -5.0, 10.0, 100.0) == Demand(1.0, 1.0)  # a clock ahead never adds


async def test_a_replica_reads_the_others_demand_not_its_own() -> None:
    store = EmbeddedStore()
    clock = [100.0]
    ta, tb = DemandTracker(), DemandTracker()
    for i in range(50):
        ta.observe("acme__m", 100.0 - i * 0.1)
    tb.observe("acme__other", 100.0)
    a = DemandShare(store, "cp-a", ta, clock=lambda: clock[0])
    b = DemandShare(store, "cp-b", tb, clock=lambda: clock[0])
    await a.publish()
    await b.publish()
    seen_by_b = await b.read()
    want = ta.demand("acme__m", 100.0)
    assert set(seen_by_b) == {"acme__m"}  # its own entry is skipped
    assert seen_by_b["acme__m"].short_rate_per_s == pytest.approx(want.short_rate_per_s, rel=1e-3)
    assert set(await a.read()) == {"acme__other"}
    # the leader's snapshot adds them to what it saw itself
    activity = Activity()
    activity.demand = tb
    snap = cluster_snapshot(100.0, [InstanceState("w1", "cpu", 1 << 30, True, None, {}, {})],
                            {"acme__m": spec("acme__m"), "acme__other": spec("acme__other")}, activity, {},
                            wall_now=0.0, peer_demand=b.peers)
    assert snap.demand["acme__m"].short_rate_per_s == pytest.approx(want.short_rate_per_s, rel=1e-3)
    assert snap.demand["acme__other"] == tb.demand("acme__other", 100.0)
    # a replica that closes takes its entry with it
    await a.close()
    assert await b.read() == {}


async def test_an_old_entry_counts_aged_and_an_unreadable_one_is_ignored() -> None:
    store = EmbeddedStore()
    tracker = DemandTracker()
    old = {"at": 0.0, "short_tau_s": 10.0, "long_tau_s": 120.0, "models": {"acme__m": [1.0, 1.0]}}
    await store.put(keys.demand("cp-old"), json.dumps(old).encode())
    await store.put(keys.demand("cp-bad"), b"{not json")
    peers = await DemandShare(store, "cp-me", tracker).read()
    assert set(peers) == {"acme__m"}
    assert peers["acme__m"].short_rate_per_s < 1e-6  # written long ago (epoch 0): decayed away
