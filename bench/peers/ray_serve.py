"""Ray Serve as a peer: one multiplexed deployment, as Ray's docs show for many models.

``serve`` starts a Ray head (``ray start --head --block``, ``--num-cpus`` the budget's CPU
count, its temp dir in the work folder) under ``taskset``, then ``ray_app.py`` in the peer
venv deploys the app (see that file): one replica whose ``@serve.multiplexed`` loader
holds at most ``slots`` models (a count: Ray cannot be told bytes), LRU eviction, and
``@serve.batch`` (max 8, 2 ms; Ray splits batches by model id). Requests are raw float32
bodies to Serve's HTTP proxy on 127.0.0.1 with the ``serve_multiplexed_model_id`` header
(the load driver's BYTES client). ``RayServeDirect`` is the same app in Ray 2.56+'s
documented high-throughput mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), requests sent to the
replica's own direct-ingress HTTP port: ~1 ms of Ray's CPU per request against ~8 ms
through the proxy (see notes/ray.md).

Ray starts internal servers (GCS, raylet, agents, its client server) that this adapter
cannot keep off other interfaces, so it runs inside a private network namespace
(``needs_netns``). On exit: the head's process group is stopped, anything of Ray still
running from this work folder is killed by pid, then ``ray stop --force``; ``~/.ray``
and ``/tmp/ray`` are removed if this run created them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from bench import loadgen
from bench.peers import base
from bench.peers.base import Budget, PeerModel
from tests.support.procs import free_port

RAY_VERSION = "2.60.0"
REQUIREMENTS = [f"ray[serve]=={RAY_VERSION}", base.ONNXRUNTIME_PIN, base.TORCH_PIN, "numpy"]
APP = Path(__file__).with_name("ray_app.py")
MAX_ONGOING_REQUESTS = 128  # per replica; Ray's default 5 stalls its router once full
MAX_QUEUED_REQUESTS = -1  # Ray's default: the router's queue is unbounded
MAX_BATCH_SIZE, BATCH_WAIT_S = 8, 0.002
OBJECT_STORE_BYTES = 128 * 2**20  # Ray's plasma store (default 30% of RAM); models never pass through it
START_TIMEOUT_S = 240.0
TENANTS = 3  # labels only, as inferplex's adapter names them: Ray has no tenants
# AF_UNIX paths are at most 107 bytes: Ray's sockets live at <temp>/session_<39 chars>/sockets/plasma_store
_MAX_TEMP_DIR_CHARS = 107 - 61


def resident_bytes(m: PeerModel) -> int:
    """A model's resident size in the replica, estimated: 1.3x its weights plus 4 MiB."""
    return int(1.3 * m.weight_bytes) + 4 * 2**20


def cpu_count(cpus: str) -> int:
    """How many CPUs a taskset list names ("1", "0-3", "1,3")."""
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def tenant_of(m: PeerModel) -> str:
    return f"team{int(m.name[1:3]) % TENANTS}"


class Running:
    def __init__(self, head: subprocess.Popen[bytes], port: int) -> None:
        self.head, self.port = head, port
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)

    def stream(self, model: PeerModel, schedule: Sequence[float]) -> loadgen.Stream:
        return loadgen.Stream(tenant_of(model), model.name, schedule, {model.input_name: model.sample_input},
                              f"127.0.0.1:{self.port}/infer", kind=loadgen.ClientKind.BYTES, name=model.name,
                              headers={"serve_multiplexed_model_id": "{model}"})

    def infer(self, model: PeerModel, x: np.ndarray) -> np.ndarray:
        r = self._client.post("/infer", content=base.raw_float32(x),
                              headers={"serve_multiplexed_model_id": model.name,
                                       "content-type": "application/octet-stream"})
        if r.status_code != 200:
            raise RuntimeError(f"{model.name}: {r.status_code} {r.text[:300]}")
        shape = tuple(int(d) for d in r.headers["x-shape"].split(","))
        return np.frombuffer(r.content, dtype="<f4").reshape(shape)

    def pids(self) -> list[int]:
        return [self.head.pid]

    def counters(self) -> Mapping[str, float]:
        """The multiplexed loader's own counts; every load is a cold start (the request that
        missed waits for it). Asked like any request: under overload it waits in the replica's queue."""
        r = self._client.get("/stats", timeout=10.0)
        r.raise_for_status()
        stats = r.json()
        loads = float(stats["loads"])
        return {"loads": loads, "evictions": float(stats["evictions"]), "cold starts": loads}

    def close(self) -> None:
        self._client.close()


