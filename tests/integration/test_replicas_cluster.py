"""Two control-plane replicas on one real etcd, workers registering themselves.

One cluster per module (starting it is the slow part); tests run in file order and
each leaves the cluster whole again (a killed process is restarted). The last test
restarts every process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.integration.cp_harness import grpc_infer, http_infer, key_works
from tests.integration.replica_harness import (
    INSTANCE_TTL_S,
    LEADER_TTL_S,
    Cluster,
    Worker,
    mlp_input,
)
from tests.support.etcd import EtcdServer
from tests.support.etcd_fixtures import needs_etcd
from tests.support.models import mlp_onnx, mlp_reference
from tests.support.procs import wait_until

pytestmark = [
    needs_etcd,
    pytest.mark.timeout(180),
]

# how long a lease-bound fact may take to be noticed: TTL, plus the registry's poll
# and the reconcile interval (2 s each at most), plus slack for a loaded 2-core box
LEASE_SLACK_S = 6.0
# a deadline for watch propagation (ms normally), generous because a watch that was cut
# by an etcd restart resumes after the store's reconnect back-off (seconds)
WATCH_SLACK_S = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("replicas")
    etcd = EtcdServer(base, name="replicas")
    etcd.start()
    c = Cluster(base, etcd)
    try:
        c.start_replica("a", wait=False)
        c.start_replica("b", wait=False)
        for r in c.replicas.values():
            c.wait_replica(r)
        c.start_worker("w1", wait=False)
        c.start_worker("w2", wait=False)
        for w in c.workers.values():
            c.wait_worker(w)
        yield c
    finally:
        c.stop()
        etcd.stop()


@pytest.fixture(scope="module")
def tenant(cluster: Cluster) -> dict[str, str]:
    """A tenant, key and model created through replica a."""
    a = cluster.replicas["a"].cp
    key = a.create_tenant("acme")
    r = a.upload(key, "mlp", mlp_onnx().data)
    assert r.status_code == 201, r.text
    a.wait_model_status(key, "mlp", "ready")
    return {"name": "acme", "key": key, "model": "mlp", "qualified": "acme__mlp"}


def _heal(cluster: Cluster) -> None:
    for name, replica in cluster.replicas.items():
        if not replica.alive():
            cluster.start_replica(name)


def test_tenant_created_through_one_replica_is_usable_through_the_other_at_once(cluster: Cluster) -> None:
    a, b = cluster.replicas["a"].cp, cluster.replicas["b"].cp
    key = a.create_tenant("globex")
    lag = wait_until(lambda: key_works(b, key), 5.0, "replica b to accept a key issued by replica a")
    assert lag < 2.0, f"key took {lag:.2f}s to reach the other replica (watch lag should be ms)"
    # the same name again, through the other replica: one tenant, a clear conflict
    with b.admin() as c:
        r = c.post("/admin/tenants", json={"name": "globex"})
    assert r.status_code == 409, r.text
    assert "globex" in r.json()["error"]


def test_model_uploaded_through_one_replica_is_served_through_the_other(
        cluster: Cluster, tenant: dict[str, str]) -> None:
    b = cluster.replicas["b"].cp
    x = mlp_input()
    want = mlp_reference(x)
    np.testing.assert_allclose(http_infer(b, tenant["key"], "mlp", x), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grpc_infer(b, tenant["key"], "mlp", x), want, rtol=1e-4, atol=1e-5)
    # replica a learns b's load through the placement watch and serves it without loading again
    a = cluster.replicas["a"].cp
    wait_until(lambda: len(cluster.holders(tenant["qualified"])) == 1, WATCH_SLACK_S, "one placement")
    np.testing.assert_allclose(grpc_infer(a, tenant["key"], "mlp", x), want, rtol=1e-4, atol=1e-5)
    assert len(cluster.holders(tenant["qualified"])) == 1, "a second replica loaded the model again"


def test_the_leader_plans_with_the_requests_another_replica_served(
        cluster: Cluster, tenant: dict[str, str]) -> None:
    leader = cluster.leader()
    assert leader in cluster.replicas
    other = next(r for name, r in cluster.replicas.items() if name != leader)
    x = mlp_input()
    for _ in range(30):  # only through the replica that does not plan
        http_infer(other.cp, tenant["key"], "mlp", x)

    def leader_rate() -> float:
        with cluster.replicas[leader].cp.admin() as c:
            view = c.get("/admin/placement", timeout=5.0).json()
        return max((m["rate_per_s"] for i in view["instances"] for m in i["models"] if m["model"] == "acme/mlp"),
                   default=0.0)

    # 30 requests are a short-horizon rate of ~3/s (tau 10 s); the earlier tests sent the leader
    # a few at most. The other replica publishes every 2 s and the leader reads them every pass.
    wait_until(lambda: leader_rate() > 1.0, WATCH_SLACK_S, "the leader to see the other replica's demand")


def test_sigkill_of_the_leader_mid_traffic_survivor_keeps_serving_and_takes_over(
        cluster: Cluster, tenant: dict[str, str]) -> None:
    _heal(cluster)
    leader = cluster.leader()
    assert leader in cluster.replicas, leader
    survivor_name = next(n for n in cluster.replicas if n != leader)
    survivor = cluster.replicas[survivor_name].cp
    x = mlp_input(2)
    ok, errors = [0], []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                http_infer(survivor, tenant["key"], "mlp", x, timeout_s=10.0)
                ok[0] += 1
            except Exception as exc:  # recorded, asserted below
                errors.append(repr(exc))

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        wait_until(lambda: ok[0] >= 20, 30.0, "traffic to flow")
        killed_at = time.monotonic()
        cluster.kill_replica(leader)
        wait_until(lambda: cluster.replicas[survivor_name].leader_view()["is_leader"], LEADER_TTL_S + 5.0,
                 f"{survivor_name} to take over placement")
        failover = time.monotonic() - killed_at
        before = ok[0]
        wait_until(lambda: ok[0] >= before + 20, 30.0, "traffic after the failover")
    finally:
        stop.set()
        t.join(15)
    assert not errors, f"{len(errors)} requests to the survivor failed, e.g. {errors[:3]}"
    assert failover <= LEADER_TTL_S + 2.0, f"failover took {failover:.2f}s with a {LEADER_TTL_S}s TTL"
    # nothing stored is lost: the tenant, its key and its model are all still there
    with survivor.client(tenant["key"]) as c:
        names = [m["name"] for m in c.get("/v1/models").json()["models"]]
    assert "mlp" in names
    _heal(cluster)


def test_killed_worker_leaves_routing_and_its_models_are_replaced(
        cluster: Cluster, tenant: dict[str, str]) -> None:
    b = cluster.replicas["b"].cp
    x = mlp_input()
    http_infer(b, tenant["key"], "mlp", x)  # make sure it is loaded somewhere
    wait_until(lambda: len(cluster.holders(tenant["qualified"])) == 1, WATCH_SLACK_S,
             "the placement to show")
    holder = cluster.holders(tenant["qualified"])[0]
    victim = next(w for w in cluster.workers.values() if w.instance_id == holder)
    other = next(w for w in cluster.workers.values() if w.instance_id != holder)
    killed_at = time.monotonic()
    cluster.kill_worker(victim.name)
    wait_until(lambda: cluster.instance(holder) is None, INSTANCE_TTL_S + LEASE_SLACK_S,
             "the dead worker to leave /admin/instances")
    gone = time.monotonic() - killed_at
    # re-placed by the leader, before any request asks for it
    wait_until(lambda: cluster.holders(tenant["qualified"]) == [other.instance_id], LEASE_SLACK_S,
             "the model to be re-placed on the surviving worker")
    assert gone >= INSTANCE_TTL_S - 0.5, f"instance dropped after {gone:.2f}s, before its lease could expire"
    with httpx.Client() as c:  # the surviving worker really holds it (not just the record)
        r = c.get(f"http://127.0.0.1:{other.http_port}/v2/models/{tenant['qualified']}/ready")
    assert r.status_code == 200
    np.testing.assert_allclose(http_infer(b, tenant["key"], "mlp", x), mlp_reference(x), rtol=1e-4, atol=1e-5)
    cluster.start_worker(victim.name)


def test_worker_restarted_in_place_is_resynced_not_trusted(cluster: Cluster, tenant: dict[str, str]) -> None:
    """Same id, new process, empty memory: no replica may route to a model it lost."""
    b = cluster.replicas["b"].cp
    x = mlp_input()
    http_infer(b, tenant["key"], "mlp", x)
    wait_until(lambda: len(cluster.holders(tenant["qualified"])) == 1, WATCH_SLACK_S,
             "the placement to show")
    holder = cluster.holders(tenant["qualified"])[0]
    worker = next(w for w in cluster.workers.values() if w.instance_id == holder)
    cluster.kill_worker(worker.name)
    # back within the lease TTL: the record never vanished
    restarted = cluster.start_worker(worker.name, same_ports=True, wait=False)
    assert restarted.instance_id == holder
    wait_until(lambda: holder not in cluster.holders(tenant["qualified"]) or _holds(restarted, tenant),
             INSTANCE_TTL_S + LEASE_SLACK_S, "the restarted worker's placements to be rebuilt")
    for cp in (b, cluster.replicas["a"].cp):
        np.testing.assert_allclose(http_infer(cp, tenant["key"], "mlp", x), mlp_reference(x),
                                   rtol=1e-4, atol=1e-5)


def _holds(worker: Worker, tenant: dict[str, str]) -> bool:
    with httpx.Client() as c:
        url = f"http://127.0.0.1:{worker.http_port}/v2/models/{tenant['qualified']}/ready"
        return c.get(url, timeout=1.0).status_code == 200


def test_etcd_restart_writes_fail_fast_with_503_and_the_control_plane_recovers_by_itself(
        cluster: Cluster, tenant: dict[str, str]) -> None:
    _heal(cluster)
    a = cluster.replicas["a"].cp
    x = mlp_input()
    http_infer(a, tenant["key"], "mlp", x)
    cluster.etcd.stop()
    try:
        t0 = time.monotonic()
        with a.admin() as c:
            r = c.post("/admin/tenants", json={"name": "during-outage"}, timeout=30.0)
        took = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert "etcd" in r.json()["error"].lower() or "store" in r.json()["error"].lower(), r.text
        assert took < 10.0, f"a write during the outage took {took:.1f}s to fail"
        # the request path reads caches only: inference keeps working without etcd
        np.testing.assert_allclose(http_infer(a, tenant["key"], "mlp", x), mlp_reference(x),
                                   rtol=1e-4, atol=1e-5)
    finally:
        cluster.etcd.start()
    restarted = time.monotonic()

    def write_works() -> bool:
        with a.admin() as c:
            return c.post("/admin/tenants", json={"name": "after-outage"}).status_code in (201, 409)

    recovered = wait_until(write_works, 30.0, "writes to work again after etcd restarted")
    assert recovered < 15.0
    with a.admin() as c:  # the failed write was not applied silently
        assert c.get("/admin/tenants/during-outage").status_code == 404
        key = c.post("/admin/tenants/after-outage/keys", json={}).json()["key"]
    b = cluster.replicas["b"].cp
    wait_until(lambda: key_works(b, key), 10.0, "the other replica's caches to follow again")
    assert time.monotonic() - restarted < 40.0


def test_restart_of_every_process_brings_back_tenants_keys_models_and_placements(
        cluster: Cluster, tenant: dict[str, str]) -> None:
    _heal(cluster)
    b = cluster.replicas["b"].cp
    http_infer(b, tenant["key"], "mlp", mlp_input())
    wait_until(lambda: len(cluster.holders(tenant["qualified"])) == 1, WATCH_SLACK_S,
             "the placement to show")
    for w in cluster.workers.values():
        w.proc.stop()
    for r in cluster.replicas.values():
        r.proc.stop(timeout_s=20.0)
    cluster.etcd.restart()
    for name in list(cluster.replicas):
        cluster.start_replica(name, wait=False)
    for r in cluster.replicas.values():
        cluster.wait_replica(r)
    for name in list(cluster.workers):
        cluster.start_worker(name)
    a = cluster.replicas["a"].cp
    assert key_works(a, tenant["key"]) and key_works(cluster.replicas["b"].cp, tenant["key"])
    with a.client(tenant["key"]) as c:
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["mlp"]
    with a.admin() as c:
        tenants = {t["name"] for t in c.get("/admin/tenants").json()["tenants"]}
    assert {"acme", "globex", "after-outage"} <= tenants
    # the placement comes back: the leader loads the model on a live worker, unasked
    new_ids = {w.instance_id for w in cluster.workers.values()}
    wait_until(lambda: set(cluster.holders(tenant["qualified"])) & new_ids, LEASE_SLACK_S + 20.0,
             "the model's placement to be restored on a restarted worker")
    x = mlp_input()
    np.testing.assert_allclose(grpc_infer(a, tenant["key"], "mlp", x), mlp_reference(x), rtol=1e-4, atol=1e-5)
