"""What the scheduler benchmarks (overload, noisy neighbour, batching) share.

Two ``inferplex up`` side by side, the same build: one with the scheduler
(``INFERPLEX_SCHEDULER=true``), one with today's pass-through (``false``). Each has
one embedded worker with one intra-op thread, pinned to CPU 1; both control
planes and the load driver (this process) are pinned to CPU 0, so the instance's
core is the one that saturates, not the driver's. The two are measured in
alternating steps of one run, so both see the same machine.

Models: the test models (``tests/support/models.py``: mlp, cnn, wide, identity)
run in 0.002-0.35 ms here, below the ~0.25 ms an instance spends per request
around the execution, so a mix of them alone would saturate the gateway's core
first. ``dense_stack`` adds models whose execute time is set by their depth
(a 512x512 MatMul + Tanh per layer, one shared weight, ~14 us per layer per row).
SLOs come from each model's execute time measured in this process on the
instance's CPU before the services start (``calibrate_slos``).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bench import loadgen
from bench._common import pct
from tests.integration.cp_harness import ControlPlane, running_up
from tests.support import models as test_models
from tests.support.models import ModelArtifact

RESULTS = Path(__file__).resolve().parent / "results"
INSTANCE_CPUS = "1"
DRIVER_CPUS = "0"


def dense_stack(name: str, layers: int, width: int = 512, max_batch_size: int = 8) -> ModelArtifact:
    """[batch, width] -> ``layers`` x (MatMul by one shared [width, width] weight, Tanh)."""
    w = (np.random.default_rng(3).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, prev = [], "INPUT0"
    for i in range(layers):
        out = "OUTPUT0" if i == layers - 1 else f"h{i}"
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [out])]
        prev = out
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", test_models.ONNX_OPSET)])
    model.ir_version = test_models.ONNX_IR_VERSION
    config = {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": max_batch_size,
              "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [width]}],
              "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [width]}]}
    return ModelArtifact(config, "model.onnx", model.SerializeToString())


@dataclass(frozen=True)
class BenchModel:
    """One model as a benchmark uploads and calls it."""

    name: str
    artifact: ModelArtifact
    request: dict[str, np.ndarray]  # one request's tensors (batch 1)
    max_batch_size: int
    slo_ms: float = 0.0
    exec_p99_ms: float = 0.0  # measured in-process on the instance's CPU


def _request(artifact: ModelArtifact, rng: np.random.Generator) -> dict[str, np.ndarray]:
    inp = artifact.config["input"][0]
    dims = [16 if d < 0 else d for d in inp["dims"]]
    return {inp["name"]: rng.standard_normal([1, *dims]).astype(np.float32)}


def _bench_model(artifact: ModelArtifact, rng: np.random.Generator) -> BenchModel:
    return BenchModel(artifact.config["name"], artifact, _request(artifact, rng),
                      min(8, artifact.config["max_batch_size"]))


def tiny_models() -> list[BenchModel]:
    """The test models, ~2-350 us at batch 1: below what the control plane spends per request
    (~1.2 ms of CPU on its core here), so a load of them saturates the gateway's core, not
    the instance's."""
    rng = np.random.default_rng(0)
    arts = [test_models.identity("FP32")("identity"), test_models.mlp_onnx("mlp"), test_models.cnn_onnx("cnn"),
            test_models.wide_onnx("wide")]
    return [_bench_model(a, rng) for a in arts]


DENSE_LAYERS = (40, 80, 140, 200, 300, 400, 550, 700)


def mixed_models() -> list[BenchModel]:
    """Eight models from ~0.6 to ~10 ms of execute time at batch 1 (``dense_stack`` depths):
    the instance saturates at ~170 req/s, so 2x its capacity is a load the control plane's
    core still carries beside the driver, and the benchmark measures the scheduler's
    decisions about instance time, not a gateway starved of CPU."""
    rng = np.random.default_rng(0)
    return [_bench_model(dense_stack(f"dense{n}", n), rng) for n in DENSE_LAYERS]


def all_models() -> list[BenchModel]:
    return tiny_models() + mixed_models()


