"""MLServer as a peer: multi-model serving from one model repository, loaded by hand.

``serve`` writes a model repository in the work folder: ``settings.json`` (127.0.0.1,
free HTTP/gRPC/metrics ports, ``parallel_workers`` 1, ``load_models_at_startup`` false)
and one folder per model whose ``model-settings.json`` points at the model's file and at
this benchmark's custom runtime (``mlserver_runtime.py``: ONNX Runtime or torch.jit, one
thread), with adaptive batching (max 8, 2 ms). ``mlserver start`` runs under ``taskset``;
then the first ``slots`` models are loaded through the repository API
(``POST /v2/repository/models/{name}/load``), which is what a user without an
orchestrator has: MLServer never loads or evicts by itself, so the other models stay
unloaded and requests to them get MLServer's "not found" answer.

Requests: v2 over gRPC (tritonclient.grpc, raw tensor contents). MLServer's REST server
has no binary-tensor extension, so tritonclient.http's requests are refused (checked by
``http_binary_refused``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

from bench import loadgen
from bench.peers import base
from bench.peers.base import Budget, PeerModel
from tests.support.procs import free_port

MLSERVER_VERSION = "1.7.1"
# uvloop 0.21.0: MLServer 1.7.1's inference worker does not start under uvloop 0.23 (upstream #2286)
REQUIREMENTS = [f"mlserver=={MLSERVER_VERSION}", "uvloop==0.21.0", base.ONNXRUNTIME_PIN, base.TORCH_PIN, "numpy"]
RUNTIME = Path(__file__).with_name("mlserver_runtime.py")
RUNTIME_CLASS = "mlserver_runtime.PeerModelRuntime"
PARALLEL_WORKERS = 1  # MLServer's default: one inference worker process beside the front-end process
MAX_BATCH_SIZE, MAX_BATCH_TIME_S = 8, 0.002
START_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 120.0
TENANTS = 3  # labels only, as inferplex's adapter names them: MLServer has no tenants


def resident_bytes(m: PeerModel) -> int:
    """A model's resident size in the inference worker, estimated: 1.3x its weights plus 4 MiB."""
    return int(1.3 * m.weight_bytes) + 4 * 2**20


def tenant_of(m: PeerModel) -> str:
    return f"team{int(m.name[1:3]) % TENANTS}"


