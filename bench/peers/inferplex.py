"""inferplex as a peer: ``inferplex up`` (the README's command), one embedded worker.

Every process of it (the control plane and its worker) is pinned to the budget's CPUs,
like every other system's; the worker's memory budget is the budget's model memory, and
the control plane loads and evicts within it. The models belong to three tenants (a
model's copy index), uploaded through the REST API with their SLOs; requests go through
the v2 gateway with unmodified tritonclient (HTTP, binary tensors).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bench import loadgen
from bench.peers.base import Budget, PeerModel
from tests.integration.cp_harness import ControlPlane, auth, running_up

TENANTS = 3
MAX_BATCH_SIZE = 8
COUNTERS = {"loads": "inferplex_model_loads_total", "evictions": "inferplex_evictions_total",
            "cold starts": "inferplex_cold_starts_total"}


def tenant_of(m: PeerModel) -> str:
    return f"team{int(m.name[1:3]) % TENANTS}"


class Running:
    def __init__(self, cp: ControlPlane, keys: dict[str, str]) -> None:
        self.cp, self.keys = cp, keys

    def stream(self, model: PeerModel, schedule: Sequence[float]) -> loadgen.Stream:
        t = tenant_of(model)
        return loadgen.Stream(t, model.name, schedule, {model.input_name: model.sample_input}, self.cp.http_url,
                              key=self.keys[t], name=model.name)

    def infer(self, model: PeerModel, x: np.ndarray) -> np.ndarray:
        """One request; a cold model is refused (503: it cannot meet its SLO while it loads)
        and asked again until it is loaded."""
        deadline = time.monotonic() + 60
        with httpclient.InferenceServerClient(self.cp.http_url, network_timeout=60, connection_timeout=60) as c:
            inp = httpclient.InferInput(model.input_name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            while True:
                try:
                    res = c.infer(model.name, [inp], headers=auth(self.keys[tenant_of(model)]))
                    return res.as_numpy(model.output_name)
                except InferenceServerException as exc:
                    if exc.status() != "503" or time.monotonic() > deadline:
                        raise
                time.sleep(0.1)  # polling until the model is loaded: the gateway said retry

    def pids(self) -> list[int]:
        return [self.cp.proc.popen.pid]

    def counters(self) -> Mapping[str, float]:
        out: dict[str, float] = {}
        for line in self.cp.metrics().splitlines():
            for label, family in COUNTERS.items():
                if line.startswith(family) and not line.startswith("#"):
                    out[label] = out.get(label, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


class Inferplex:
    name = "inferplex"
    label = "inferplex (this repo)"
    needs_netns = False

    def install(self) -> Path:
        return Path(sys.executable)  # the project's own venv (make install)

    @contextmanager
    def serve(self, workdir: Path, models: Sequence[PeerModel], budget: Budget) -> Iterator[Running]:
        workdir.mkdir(parents=True, exist_ok=True)
        args = ("--cpus", budget.cpus, "--worker-cpus", budget.cpus, "--worker-threads", str(budget.threads))
        with running_up(workdir / "data", workdir / "up.log", workers=1,
                        worker_memory=str(budget.model_memory_bytes), extra_args=args, timeout_s=120) as cp:
            keys = {f"team{i}": cp.create_tenant(f"team{i}") for i in range(TENANTS)}
            for m in models:  # one at a time: profiles taken side by side would disturb each other
                upload(cp, keys[tenant_of(m)], m)
            yield Running(cp, keys)

    def settings(self, models: Sequence[PeerModel], budget: Budget) -> dict[str, str]:
        return {
            "command": f"inferplex up --workers 1 --worker-memory {budget.model_memory_bytes} --cpus {budget.cpus} "
                       f"--worker-cpus {budget.cpus} --worker-threads {budget.threads}",
            "processes": "control plane (gateway, scheduler, placement, embedded store) + 1 worker "
                         "(one sandboxed model-host process per loaded model)",
            "memory": f"worker budget {budget.model_memory_bytes / 2**20:.0f} MiB of models by their measured "
                      "resident size; the control plane evicts by cost",
            "batching": f"the scheduler's, across requests, max_batch_size {MAX_BATCH_SIZE} per model, "
                        "sized by each request's deadline (no fixed delay)",
            "admission": "refuses (503/429) what its predictions say cannot meet the SLO",
            "tenants": f"{TENANTS} (a model's copy index), default quotas and equal shares",
            "protocol": "KServe v2 HTTP, tritonclient.http.aio, binary tensors",
            "models loaded at start": "none pinned: uploaded and profiled, then loaded on demand",
        }

    def capabilities(self) -> dict[str, str]:
        return {
            "tenant isolation": "yes: API keys per tenant, sandboxed model hosts, per-tenant quotas",
            "SLO-aware admission": "yes: refuses at once what cannot meet its SLO",
            "memory shares per tenant": "yes: shares and quotas per tenant",
            "eviction": "yes: cost-based (demand x reload time), loads on demand",
            "batching across requests": "yes: deadline-aware, per model",
            "protocol": "KServe v2 HTTP + gRPC",
        }


def upload(cp: ControlPlane, key: str, m: PeerModel) -> None:
    opts: dict[str, object] = {"max_batch_size": MAX_BATCH_SIZE, "slo_ms": m.slo_ms}
    if m.format == "torchscript":
        out_dim = int(m.sample_output.shape[1])
        opts["inputs"] = [{"name": m.input_name, "datatype": "FP32", "dims": list(m.input_shape)}]
        opts["outputs"] = [{"name": m.output_name, "datatype": "FP32", "dims": [out_dim]}]
    for _ in range(3):  # the upload's confined check can time out on a loaded machine: again
        r = cp.upload(key, m.name, m.path.read_bytes(), **opts)
        if not (r.status_code == 400 and "could not be checked" in r.text):
            break
    if r.status_code != 201:
        raise RuntimeError(f"upload {m.name}: {r.status_code} {r.text}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        latest = (cp.model_status(key, m.name).get("versions") or [{}])[-1]
        if latest.get("status") == "ready":
            return
        if latest.get("status") == "failed":
            raise RuntimeError(f"upload {m.name}: failed: {latest.get('reason') or latest}")
        time.sleep(0.2)  # polling the model's status: the profiler has no completion event
    raise TimeoutError(f"upload {m.name}: not ready after 300 s: {latest}")
