"""Replicas on etcd: request-path latency vs the embedded store, leader failover, etcd recovery.

    .venv/bin/python -m bench.replicas [--requests 1000] [--failovers 5] [--etcd-restarts 3]

1. Latency: one ``inferplex controlplane --etcd`` and one ``inferplex controlplane``
   (embedded store) in front of the SAME worker, the same tenant/model on both;
   requests alternate between the two (order shuffled per pair) so both see the
   same machine noise. The request path reads caches only, so both should match.
2. Failover: two replicas on etcd; SIGKILL the placement leader, time until the
   survivor reports itself leader (``GET /admin/leader``), while traffic to the
   survivor is counted for errors. Repeated; the killed replica is restarted.
3. etcd restart: stop etcd for a few seconds, start it, time until a write through
   the control plane succeeds again and until the other replica sees it (watch).

Writes bench/results/replicas.{md,json,png}. Real processes on loopback, real etcd.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient

from bench._common import pct, pyplot
from tests.integration.cp_harness import ControlPlane, auth, key_works
from tests.integration.replica_harness import ADMIN_KEY, Cluster, Replica, mlp_input
from tests.support.etcd import EtcdServer
from tests.support.models import mlp_onnx
from tests.support.procs import Proc, free_port, inferplex_cmd, wait_until

RESULTS = Path(__file__).parent / "results"


def _start_embedded_cp(base: Path, cluster: Cluster) -> ControlPlane:
    http_port, grpc_port = free_port(), free_port()
    data = base / "embedded-cp"
    proc = Proc(inferplex_cmd("controlplane", "--data-dir", str(data), "--http-port", str(http_port),
                              "--grpc-port", str(grpc_port), "--replica-id", "embedded"),
                base / "embedded-cp.log", env=cluster.env)
    cp = ControlPlane(proc, data, http_port, grpc_port, ADMIN_KEY)
    # ready as a replica is; not added to cluster.replicas, where leader() and the
    # failover's choice of survivor would see it
    cluster.wait_replica(Replica("embedded", cp))
    return cp


def _prepare_tenant(cp: ControlPlane) -> str:
    key = cp.create_tenant("bench")
    r = cp.upload(key, "mlp", mlp_onnx().data)
    assert r.status_code == 201, r.text
    cp.wait_model_status(key, "mlp", "ready")
    return key


def measure_latency(base: Path, cluster: Cluster, requests: int) -> dict[str, Any]:
    worker = next(iter(cluster.workers.values()))
    etcd_cp = cluster.replicas["a"].cp
    emb_cp = _start_embedded_cp(base, cluster)
    try:
        with emb_cp.admin() as c:  # the same worker, registered by URL
            r = c.post("/admin/instances", json={"http_url": f"127.0.0.1:{worker.http_port}",
                                                 "grpc_url": f"127.0.0.1:{worker.grpc_port}",
                                                 "memory_bytes": 256 * 2**20})
            assert r.status_code == 201, r.text
        keys = {"etcd": _prepare_tenant(etcd_cp), "embedded": _prepare_tenant(emb_cp)}
        cps = {"etcd": etcd_cp, "embedded": emb_cp}
        x = mlp_input(1)
        clients = {n: httpclient.InferenceServerClient(cp.http_url) for n, cp in cps.items()}
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        lat: dict[str, list[float]] = {"etcd": [], "embedded": []}
        rng = random.Random(0)
        try:
            for i in range(requests + 50):
                order = ["etcd", "embedded"]
                rng.shuffle(order)
                for name in order:
                    t0 = time.perf_counter()
                    clients[name].infer("mlp", [inp], headers=auth(keys[name]))
                    if i >= 50:  # warm-up: cold load, connection set-up
                        lat[name].append((time.perf_counter() - t0) * 1e3)
        finally:
            for c in clients.values():
                c.close()
        return {name: {"p50_ms": pct(v, 50), "p90_ms": pct(v, 90), "p99_ms": pct(v, 99),
                       "mean_ms": statistics.fmean(v), "n": len(v), "samples_ms": v}
                for name, v in lat.items()}
    finally:
        emb_cp.stop()


def _traffic(cp: ControlPlane, key: str, x: np.ndarray, stop: threading.Event,
             counts: dict[str, int]) -> None:
    with httpclient.InferenceServerClient(cp.http_url) as c:
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while not stop.is_set():
            try:
                c.infer("mlp", [inp], headers=auth(key))
                counts["ok"] += 1
            except Exception:  # counted: the report says how many failed
                counts["err"] += 1


def measure_failover(cluster: Cluster, trials: int) -> dict[str, Any]:
    key = cluster.replicas["a"].cp.create_tenant("failover")
    r = cluster.replicas["a"].cp.upload(key, "mlp", mlp_onnx().data)
    assert r.status_code == 201, r.text
    cluster.replicas["a"].cp.wait_model_status(key, "mlp", "ready")
    for replica in cluster.replicas.values():
        wait_until(lambda replica=replica: key_works(replica.cp, key), 10, "key everywhere")
    times, errors, served = [], 0, 0
    x = mlp_input(1)
    for _ in range(trials):
        leader = cluster.leader()
        assert leader is not None
        survivor = next(r for n, r in cluster.replicas.items() if n != leader)
        stop = threading.Event()
        counts = {"ok": 0, "err": 0}

        t = threading.Thread(target=_traffic, args=(survivor.cp, key, x, stop, counts), daemon=True)
        t.start()
        wait_until(lambda c=counts: c["ok"] > 10, 30, "traffic")
        killed = time.monotonic()
        cluster.kill_replica(leader)
        wait_until(lambda s=survivor: s.leader_view()["is_leader"], 60, "takeover", interval_s=0.02)
        times.append(time.monotonic() - killed)
        stop.set()
        t.join(10)
        errors += counts["err"]
        served += counts["ok"]
        cluster.start_replica(leader)
    return {"trials": trials, "seconds": times, "mean_s": statistics.fmean(times), "max_s": max(times),
            "requests_to_survivor_ok": served, "requests_to_survivor_failed": errors}


def measure_etcd_restart(cluster: Cluster, trials: int, outage_s: float) -> dict[str, Any]:
    a, b = cluster.replicas["a"].cp, cluster.replicas["b"].cp
    write_s, visible_s, outage_write_s = [], [], []
    for i in range(trials):
        cluster.etcd.stop()
        t0 = time.monotonic()
        with a.admin() as c:
            status = c.post("/admin/tenants", json={"name": f"outage{i}"}, timeout=60).status_code
        outage_write_s.append(time.monotonic() - t0)
        assert status == 503, status
        time.sleep(max(0.0, outage_s - (time.monotonic() - t0)))  # keep etcd down for the outage
        cluster.etcd.start()
        back = time.monotonic()

        def write(n: str = f"after{i}") -> bool:
            with a.admin() as c:
                return c.post("/admin/tenants", json={"name": n}, timeout=10).status_code in (201, 409)

        wait_until(write, 60, "a write", interval_s=0.02)
        write_s.append(time.monotonic() - back)
        with a.admin() as c:
            key = c.post(f"/admin/tenants/after{i}/keys", json={}).json()["key"]
        wait_until(lambda key=key: key_works(b, key), 60, "the other replica to see it", interval_s=0.02)
        visible_s.append(time.monotonic() - back)
    return {"trials": trials, "outage_s": outage_s, "write_during_outage_answer_s": outage_write_s,
            "first_write_after_restart_s": write_s, "visible_on_other_replica_s": visible_s}


def write_report(res: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    lat, fo, er = res["latency"], res["failover"], res["etcd_restart"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, color in (("etcd", "tab:blue"), ("embedded", "tab:orange")):
        xs = np.sort(lat[name]["samples_ms"])
        axes[0].plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{name} store", color=color)
    axes[0].set(xlabel="request latency through the gateway (ms)", ylabel="CDF",
                title="request path: etcd vs embedded store")
    axes[0].set_xlim(0, pct(lat["etcd"]["samples_ms"] + lat["embedded"]["samples_ms"], 99.5))
    axes[0].legend()
    axes[1].bar(range(1, len(fo["seconds"]) + 1), fo["seconds"], color="tab:red")
    axes[1].axhline(res["config"]["leader_ttl_s"], ls="--", color="grey", label="leader lease TTL")
    axes[1].set(xlabel="trial", ylabel="seconds", title="SIGKILL leader -> survivor leads")
    axes[1].legend()
    idx = np.arange(len(er["first_write_after_restart_s"]))
    axes[2].bar(idx - 0.2, er["first_write_after_restart_s"], 0.4, label="first write OK")
    axes[2].bar(idx + 0.2, er["visible_on_other_replica_s"], 0.4, label="seen by other replica")
    axes[2].set(xlabel="trial", ylabel="seconds after etcd is back", title="etcd restart recovery")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)

    slim = json.loads(json.dumps(res))
    for name in ("etcd", "embedded"):
        slim["latency"][name].pop("samples_ms")
    out.with_suffix(".json").write_text(json.dumps(slim, indent=2))
    cfg = res["config"]
    rows = "\n".join(
        f"| {name} | {lat[name]['p50_ms']:.2f} | {lat[name]['p90_ms']:.2f} | {lat[name]['p99_ms']:.2f} | "
        f"{lat[name]['mean_ms']:.2f} | {lat[name]['n']} |" for name in ("etcd", "embedded"))
    fmt = ", ".join
    out.with_suffix(".md").write_text(f"""# Replicas: request path on etcd vs embedded, failover, etcd recovery