def loaded_models(models: Sequence[PeerModel], budget: Budget) -> list[PeerModel]:
    """The models MLServer is told to load: the first ``slots`` in the order given."""
    return list(models[:budget.slots(models, resident_bytes)])


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], http_port: int, grpc_port: int, loaded: list[str]) -> None:
        self.proc, self.http_port, self.grpc_port, self.loaded = proc, http_port, grpc_port, loaded
        self._grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    def stream(self, model: PeerModel, schedule: Sequence[float]) -> loadgen.Stream:
        return loadgen.Stream(tenant_of(model), model.name, schedule, {model.input_name: model.sample_input},
                              f"127.0.0.1:{self.grpc_port}", kind=loadgen.ClientKind.GRPC, name=model.name)

    def infer(self, model: PeerModel, x: np.ndarray) -> np.ndarray:
        inp = grpcclient.InferInput(model.input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        res = self._grpc.infer(model.name, [inp], client_timeout=60)
        return res.as_numpy(model.output_name)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def counters(self) -> Mapping[str, float]:
        return {}  # MLServer loads only when told (here: once, at start) and never evicts

    def close(self) -> None:
        self._grpc.close()


class MLServer:
    name = "mlserver"
    label = f"MLServer {MLSERVER_VERSION} (custom runtime, adaptive batching)"
    needs_netns = False

    def install(self) -> Path:
        return base.ensure_venv(self.name, REQUIREMENTS)

    @staticmethod
    def server_settings(workdir: Path, http_port: int, grpc_port: int, metrics_port: int) -> dict:
        return {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "metrics_dir": str(workdir / "metrics"),
            "environments_dir": str(workdir / "envs"),
            "parallel_workers": PARALLEL_WORKERS,
            "load_models_at_startup": False,
            "model_repository_root": str(workdir / "models"),
        }

    @staticmethod
    def model_settings(m: PeerModel, budget: Budget) -> dict:
        return {
            "name": m.name,
            "implementation": RUNTIME_CLASS,
            "max_batch_size": MAX_BATCH_SIZE,
            "max_batch_time": MAX_BATCH_TIME_S,
            "parameters": {"uri": str(m.path.resolve()),
                           "extra": {"threads": budget.threads, "input_name": m.input_name,
                                     "output_name": m.output_name, "input_shape": list(m.input_shape)}},
        }

    @contextmanager
    def serve(self, workdir: Path, models: Sequence[PeerModel], budget: Budget) -> Iterator[Running]:
        py = self.install()
        workdir = workdir.resolve()
        shutil.rmtree(workdir / "models", ignore_errors=True)
        (workdir / "models").mkdir(parents=True)
        (workdir / "runtime").mkdir(exist_ok=True)
        shutil.copy(RUNTIME, workdir / "runtime" / RUNTIME.name)
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        settings = self.server_settings(workdir, http_port, grpc_port, metrics_port)
        (workdir / "models" / "settings.json").write_text(json.dumps(settings, indent=1))
        for m in models:
            d = workdir / "models" / m.name
            d.mkdir()
            (d / "model-settings.json").write_text(json.dumps(self.model_settings(m, budget), indent=1))
        log = workdir / "mlserver.log"
        env = {**base.thread_env(budget.threads), "PYTHONPATH": str(workdir / "runtime")}
        proc = base.start(base.pinned([str(py.parent / "mlserver"), "start", str(workdir / "models")], budget.cpus),
                          log, env=env, cwd=workdir)
        running = None
        try:
            base.wait_http(f"http://127.0.0.1:{http_port}/v2/health/ready", START_TIMEOUT_S, proc, log)
            loaded = loaded_models(models, budget)
            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=LOAD_TIMEOUT_S) as c:
                for m in loaded:  # one at a time, as MLServer answers each load once it is done
                    r = c.post(f"/v2/repository/models/{m.name}/load")
                    if r.status_code != 200:
                        raise RuntimeError(f"MLServer could not load {m.name}: {r.status_code} {r.text[:300]}\n"
                                           f"{base.tail(log)}")
                    base.wait_http(f"http://127.0.0.1:{http_port}/v2/models/{m.name}/ready", 30, proc, log)
            running = Running(proc, http_port, grpc_port, [m.name for m in loaded])
            yield running
        finally:
            if running is not None:
                running.close()
            base.stop(proc)

    def settings(self, models: Sequence[PeerModel], budget: Budget) -> dict[str, str]:
        loaded = loaded_models(models, budget)
        return {
            "version": f"mlserver {MLSERVER_VERSION}, uvloop 0.21.0, {base.ONNXRUNTIME_PIN}, {base.TORCH_PIN}",
            "command": f"taskset -c {budget.cpus} mlserver start <repository>",
            "processes": f"front-end (REST + gRPC + adaptive batcher) + parallel_workers={PARALLEL_WORKERS} "
                         "inference worker (every loaded model in it), all pinned",
            "runtime": f"custom MLModel (bench/peers/mlserver_runtime.py): ONNX Runtime / torch.jit, "
                       f"{budget.threads} intra-op thread(s), 3 warm-up runs at load",
            "memory": f"{len(loaded)} of {len(models)} models loaded (slots by 1.3 x weights + 4 MiB per model "
                      f"in {budget.model_memory_bytes / 2**20:.0f} MiB); the first {len(loaded)} in the given order",
            "many models": "load_models_at_startup=false, the repository API loads the slots' models at start; "
                           "MLServer neither loads on demand nor evicts: requests to the rest get 404 "
                           "(gRPC NOT_FOUND, 'Model ... not found')",
            "batching": f"adaptive batching, max_batch_size {MAX_BATCH_SIZE}, max_batch_time {MAX_BATCH_TIME_S} s",
            "queues": "unbounded (MLServer's defaults); no admission control",
            "metrics": "MLServer's default metrics server on, on a free 127.0.0.1 port",
            "protocol": "KServe v2 gRPC, tritonclient.grpc.aio, raw tensor contents (REST has no binary "
                        "extension: tritonclient.http's binary request is refused)",
        }

    def capabilities(self) -> dict[str, str]:
        return {
            "tenant isolation": "no: one server, one process for every model; no tenants or keys",
            "SLO-aware admission": "no: every request is queued",
            "memory shares per tenant": "no: no tenants; the user decides which models to load",
            "eviction": "no: loads and unloads only through the repository API (an orchestrator's job)",
            "batching across requests": "yes: adaptive batching per model (max size, max wait)",
            "protocol": "KServe v2 REST (JSON only) + gRPC",
        }
