"""Standalone NVIDIA Triton as a peer: the tritonserver the tests use, loaded by hand.

The server is the one ``scripts/ensure-triton`` builds under build/triton (tritonserver
2.51.0 from the nvidia-pytriton wheel, the Python backend only), started as
tests/support/triton.py starts it (127.0.0.1, free ports, ``--model-control-mode
explicit``) under ``taskset``. With no onnxruntime or libtorch backend, every model is a
Python-backend model: ONNX through inferplex's adapter (placement/triton_python_adapter,
ONNX Runtime in the stub, as inferplex's worker runs ONNX on this Triton; it runs a
dynamic batch's requests one by one), TorchScript through ``triton_model.py`` (torch.jit in
the stub, one call per batch; ``ONNX_MODEL = "peer"`` serves ONNX through it too). The stubs run in this peer's own venv
(numpy 1.26.4 for the stub's ABI, onnxruntime and the CPU torch): the tests' stub venv has
no torch.

Each model: ``max_batch_size`` 8, the dynamic batcher (2 ms queue delay, no preferred
sizes), one CPU instance (one stub process). The first ``slots`` models are loaded through
the repository API at start; Triton never loads or evicts by itself, so requests to the
others get its 404 "unknown model" answer. Requests: v2 HTTP with binary tensors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as httpclient

from bench import loadgen
from bench.peers import base
from bench.peers.base import Budget, PeerModel
from tests.support import triton as triton_support
from tests.support.procs import free_port

STUB_REQUIREMENTS = ["numpy==1.26.4", base.ONNXRUNTIME_PIN, base.TORCH_PIN]  # the stub needs numpy < 2
ONNX_ADAPTER = base.REPO / "placement" / "triton_python_adapter" / "model.py"
PEER_MODEL = Path(__file__).with_name("triton_model.py")
MAX_BATCH_SIZE = 8
QUEUE_DELAY_US = 2000
# which model.py serves ONNX: "inferplex-adapter" (placement/triton_python_adapter, as inferplex's
# worker runs ONNX on this Triton: a batch's requests one by one) or "peer" (triton_model.py: one
# ONNX Runtime call per batch, as TorchScript runs here)
ONNX_MODEL = "peer"
START_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 180.0
TENANTS = 3  # labels only, as inferplex's adapter names them: Triton has no tenants


# what one model's Python-backend stub process costs before its weights, measured (PSS) here:
# each stub imports its runtime (torch: ~150 MiB; onnxruntime: ~40 MiB)
STUB_BASE_BYTES = {"torchscript": 150 * 2**20, "onnx": 40 * 2**20}


def resident_bytes(m: PeerModel) -> int:
    """A model's resident size: its stub process (measured, by runtime) plus 1.3x its weights."""
    return STUB_BASE_BYTES[m.format] + int(1.3 * m.weight_bytes)


def tenant_of(m: PeerModel) -> str:
    return f"team{int(m.name[1:3]) % TENANTS}"


def loaded_models(models: Sequence[PeerModel], budget: Budget) -> list[PeerModel]:
    """The models Triton is told to load: the first ``slots`` in the order given."""
    return list(models[:budget.slots(models, resident_bytes)])


def model_config(m: PeerModel, budget: Budget) -> str:
    """config.pbtxt: a Python-backend model, the dynamic batcher, one CPU instance."""
    dims = ", ".join(str(d) for d in m.input_shape)
    out_dim = int(m.sample_output.shape[1])
    if m.format == "onnx" and ONNX_MODEL == "inferplex-adapter":
        params = {"inferplex_onnx_file": m.path.name, "inferplex_threads": str(budget.threads)}
    else:
        params = {"peer_model_file": m.path.name, "peer_threads": str(budget.threads)}
    lines = [
        f'name: "{m.name}"',
        'backend: "python"',
        f"max_batch_size: {MAX_BATCH_SIZE}",
        f'input [ {{ name: "{m.input_name}" data_type: TYPE_FP32 dims: [ {dims} ] }} ]',
        f'output [ {{ name: "{m.output_name}" data_type: TYPE_FP32 dims: [ {out_dim} ] }} ]',
        "instance_group [ { kind: KIND_CPU count: 1 } ]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}",
        *(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items()),
    ]
    return "\n".join(lines) + "\n"


