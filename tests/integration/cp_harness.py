"""``inferplex up`` as a real process for end-to-end tests, plus small REST helpers.

    with running_up(tmp_path / "data", tmp_path / "up.log") as cp:
        key = cp.create_tenant("acme")
        cp.upload(key, "mlp", mlp_onnx().data)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kserve.restricted import DEFAULT_KEY, InstanceCredential
from tests.support.models import TEST_SLO_MS
from tests.support.procs import LoopbackServer, Proc, free_port, inferplex_cmd, wait_until


@dataclass
class ControlPlane(LoopbackServer):
    proc: Proc
    data_dir: Path
    http_port: int
    grpc_port: int
    admin_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def instance_credential(self) -> InstanceCredential:
        """What ``up`` restricts its workers with (kept in data_dir/instance.key): an
        external worker the test adds must demand the same to be driven."""
        return InstanceCredential(DEFAULT_KEY, (self.data_dir / "instance.key").read_text().strip())

    def create_tenant(self, name: str) -> str:
        """Create a tenant and return a fresh key for it."""
        with self.admin() as c:
            r = c.post("/admin/tenants", json={"name": name})
            assert r.status_code in (201, 409), r.text
            r = c.post(f"/admin/tenants/{name}/keys", json={})
            assert r.status_code == 201, r.text
            return r.json()["key"]

    def upload(self, key: str, name: str, data: bytes, **options: Any) -> httpx.Response:
        """Tests not about the SLO get a generous one: a first request waits for the cold
        load, and on a busy CI machine a load can outlast the default 100 ms."""
        options.setdefault("slo_ms", TEST_SLO_MS)
        params = {"name": name}
        for k, v in options.items():
            params[k] = json.dumps(v) if isinstance(v, list | dict) else str(v)
        with self.client(key) as c:
            return c.post("/v1/models", params=params, content=data,
                          headers={"Content-Type": "application/octet-stream"})

    def model_status(self, key: str, name: str) -> dict[str, Any]:
        with self.client(key) as c:
            r = c.get(f"/v1/models/{name}")
            r.raise_for_status()
            return r.json()

    def wait_model_status(self, key: str, name: str, want: str = "ready", timeout_s: float = 60.0) -> None:
        def latest_status() -> bool:
            body = self.model_status(key, name)
            versions = body.get("versions") or [body]
            return versions[-1]["status"] == want

        wait_until(latest_status, timeout_s, f"model {name} to be {want}", interval_s=0.2)

    def instances(self) -> list[dict[str, Any]]:
        with self.admin() as c:
            r = c.get("/admin/instances")
            r.raise_for_status()
            return r.json()

    def holders(self, qualified: str) -> list[str]:
        """Instances whose placement includes this model (instance-level name, tenant__model)."""
        return [i["instance_id"] for i in self.instances()
                if any(m["name"] == qualified for m in i["models"])]

    def metrics(self) -> str:
        with self.admin() as c:
            return c.get("/metrics").text

    def stop(self) -> int | None:
        return self.proc.stop(timeout_s=20.0)


def auth(key: str) -> dict[str, str]:
    """A tenant's key as tritonclient headers (lowercase: gRPC metadata keys must be)."""
    return {"authorization": f"Bearer {key}"}


def http_infer(cp: ControlPlane, key: str, model: str, x: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
    """One MLP-style request (FP32 INPUT0 -> OUTPUT0) through the gateway over HTTP."""
    with httpclient.InferenceServerClient(cp.http_url, network_timeout=timeout_s,
                                          connection_timeout=timeout_s) as c:
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], headers=auth(key))
        return res.as_numpy("OUTPUT0")


def grpc_infer(cp: ControlPlane, key: str, model: str, x: np.ndarray) -> np.ndarray:
    """The same over gRPC."""
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], headers=auth(key), client_timeout=30.0)
        return res.as_numpy("OUTPUT0")


def key_works(cp: ControlPlane, key: str) -> bool:
    with cp.client(key) as c:
        return c.get("/v1/models").status_code == 200


def metric_value(text: str, series: str) -> float:
    """The value of one exact series line in Prometheus text; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def start_up(data_dir: Path, log_path: Path, *, workers: int = 2, worker_memory: str = "512MiB",
             env: dict[str, str] | None = None, timeout_s: float = 90.0,
             extra_args: tuple[str, ...] = ()) -> ControlPlane:
    http_port, grpc_port = free_port(), free_port()
    proc = Proc(inferplex_cmd("up", "--data-dir", str(data_dir), "--workers", str(workers),
                              "--worker-memory", worker_memory, "--http-port", str(http_port),
                              "--grpc-port", str(grpc_port), *extra_args), log_path, env=env)

    def ready() -> bool:
        r = httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1.0)
        return r.status_code == 200 and (data_dir / "admin.key").exists()

    try:
        proc.wait_ready(ready, timeout_s, "inferplex up")
    except BaseException:
        proc.stop()
        raise
    admin_key = (data_dir / "admin.key").read_text().strip()
    return ControlPlane(proc, data_dir, http_port, grpc_port, admin_key)


@contextmanager
def running_up(data_dir: Path, log_path: Path, **kwargs: Any) -> Iterator[ControlPlane]:
    cp = start_up(data_dir, log_path, **kwargs)
    try:
        yield cp
    finally:
        cp.stop()


class OtherTenant:
    """A bystander tenant's HTTP requests to its model ``mlp`` in a loop on a thread, while a
    test does something hostile: records each latency and every failure (with its message)."""

    def __init__(self, cp: ControlPlane, key: str, model: str = "mlp") -> None:
        self.cp, self.key, self.model = cp, key, model
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        x = np.ones((1, 64), np.float32)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                http_infer(self.cp, self.key, self.model, x)
            except Exception as exc:  # collected and asserted on by the test
                message = exc.message() if isinstance(exc, InferenceServerException) else ""
                self.failures.append(f"{exc!r} {message}")
            self.latencies.append(time.monotonic() - t0)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(0.99 * (len(ordered) - 1))]

    def __enter__(self) -> OtherTenant:
        self._thread.start()
        wait_until(lambda: self.latencies, 30, "the other tenant's first request")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@contextmanager
def steady_traffic(cp: ControlPlane, key: str, model: str, x: np.ndarray, want: np.ndarray,
                   callers: int = 2) -> Iterator[list[str]]:
    """Closed-loop HTTP callers of ``model`` while the block runs: each answer is "ok" (the
    right result) or the failure's repr and message, appended to the list yielded."""
    answered: list[str] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                out = http_infer(cp, key, model, x)
                answered.append("ok" if np.allclose(out, want, rtol=1e-4, atol=1e-5) else "wrong")
            except Exception as exc:  # every failure is collected and shown by the caller's assert
                message = exc.message() if isinstance(exc, InferenceServerException) else ""
                answered.append(f"{exc!r} {message}")

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for t in threads:
        t.start()
    try:
        yield answered
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