`{cfg['command']}` — {cfg['machine']}. Real processes on loopback, {cfg["etcd"]}
(one member), leader lease TTL {cfg['leader_ttl_s']} s, instance lease TTL {cfg['instance_ttl_s']} s.

## Request-path latency (HTTP, tritonclient, MLP 64-128-10, batch 1, same worker)

Requests alternate between a control plane on etcd and one on the embedded store,
both in front of the same worker, so both see the same noise.

| store | p50 ms | p90 ms | p99 ms | mean ms | n |
|---|---|---|---|---|---|
{rows}

p50 ratio etcd/embedded: **{lat['etcd']['p50_ms'] / lat['embedded']['p50_ms']:.2f}** — the request path
reads watched caches (keys, catalog, instances, placements), never the store.

## Failover after SIGKILL of the placement leader ({fo['trials']} trials)

Seconds until the survivor reports itself leader: {fmt(f'{s:.2f}' for s in fo['seconds'])}
(mean {fo['mean_s']:.2f}, max {fo['max_s']:.2f}; bound: the lease TTL plus the survivor's
watch/poll). Requests sent to the survivor meanwhile: {fo['requests_to_survivor_ok']} ok,
{fo['requests_to_survivor_failed']} failed.

## etcd restart ({er['trials']} trials, etcd down {er['outage_s']:.0f} s each)