def calibrate_slos(bench_models: Sequence[BenchModel], *, factor: float = 5.0, overhead_ms: float = 2.0,
                   floor_ms: float = 10.0, runs: int = 40) -> list[BenchModel]:
    """Each model's SLO: ``factor`` x (its batch-1 execute p99, measured here on the
    instance's CPU with one thread, + ``overhead_ms``: ~1 ms for the two loopback hops and
    ~1 ms for the model host's own hop, what its profile shows above this), at least
    ``floor_ms``, rounded up to 5 ms. Pins this process to the instance's CPU meanwhile."""
    import onnxruntime as ort

    from worker.affinity import parse_cpus, pin_to

    before = os.sched_getaffinity(0)
    pin_to(parse_cpus(INSTANCE_CPUS))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    out = []
    try:
        for m in bench_models:
            session = ort.InferenceSession(m.artifact.data, opts, providers=["CPUExecutionProvider"])
            for _ in range(5):
                session.run(None, m.request)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                session.run(None, m.request)
                times.append((time.perf_counter() - t0) * 1e3)
            p99 = pct(times, 99)
            slo = max(floor_ms, 5.0 * np.ceil(factor * (p99 + overhead_ms) / 5.0))
            out.append(BenchModel(m.name, m.artifact, m.request, m.max_batch_size, float(slo), p99))
    finally:
        os.sched_setaffinity(0, before)
    return out