class RayServe:
    name = "ray"
    needs_netns = True

    def __init__(self, batching: bool = True, direct_ingress: bool = False) -> None:
        self.batching = batching  # False: serve unbatched (for comparison; the bench batches)
        # True: Ray 2.56+'s documented high-throughput mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=1), and
        # requests go to the ingress replica's own HTTP server instead of the proxy
        self.direct_ingress = direct_ingress
        mode = ", @serve.batch" if batching else ", unbatched"
        if direct_ingress:
            mode += ", throughput-optimized, direct ingress"
        self.label = f"Ray Serve {RAY_VERSION} (multiplexed{mode})"

    def install(self) -> Path:
        return base.ensure_venv("ray", REQUIREMENTS)  # one venv for both modes

    def app_config(self, models: Sequence[PeerModel], budget: Budget, http_port: int) -> dict:
        return {
            "http_port": http_port,
            "threads": budget.threads,
            "slots": budget.slots(models, resident_bytes),
            "replica_num_cpus": self.replica_num_cpus(budget),
            "max_ongoing_requests": MAX_ONGOING_REQUESTS,
            "max_queued_requests": MAX_QUEUED_REQUESTS,
            "batch": {"max_batch_size": MAX_BATCH_SIZE, "wait_s": BATCH_WAIT_S} if self.batching else None,
            "models": {m.name: {"path": str(m.path), "format": m.format, "input_shape": list(m.input_shape)}
                       for m in models},
        }

    @staticmethod
    def replica_num_cpus(budget: Budget) -> float:
        return float(cpu_count(budget.cpus))  # the whole budget: Serve's controller and proxy ask for 0

    @contextmanager
    def serve(self, workdir: Path, models: Sequence[PeerModel], budget: Budget) -> Iterator[Running]:
        py = self.install()
        bindir = py.parent
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        home_ray = Path.home() / ".ray"
        tmp_ray = Path(tempfile.gettempdir()) / "ray"
        created = [p for p in (home_ray, tmp_ray) if not p.exists()]
        temp_dir = workdir / "rt"
        scratch = None
        if len(str(temp_dir)) > _MAX_TEMP_DIR_CHARS:  # Ray's socket paths would not fit
            scratch = Path(tempfile.mkdtemp(prefix="ray-"))
            temp_dir = scratch
        gcs_port, http_port = free_port(), free_port()
        config = self.app_config(models, budget, http_port)
        (workdir / "app.json").write_text(json.dumps(config, indent=1))
        env = {**base.thread_env(budget.threads), "RAY_USAGE_STATS_ENABLED": "0"}
        http_direct = 0
        if self.direct_ingress:  # the replica's own servers: one free port each, as Ray's range
            http_direct, grpc_direct = free_port(), free_port()
            env.update({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_direct),
                        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_direct + 1),  # exclusive
                        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_direct),
                        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_direct + 1)})
        head_cmd = [str(bindir / "ray"), "start", "--head", "--block", "--num-cpus", str(cpu_count(budget.cpus)),
                    "--node-ip-address", "127.0.0.1", "--port", str(gcs_port), "--temp-dir", str(temp_dir),
                    "--include-dashboard", "false", "--disable-usage-stats",
                    "--object-store-memory", str(OBJECT_STORE_BYTES),
                    "--ray-client-server-port", str(free_port()),
                    "--dashboard-agent-listen-port", str(free_port()),
                    "--metrics-export-port", str(free_port())]
        head = base.start(base.pinned(head_cmd, budget.cpus), workdir / "ray-head.log", env=env, cwd=workdir)
        running: Running | None = None
        try:
            deploy = base.start(base.pinned([str(py), str(APP), "--address", f"127.0.0.1:{gcs_port}",
                                             "--config", str(workdir / "app.json")], budget.cpus),
                                workdir / "deploy.log", env=env, cwd=workdir)
            try:
                _wait_exit(deploy, head, START_TIMEOUT_S, workdir / "deploy.log")
            finally:
                base.stop(deploy)
            port = http_direct if self.direct_ingress else http_port
            base.wait_http(f"http://127.0.0.1:{port}/stats", 60.0, head, workdir / "ray-head.log")
            running = Running(head, port)
            yield running
        finally:
            if running is not None:
                running.close()
            base.stop(head, timeout_s=10.0)
            _kill_leftovers(temp_dir)
            subprocess.run([str(bindir / "ray"), "stop", "--force"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False, timeout=60)
            for p in created:
                shutil.rmtree(p, ignore_errors=True)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def settings(self, models: Sequence[PeerModel], budget: Budget) -> dict[str, str]:
        slots = budget.slots(models, resident_bytes)
        return {
            "version": f"ray[serve]=={RAY_VERSION}, {base.ONNXRUNTIME_PIN}, {base.TORCH_PIN} (CPU)",
            "command": f"taskset -c {budget.cpus} ray start --head --block --num-cpus {cpu_count(budget.cpus)} "
                       f"--object-store-memory {OBJECT_STORE_BYTES} --include-dashboard false; "
                       "then serve.run(app) from bench/peers/ray_app.py",
            "processes": "Ray head (GCS, raylet, agents, client server, log monitor), Serve controller, "
                         "HTTP proxy, 1 replica hosting every loaded model in one process",
            "replicas": f"1 (num_cpus {self.replica_num_cpus(budget):g}; no autoscaling)",
            "memory": f"max_num_models_per_replica {slots}: the budget {budget.model_memory_bytes / 2**20:.0f} MiB "
                      "over the mean estimated resident size (1.3 x weights + 4 MiB); Ray counts models, not bytes",
            "eviction": "Ray's multiplexer: LRU on a cache miss; the request that misses waits for the load",
            "batching": (f"@serve.batch(max_batch_size={MAX_BATCH_SIZE}, batch_wait_timeout_s={BATCH_WAIT_S}); "
                         "Ray splits each batch by multiplexed model id; max_concurrent_batches 1 (default)")
                        if self.batching else "none",
            "queues": f"max_ongoing_requests {MAX_ONGOING_REQUESTS} per replica (default 5 stalls the router), "
                      f"max_queued_requests {MAX_QUEUED_REQUESTS} (unbounded, Ray's default); "
                      "no request timeout at the proxy (default)",
            "runtimes": f"onnxruntime CPU, intra-op {budget.threads} thread(s), sequential; "
                        f"torch.jit, {budget.threads} thread(s), 1 inter-op; inference in the replica's event loop",
            "protocol": "HTTP POST of raw float32 bytes, header serve_multiplexed_model_id (aiohttp client), "
                        + ("to the replica's direct-ingress port (RAY_SERVE_THROUGHPUT_OPTIMIZED=1: no proxy hop, "
                           "user code on the replica's loop, buffered request logs, gRPC between actors)"
                           if self.direct_ingress else "through Serve's HTTP proxy (default mode)"),
            "network": "private network namespace, loopback only (Ray binds its internal servers itself)",
        }

    def capabilities(self) -> dict[str, str]:
        return {
            "tenant isolation": "no: every model runs in one replica process; no per-tenant keys or quotas",
            "SLO-aware admission": "no: requests queue at the replica and then, unbounded, in the router; "
                                   "max_queued_requests could refuse by count (503), never by deadline",
            "memory shares per tenant": "no: a count of models per replica, not bytes, not per tenant",
            "eviction": "yes: LRU by count per replica; loads on demand (the missing request waits)",
            "batching across requests": "yes: @serve.batch, batches split by model id",
            "protocol": "partly: HTTP with an app-defined body (raw bytes here) or Python handles; no KServe v2",
        }


def _wait_exit(proc: subprocess.Popen[bytes], head: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Until the deploy script exits 0 (the app is running); raise with its log otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc == 0:
            return
        if rc is not None:
            raise RuntimeError(f"deploying the Ray Serve app failed ({rc}):\n{base.tail(log)}")
        if head.poll() is not None:
            raise RuntimeError(f"the Ray head exited ({head.returncode}) while the app deployed:\n{base.tail(log)}")
        time.sleep(0.2)  # polling the deploy script's exit: it has no other signal
    raise TimeoutError(f"the Ray Serve app was not running after {timeout_s:g} s:\n{base.tail(log)}")


def _kill_leftovers(temp_dir: Path) -> None:
    """SIGKILL, by pid, any process whose command line names this run's Ray temp dir
    (a worker Ray moved out of the head's process group)."""
    needle = str(temp_dir).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass



class RayServeDirect(RayServe):
    """The same app in Ray's throughput-optimized mode, requests straight to the replica."""

    name = "ray_direct"

    def __init__(self) -> None:
        super().__init__(direct_ingress=True)