- a write during the outage is answered 503 after: {fmt(f'{s:.2f}' for s in er['write_during_outage_answer_s'])} s
- first successful write after etcd is back: {fmt(f'{s:.2f}' for s in er['first_write_after_restart_s'])} s
- that write visible through the other replica (its watch resumed): \
{fmt(f'{s:.2f}' for s in er['visible_on_other_replica_s'])} s

![replicas](replicas.png)
""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000, help="timed requests per store")
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--etcd-restarts", type=int, default=3)
    ap.add_argument("--outage-s", type=float, default=3.0)
    ap.add_argument("--leader-ttl-s", type=int, default=5, help="the default of Settings.leader_lease_ttl_s")
    ap.add_argument("--out", type=Path, default=RESULTS / "replicas.md")
    args = ap.parse_args()
    import os
    import platform
    import subprocess

    from tests.support.etcd import ETCD_BINARY

    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        base = Path(tmp)
        etcd = EtcdServer(base, name="bench")
        etcd.start()
        cluster = Cluster(base, etcd, env={"INFERPLEX_LEADER_LEASE_TTL_S": str(args.leader_ttl_s),
                                           "INFERPLEX_INSTANCE_LEASE_TTL_S": "5"})
        try:
            cluster.start_replica("a")
            cluster.start_replica("b")
            cluster.start_worker("w1", memory="512MiB")
            res: dict[str, Any] = {}
            print("latency ...", flush=True)
            res["latency"] = measure_latency(base, cluster, args.requests)
            print("failover ...", flush=True)
            res["failover"] = measure_failover(cluster, args.failovers)
            print("etcd restarts ...", flush=True)
            res["etcd_restart"] = measure_etcd_restart(cluster, args.etcd_restarts, args.outage_s)
        finally:
            cluster.stop()
            etcd.stop()
    version = subprocess.run([str(ETCD_BINARY), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    res["config"] = {
        "command": "python -m bench.replicas " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "etcd": version.strip(), "leader_ttl_s": args.leader_ttl_s, "instance_ttl_s": 5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