@dataclass
class Service:
    """One ``inferplex up`` and its tenants' keys."""

    label: str  # "scheduler" | "pass-through"
    cp: ControlPlane
    keys: dict[str, str] = field(default_factory=dict)

    def upload(self, tenant: str, bench_models: Sequence[BenchModel]) -> None:
        """Create the tenant (if new) and upload every model with its SLO; wait until each is
        ready (profiled) and resident (one warm request answered)."""
        if tenant not in self.keys:
            self.keys[tenant] = self.cp.create_tenant(tenant)
        key = self.keys[tenant]
        for m in bench_models:  # one at a time: profiles taken side by side would disturb each other
            r = self.cp.upload(key, m.name, m.artifact.data, max_batch_size=m.max_batch_size, slo_ms=m.slo_ms)
            assert r.status_code == 201, f"{self.label}: upload {m.name}: {r.status_code} {r.text}"
            self.cp.wait_model_status(key, m.name, "ready", timeout_s=300)

    def restore_failed(self, tenant: str, bench_models: Sequence[BenchModel]) -> list[str]:
        """Upload again (a new version) every model whose latest version failed: an instance
        quarantines a model whose executions were stopped at their deadline 3 times in a row,
        which overload alone causes when requests wait inside the instance (the pass-through).
        Returns the names restored, so the next step starts with every model resident."""
        key = self.keys[tenant]
        failed = [m for m in bench_models
                  if (self.cp.model_status(key, m.name).get("versions") or [{}])[-1].get("status") == "failed"]
        self.upload(tenant, failed)
        return [m.name for m in failed]

    def patch_tenant(self, tenant: str, **policy: object) -> None:
        with self.cp.admin() as c:
            r = c.patch(f"/admin/tenants/{tenant}", json=policy)
            assert r.status_code == 200, f"{self.label}: PATCH {tenant}: {r.status_code} {r.text}"

    def stream(self, tenant: str, m: BenchModel, schedule: Sequence[float], name: str = "") -> loadgen.Stream:
        return loadgen.Stream(tenant, m.name, schedule, m.request, self.cp.http_url, key=self.keys[tenant],
                              name=name)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the control plane (the ``up`` process, not its
        workers) has used so far."""
        fields = Path(f"/proc/{self.cp.proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_sizes(self, since: float) -> list[int]:
        """The batch size of every execution observed since ``since`` (epoch seconds), from
        the accuracy log (``GET /admin/predictions``, bounded: the most recent ones)."""
        with self.cp.admin() as c:
            r = c.get("/admin/predictions", params={"since": since})
            r.raise_for_status()
            return [row["batch"] for row in r.json()["samples"]]

    def decisions(self) -> dict[str, float]:
        """``inferplex_scheduler_decisions_total`` summed by reason (empty for the pass-through)."""
        out: dict[str, float] = {}
        for line in self.cp.metrics().splitlines():
            if line.startswith("inferplex_scheduler_decisions_total{"):
                labels, value = line.rsplit(" ", 1)
                reason = labels.split('reason="', 1)[1].split('"', 1)[0]
                out[reason] = out.get(reason, 0.0) + float(value)
        return out


@contextmanager
def two_services(tmp: Path, worker_memory: str = "1GiB") -> Iterator[dict[str, Service]]:
    """``inferplex up`` with the scheduler and one without, both pinned (see the module doc)."""
    pinning = ("--worker-cpus", INSTANCE_CPUS, "--cpus", DRIVER_CPUS, "--worker-threads", "1")
    with ExitStack() as stack:
        out = {}
        for label, on in (("scheduler", "true"), ("pass-through", "false")):
            d = tmp / label
            d.mkdir(parents=True, exist_ok=True)
            cp = stack.enter_context(running_up(d / "data", d / "up.log", workers=1, worker_memory=worker_memory,
                                                env={"INFERPLEX_SCHEDULER": on}, extra_args=pinning))
            out[label] = Service(label, cp)
        yield out


def warm(service: Service, tenant: str, bench_models: Sequence[BenchModel], requests: int = 20) -> None:
    """One request per model alone first (its cold load: requests queued behind a load inside
    a pass-through's instance overrun their deadline, and 3 stops in a row quarantine the
    model), then a few more each: connections, caches and the predictor's online window are
    warm before anything is timed."""
    for m in bench_models:
        loadgen.run([service.stream(tenant, m, [0.0])], request_timeout_s=30)
    streams = [service.stream(tenant, m, loadgen.constant(50, requests / 50)) for m in bench_models]
    loadgen.run(streams, max_in_flight=64, request_timeout_s=10)
    service.restore_failed(tenant, bench_models)


def settle(service: Service, tenant: str, probe: BenchModel, timeout_s: float = 60.0) -> float:
    """Wait until the service answers a small request quickly again (a pass-through's backlog
    drains inside its instance after the driver gave up on it); returns the seconds waited."""
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {service.keys[tenant]}"}
    name, arr = next(iter(probe.request.items()))
    body = {"inputs": [{"name": name, "shape": list(arr.shape), "datatype": "FP32",
                        "data": arr.ravel().tolist()}]}
    fast = 0
    with httpx.Client(base_url=service.cp.url, headers=headers, timeout=30) as c:
        while time.perf_counter() - t0 < timeout_s and fast < 5:
            s = time.perf_counter()
            ok = c.post(f"/v2/models/{probe.name}/infer", json=body).status_code == 200
            fast = fast + 1 if ok and time.perf_counter() - s < 0.02 else 0
            time.sleep(0.05)
    return time.perf_counter() - t0


def slo_map(bench_models: Sequence[BenchModel]) -> dict[str, float]:
    return {m.name: m.slo_ms for m in bench_models}


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.machine()}, {os.cpu_count()} cores (shared with other work: load average "
            f"{load[0]:.2f} at the end), Python {platform.python_version()}")


def model_table(bench_models: Sequence[BenchModel]) -> str:
    lines = ["| model | execute p99 ms (batch 1, in-process) | SLO ms | max_batch_size |", "|---|---:|---:|---:|"]
    lines += [f"| {m.name} | {m.exec_p99_ms:.3f} | {m.slo_ms:g} | {m.max_batch_size} |" for m in bench_models]
    return "\n".join(lines) + "\n"


def per_level(rows: Mapping[str, loadgen.Summary]) -> str:
    return loadgen.markdown_table(rows, "step")


def saturation_rps(service: Service, tenant: str, bench_models: Sequence[BenchModel], *, callers: int = 4,
                   seconds: float = 5.0) -> float:
    """Requests/s answered OK by ``callers`` closed-loop callers, each cycling through the
    models (so the mix is uniform): with a few always waiting, the instance never idles,
    and this is the rate it saturates at. Few callers keep each one's wait short."""
    import asyncio

    from bench._loadgen_transport import open_transport

    async def go() -> int:
        transport = open_transport(loadgen.ClientKind.HTTP, service.cp.http_url, callers, 30.0)
        auth = {"authorization": f"Bearer {service.keys[tenant]}"}
        prepared = [transport.prepare(m.name, m.request, auth, None) for m in bench_models]
        end = time.perf_counter() + seconds
        ok = 0

        async def caller(offset: int) -> None:
            nonlocal ok
            i = offset
            while time.perf_counter() < end:
                status, _ = await transport.send(prepared[i % len(prepared)])
                ok += status == "200"
                i += 1

        try:
            await asyncio.gather(*(caller(c * len(prepared) // callers) for c in range(callers)))
        finally:
            await transport.close()
        return ok

    return asyncio.run(go()) / seconds


def failure_examples(records: Sequence[loadgen.Record]) -> dict[tuple[str, str], tuple[int, str]]:
    """(outcome, status) -> (count, one message) over every request that was not OK."""
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for r in records:
        if r.outcome is not loadgen.Outcome.OK:
            n, msg = out.get((r.outcome.value, r.status), (0, r.message))
            out[(r.outcome.value, r.status)] = (n + 1, msg)
    return out
