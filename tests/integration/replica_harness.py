"""Several control-plane replicas on one real etcd, with self-registering workers.

    cluster = Cluster(tmp_path, etcd_server)
    a, b = cluster.start_replica("a"), cluster.start_replica("b")
    cluster.start_worker("w1")
    ...
    cluster.stop()

Every process is a real ``inferplex controlplane --etcd`` / ``inferplex worker
--register`` on free loopback ports; the replicas share one artifact directory (a
multi-node deployment mounts one shared volume there). Short TTLs keep failover
tests fast. ``stop()`` reaps everything, also after a failed test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.integration.cp_harness import ControlPlane, auth
from tests.support.etcd import EtcdServer
from tests.support.procs import Proc, free_port, inferplex_cmd

ADMIN_KEY = "replica-test-admin-key-0123456789"
INSTANCE_SECRET = "replica-test-instance-secret-0123456789"
INSTANCE_TTL_S = 2
LEADER_TTL_S = 2


@dataclass
class Replica:
    name: str
    cp: ControlPlane

    @property
    def proc(self) -> Proc:
        return self.cp.proc

    def alive(self) -> bool:
        return self.proc.alive()

    def leader_view(self) -> dict[str, Any]:
        with self.cp.admin() as c:
            r = c.get("/admin/leader", timeout=3.0)
            r.raise_for_status()
            return r.json()


@dataclass
class Worker:
    name: str
    proc: Proc
    http_port: int
    grpc_port: int

    @property
    def instance_id(self) -> str:
        return f"w-127.0.0.1-{self.grpc_port}"


class Cluster:
    def __init__(self, base: Path, etcd: EtcdServer, *, env: dict[str, str] | None = None) -> None:
        self.base = base
        self.etcd = etcd
        self.artifact_dir = base / "shared-artifacts"
        self.env = {
            "INFERPLEX_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "INFERPLEX_INSTANCE_LEASE_TTL_S": str(INSTANCE_TTL_S),
            "INFERPLEX_LEADER_LEASE_TTL_S": str(LEADER_TTL_S),
            # profiling is tested elsewhere; here it would only slow every upload down
            "INFERPLEX_PROFILE_ON_UPLOAD": "false",
            # replicas hand it to the workers in the registration answer (the workers get no env of it)
            "INFERPLEX_INSTANCE_RESTRICTED_VALUE": INSTANCE_SECRET,
            **(env or {}),
        }
        self.replicas: dict[str, Replica] = {}
        self.workers: dict[str, Worker] = {}
        self._starts = 0

    # ---- control-plane replicas ----------------------------------------------------------

    def start_replica(self, name: str, *, wait: bool = True) -> Replica:
        """A replica on fresh ports, or on the ports it had when restarted."""
        old = self.replicas.get(name)
        http_port = old.cp.http_port if old else free_port()
        grpc_port = old.cp.grpc_port if old else free_port()
        self._starts += 1
        data_dir = self.base / f"replica-{name}"
        proc = Proc(inferplex_cmd(
            "controlplane", "--etcd", self.etcd.url, "--data-dir", str(data_dir),
            "--artifact-dir", str(self.artifact_dir), "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), "--replica-id", name,
        ), self.base / f"replica-{name}.{self._starts}.log", env=self.env)
        replica = Replica(name, ControlPlane(proc, data_dir, http_port, grpc_port, ADMIN_KEY))
        self.replicas[name] = replica
        if wait:
            self.wait_replica(replica)
        return replica

    def wait_replica(self, replica: Replica, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            # ready and its tenant cache knows the admin key
            r = httpx.get(f"{replica.cp.url}/admin/leader",
                          headers=auth(ADMIN_KEY), timeout=1.0)
            return r.status_code == 200

        replica.proc.wait_ready(ready, timeout_s, f"replica {replica.name}")

    def kill_replica(self, name: str) -> None:
        self.replicas[name].proc.kill()

    def leader(self) -> str | None:
        """The leader as the store says it, asked through any live replica."""
        for replica in self.replicas.values():
            if replica.alive():
                try:
                    return replica.leader_view()["leader"]
                except (httpx.HTTPError, KeyError):
                    continue
        return None

    def live_replica(self) -> Replica:
        return next(r for r in self.replicas.values() if r.alive())

    # ---- workers ---------------------------------------------------------------------------

    def start_worker(self, name: str, *, memory: str = "256MiB", wait: bool = True,
                     same_ports: bool = False) -> Worker:
        """A worker on fresh ports (a new instance id, like a rescheduled pod), or on the
        ports it had (``same_ports``: the same id, like a container restarted in place)."""
        old = self.workers.get(name)
        if same_ports and old is not None:
            http_port, grpc_port = old.http_port, old.grpc_port
        else:
            http_port, grpc_port = free_port(), free_port()
        urls = ",".join(r.cp.url for r in self.replicas.values())
        self._starts += 1
        proc = Proc(inferplex_cmd(
            "worker", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--memory-budget", memory, "--register", urls,
        ), self.base / f"worker-{name}.{self._starts}.log",
            env={k: v for k, v in self.env.items() if k != "INFERPLEX_INSTANCE_RESTRICTED_VALUE"}
            | {"INFERPLEX_KEY": ADMIN_KEY})
        worker = Worker(name, proc, http_port, grpc_port)
        self.workers[name] = worker
        if wait:
            self.wait_worker(worker)
        return worker

    def wait_worker(self, worker: Worker, timeout_s: float = 60.0) -> None:
        """Until every live replica routes to it."""
        def seen_everywhere() -> bool:
            return all(any(i["instance_id"] == worker.instance_id and i["healthy"]
                           for i in r.cp.instances())
                       for r in self.replicas.values() if r.alive())

        worker.proc.wait_ready(seen_everywhere, timeout_s, f"worker {worker.name} to register")

    def kill_worker(self, name: str) -> None:
        self.workers[name].proc.kill()

    def instances(self) -> list[dict[str, Any]]:
        return self.live_replica().cp.instances()

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        return next((i for i in self.instances() if i["instance_id"] == instance_id), None)

    def holders(self, qualified: str) -> list[str]:
        return self.live_replica().cp.holders(qualified)

    # ---- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.proc.stop()
        for replica in self.replicas.values():
            replica.proc.stop(timeout_s=20.0)


# ---- helpers -------------------------------------------------------------------------------

def mlp_input(rows: int = 3) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, 64)).astype(np.float32)