def write_repository(root: Path, models: Sequence[PeerModel], budget: Budget) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for m in models:
        version = root / m.name / "1"
        version.mkdir(parents=True)
        (root / m.name / "config.pbtxt").write_text(model_config(m, budget))
        os.symlink(m.path.resolve(), version / m.path.name)
        adapter = m.format == "onnx" and ONNX_MODEL == "inferplex-adapter"
        shutil.copy(ONNX_ADAPTER if adapter else PEER_MODEL, version / "model.py")


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], http_port: int, loaded: list[str]) -> None:
        self.proc, self.http_port, self.loaded = proc, http_port, loaded
        self._client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=60,
                                                        connection_timeout=60)

    def stream(self, model: PeerModel, schedule: Sequence[float]) -> loadgen.Stream:
        return loadgen.Stream(tenant_of(model), model.name, schedule, {model.input_name: model.sample_input},
                              f"127.0.0.1:{self.http_port}", kind=loadgen.ClientKind.HTTP, name=model.name)

    def infer(self, model: PeerModel, x: np.ndarray) -> np.ndarray:
        inp = httpclient.InferInput(model.input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self._client.infer(model.name, [inp]).as_numpy(model.output_name)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def counters(self) -> Mapping[str, float]:
        return {}  # Triton in explicit mode loads only when told (here: once, at start) and never evicts

    def close(self) -> None:
        self._client.close()


class StandaloneTriton:
    name = "triton"
    label = f"NVIDIA Triton {triton_support.TRITON_VERSION} (Python backend, dynamic batcher)"
    needs_netns = False

    def install(self) -> Path:
        """build/triton (scripts/ensure-triton), and this peer's stub venv; its python."""
        subprocess.run([str(base.REPO / "scripts" / "ensure-triton")], check=True, cwd=base.REPO)
        reason = triton_support.triton_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        return base.ensure_venv(self.name, STUB_REQUIREMENTS)

    @contextmanager
    def serve(self, workdir: Path, models: Sequence[PeerModel], budget: Budget) -> Iterator[Running]:
        stub_py = self.install()
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        repo = workdir / "models"
        write_repository(repo, models, budget)
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        cmd = [str(triton_support.TRITON_BINARY),
               "--model-repository", str(repo),
               "--model-control-mode", "explicit",
               "--backend-directory", str(triton_support.BACKEND_DIR),
               "--http-address", "127.0.0.1", "--http-port", str(http_port),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port),
               "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
               "--exit-timeout-secs", "2"]
        env = {**triton_support.triton_env(), **base.thread_env(budget.threads)}
        # the stub takes its sys.path from the first python3 on PATH: this peer's venv (with torch)
        env["PATH"] = os.pathsep.join([str(stub_py.parent), os.environ.get("PATH", "")])
        log = workdir / "tritonserver.log"
        proc = base.start(base.pinned(cmd, budget.cpus), log, env=env, cwd=workdir)
        running = None
        try:
            base.wait_http(f"http://127.0.0.1:{http_port}/v2/health/ready", START_TIMEOUT_S, proc, log)
            loaded = loaded_models(models, budget)
            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=LOAD_TIMEOUT_S) as c:
                for m in loaded:  # one at a time: Triton answers a load once the model is ready
                    r = c.post(f"/v2/repository/models/{m.name}/load")
                    if r.status_code != 200:
                        raise RuntimeError(f"Triton could not load {m.name}: {r.status_code} {r.text[:300]}\n"
                                           f"{base.tail(log)}")
            running = Running(proc, http_port, [m.name for m in loaded])
            yield running
        finally:
            if running is not None:
                running.close()
            base.stop(proc)

    def settings(self, models: Sequence[PeerModel], budget: Budget) -> dict[str, str]:
        loaded = loaded_models(models, budget)
        onnx_runtime = ("inferplex's Python-backend adapter (ONNX Runtime, a batch's requests run one by one)"
                        if ONNX_MODEL == "inferplex-adapter" else
                        "bench/peers/triton_model.py (ONNX Runtime, one call per batch)")
        return {
            "version": f"tritonserver {triton_support.TRITON_VERSION} (nvidia-pytriton 0.7.0 wheel), Python backend "
                       f"only; stub venv numpy 1.26.4, {base.ONNXRUNTIME_PIN}, {base.TORCH_PIN}",
            "command": f"taskset -c {budget.cpus} tritonserver --model-control-mode explicit (127.0.0.1, "
                       "--exit-timeout-secs 2)",
            "processes": "tritonserver + one Python-backend stub process per loaded model, all pinned",
            "runtime": f"ONNX: {onnx_runtime}; TorchScript: bench/peers/triton_model.py (torch.jit, one call "
                       f"per batch, 3 warm-up runs at load); {budget.threads} intra-op thread(s)",
            "memory": f"{len(loaded)} of {len(models)} models loaded (slots by a stub process per model, 150 MiB with torch / 40 MiB with onnxruntime, + 1.3 x weights "
                      f"in {budget.model_memory_bytes / 2**20:.0f} MiB); the first {len(loaded)} in the given order",
            "many models": "explicit model control, the repository API loads the slots' models at start; Triton "
                           "neither loads on demand nor evicts: requests to the rest get 404 ('Request for unknown "
                           "model')",
            "batching": f"dynamic batcher, max_batch_size {MAX_BATCH_SIZE}, max_queue_delay_microseconds "
                        f"{QUEUE_DELAY_US}, no preferred batch sizes; instance_group KIND_CPU count 1",
            "queues": "unbounded (Triton's default dynamic-batcher queue); no admission control",
            "protocol": "KServe v2 HTTP, tritonclient.http.aio, binary tensors",
        }

    def capabilities(self) -> dict[str, str]:
        return {
            "tenant isolation": "partly: a process per model (Python backend), but no tenants or keys",
            "SLO-aware admission": "no: every request is queued (queue policies can time out, not off by default)",
            "memory shares per tenant": "no: no tenants; the user decides which models to load",
            "eviction": "no: explicit mode loads and unloads only when told (an orchestrator's job)",
            "batching across requests": "yes: the dynamic batcher per model",
            "protocol": "KServe v2 HTTP + gRPC",
        }
