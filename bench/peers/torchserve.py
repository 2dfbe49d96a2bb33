"""TorchServe 0.12.0 as a peer: one .mar per model, one Python worker process per hosted model.

Every model is archived with ``torch-model-archiver`` (the model file as the serialized
file, ``model.json`` with its format and input shape as an extra file, and
``torchserve_handler.py`` as the handler: ONNX Runtime or TorchScript, one thread), then
``torchserve --start --foreground`` runs the Java frontend pinned to the budget's CPUs
(its workers inherit the pinning), bound to 127.0.0.1 on free ports, with token
authorization off and the model API on (0.12 ships with both the other way round).

TorchServe has no eviction and no loading on demand: a model is served by the workers
it was given, and each worker is a process holding the whole runtime (torch is
imported by TorchServe's worker itself). So, as a user without foresight would, every
model is registered (batch_size 8, max_batch_delay 2 ms) and the first ``slots`` in the
order given get one worker each; the others keep 0 workers, and TorchServe answers
their requests at once with 503 ("has no worker to serve inference request"). ``slots``
is the budget divided by a hosted model's measured cost: a worker's own memory plus the
model's.

Requests are raw float32 bytes to ``/predictions/{model}`` (``ClientKind.BYTES``); the
handler answers raw float32 bytes.
"""

from __future__ import annotations

import json
import os
import shutil
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

VERSION = "0.12.0"
REQUIREMENTS = (f"torchserve=={VERSION}", f"torch-model-archiver=={VERSION}", base.TORCH_PIN, base.ONNXRUNTIME_PIN,
                # torchserve 0.12.0's worker imports yaml (ts/utils/util.py) without declaring it
                "PyYAML==6.0.4", "numpy==2.4.6")
HANDLER = Path(__file__).with_name("torchserve_handler.py")
META_FILE = "model.json"  # what the handler reads from the archive
BATCH_SIZE, MAX_BATCH_DELAY_MS = 8, 2
TENANTS = 3  # labels only, as inferplex's adapter assigns them: TorchServe has no tenants
# A worker's own memory before its model (PSS, measured on this machine with torch 2.13.0 CPU
# and onnxruntime 1.32.0): TorchServe's worker imports torch (~142 MiB of private pages), then
# the handler onnxruntime; the model adds about 1.3 x its weights.
WORKER_BASE_BYTES = 165 * 2**20
START_TIMEOUT_S = 120.0
REGISTER_TIMEOUT_S = 300.0
SOCKET_PATH_MAX = 100  # the workers' unix sockets live in java.io.tmpdir: sun_path holds 108 bytes


def resident_bytes(m: PeerModel) -> int:
    """What hosting ``m`` costs TorchServe: its worker process plus the model in it."""
    return WORKER_BASE_BYTES + int(1.3 * m.weight_bytes) + 4 * 2**20


def hosted(models: Sequence[PeerModel], budget: Budget) -> list[PeerModel]:
    """The models given a worker: the first ``slots`` in the order given (no foresight)."""
    return list(models[:budget.slots(models, resident_bytes)])


def tenant_of(m: PeerModel) -> str:
    return f"team{int(m.name[1:3]) % TENANTS}"


class Running:
    def __init__(self, inference_url: str, frontend_pid: int) -> None:
        self.inference_url, self.frontend_pid = inference_url, frontend_pid

    def stream(self, model: PeerModel, schedule: Sequence[float]) -> loadgen.Stream:
        return loadgen.Stream(tenant_of(model), model.name, schedule, {model.input_name: model.sample_input},
                              f"{self.inference_url}/predictions/{{model}}", kind=loadgen.ClientKind.BYTES,
                              name=model.name)

    def infer(self, model: PeerModel, x: np.ndarray) -> np.ndarray:
        r = httpx.post(f"http://{self.inference_url}/predictions/{model.name}", content=base.raw_float32(x),
                       headers={"content-type": "application/octet-stream"}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code} {_message(r)}")
        kind = r.headers.get("content-type", "")
        if not kind.startswith("application/octet-stream"):
            raise RuntimeError(f"{model.name}: expected raw float32 bytes, got {kind!r}: {r.text[:200]}")
        if len(r.content) % (4 * x.shape[0]):
            raise RuntimeError(f"{model.name}: {len(r.content)} bytes is not a whole [{x.shape[0]}, n] float32 answer")
        return np.frombuffer(r.content, dtype="<f4").reshape(x.shape[0], -1)

    def pids(self) -> list[int]:
        return [self.frontend_pid]  # the JVM; its workers are its children

    def counters(self) -> Mapping[str, float]:
        return {}  # no loads or evictions to report: a worker's model stays for the run


class TorchServe:
    name = "torchserve"
    label = f"TorchServe {VERSION} (a worker per hosted model)"
    needs_netns = False

    def install(self) -> Path:
        return base.ensure_venv(self.name, REQUIREMENTS)

    @contextmanager
    def serve(self, workdir: Path, models: Sequence[PeerModel], budget: Budget) -> Iterator[Running]:
        py = self.install()
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        store = workdir / "model_store"
        archive_all(py, workdir, store, models, budget)
        ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc_inference", "grpc_management")}
        config = workdir / "config.properties"
        config.write_text(config_properties(ports, store))
        log = workdir / "torchserve.log"
        # not the bench's PYTHONPATH: the workers would import this repo's packages before their own
        cmd = base.pinned(["env", "-u", "PYTHONPATH", str(py.parent / "torchserve"), "--start", "--foreground",
                           "--ts-config", str(config), "--model-store", str(store), "--ncs"], budget.cpus)
        tmp, own_tmp = _short_tmpdir(workdir)
        perf_before = _hsperf_files()
        proc = frontend = None
        try:
            env = {**base.thread_env(budget.threads), "TMPDIR": str(tmp), "TEMP": str(tmp)}
            proc = base.start(cmd, log, env=env, cwd=workdir)
            mgmt = f"http://127.0.0.1:{ports['management']}"
            base.wait_http(f"http://127.0.0.1:{ports['inference']}/ping", START_TIMEOUT_S, proc, log)
            frontend = _child_pid(proc.pid, "java") or proc.pid
            with_workers = {m.name for m in hosted(models, budget)}
            for m in models:
                register(mgmt, m, workers=1 if m.name in with_workers else 0, log=log)
            yield Running(f"127.0.0.1:{ports['inference']}", frontend)
        finally:
            if frontend is not None and proc is not None and frontend != proc.pid:
                _terminate(frontend, 30.0)  # the JVM stops its workers on SIGTERM
            base.stop(proc)
            for f in _hsperf_files() - perf_before:  # the JVM's perf file, if it was killed
                f.unlink(missing_ok=True)
            if own_tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def settings(self, models: Sequence[PeerModel], budget: Budget) -> dict[str, str]:
        chosen = hosted(models, budget)
        mean = sum(resident_bytes(m) for m in models) / max(1, len(models))
        naive = budget.slots(models, lambda m: int(1.3 * m.weight_bytes) + 4 * 2**20)
        return {
            "versions": f"torchserve {VERSION}, torch-model-archiver {VERSION}, {base.TORCH_PIN} (CPU), "
                        f"{base.ONNXRUNTIME_PIN}, OpenJDK {_java_version()}",
            "command": "torchserve --start --foreground --ts-config config.properties --model-store model_store --ncs "
                       f"(taskset -c {budget.cpus}; the workers inherit it)",
            "config.properties": "REST inference/management/metrics and the (unused) gRPC servers on 127.0.0.1 "
                                 "free ports, disable_token_authorization=true, enable_model_api=true, "
                                 "default_workers_per_model=1, disable_system_metrics=true, async_logging=true",
            "defaults kept": "log4j at INFO (~20 lines a request, written asynchronously), job_queue_size 100 per "
                             "model (503 when full), default_response_timeout 120 s, netty threads = visible CPUs "
                             "(1), JVM heap default (max 1/4 of RAM, grown lazily)",
            "archives": "one .mar per model (torch-model-archiver, default zip format): the model file as "
                        "serialized file, model.json (format, input shape, threads) as extra file, handler "
                        "bench/peers/torchserve_handler.py",
            "runtime": f"ONNX: onnxruntime InferenceSession, intra_op {budget.threads}, inter_op 1; TorchScript: "
                       f"torch.jit.load, torch.set_num_threads({budget.threads}), inference_mode; 3 warm-up runs at "
                       "batch 1 when a worker loads its model (as inferplex's model host)",
            "batching": f"TorchServe's batcher: batch_size {BATCH_SIZE}, max_batch_delay {MAX_BATCH_DELAY_MS} ms "
                        "(set on registration); the handler runs a batch as one call",
            "slots": f"{len(chosen)} of {len(models)} models get 1 worker: the first in the order the runner gives "
                     f"(no foresight); {budget.model_memory_bytes / 2**20:.0f} MiB / {mean / 2**20:.0f} MiB per "
                     f"hosted model (a worker's measured {WORKER_BASE_BYTES / 2**20:.0f} MiB + 1.3 x weights "
                     f"+ 4 MiB); by 1.3 x weights + 4 MiB alone it would be {naive}",
            "models without a worker": "registered with 0 workers: TorchServe answers their requests at once "
                                       "with 503 (no worker to serve inference request)",
            "hosted": ", ".join(m.name for m in chosen),
            "eviction": "none (TorchServe has none); workers are fixed for the run",
            "protocol": "HTTP POST /predictions/{model}, body and answer raw float32 bytes (aiohttp client)",
            "memory measured": "the JVM frontend's process tree (JVM + workers), PSS",
        }

    def capabilities(self) -> dict[str, str]:
        return {
            "tenant isolation": "partly: a process per model worker; no tenants, keys or quotas",
            "SLO-aware admission": "no: a bounded queue per model (503 when full), no deadlines",
            "memory shares per tenant": "no",
            "eviction": "no: a model is served by the workers it was given; scaling is a manual API call",
            "batching across requests": "yes: per model, batch_size and max_batch_delay",
            "protocol": "TorchServe REST /predictions/{model} and gRPC; KServe v1/v2 JSON through a request "
                        "envelope (service_envelope), no v2 binary tensors",
        }


# ---------------------------------------------------------------- pieces


def _message(r: httpx.Response) -> str:
    """TorchServe's error answer is JSON with a message; a handler's 400 is plain text."""
    try:
        return str(r.json().get("message", r.text))[:300]
    except (ValueError, AttributeError):
        return r.text[:300]


def config_properties(ports: Mapping[str, int], store: Path) -> str:
    return "\n".join([
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        # gRPC is on too, by default on the fixed ports 7070/7071: unused here, moved to free ones
        "grpc_inference_address=127.0.0.1",
        f"grpc_inference_port={ports['grpc_inference']}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={ports['grpc_management']}",
        "disable_token_authorization=true",  # 0.12 requires a token on every API by default
        "enable_model_api=true",  # 0.12 refuses registration through the management API by default
        "default_workers_per_model=1",
        "disable_system_metrics=true",  # a host-metrics Python process every minute, on the pinned CPU
        "async_logging=true",  # the performance guide's advice: ~20 log lines a request, written off the request path
        f"model_store={store}",
        "",
    ])


def archive_all(py: Path, workdir: Path, store: Path, models: Sequence[PeerModel], budget: Budget) -> None:
    store.mkdir(parents=True, exist_ok=True)
    archiver = py.parent / "torch-model-archiver"
    for m in models:
        meta_dir = workdir / "meta" / m.name
        meta_dir.mkdir(parents=True, exist_ok=True)
        meta = meta_dir / META_FILE
        meta.write_text(json.dumps({"format": m.format, "file": m.path.name, "input_shape": list(m.input_shape),
                                    "threads": budget.threads}))
        cmd = [str(archiver), "--model-name", m.name, "--version", "1.0", "--serialized-file", str(m.path),
               "--handler", str(HANDLER), "--extra-files", str(meta), "--export-path", str(store), "--force"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed for {m.name}: {done.stderr[-1000:]}")


def register(mgmt: str, m: PeerModel, workers: int, log: Path) -> None:
    params = {"url": f"{m.name}.mar", "model_name": m.name, "batch_size": BATCH_SIZE,
              "max_batch_delay": MAX_BATCH_DELAY_MS, "initial_workers": workers, "synchronous": "true"}
    r = httpx.post(f"{mgmt}/models", params=params, timeout=REGISTER_TIMEOUT_S)
    if r.status_code != 200:
        raise RuntimeError(f"registering {m.name} with {workers} worker(s): {r.status_code} {r.text[:500]}\n"
                           f"{base.tail(log)}")


def _short_tmpdir(workdir: Path) -> tuple[Path, bool]:
    """java.io.tmpdir (and the launcher's pid file): under ``workdir`` unless the workers'
    socket paths would not fit there; then a short folder of our own in /tmp."""
    tmp = workdir / "tmp"
    if len(str(tmp / ".ts.sock.9000")) <= SOCKET_PATH_MAX:
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp, False
    return Path(tempfile.mkdtemp(prefix="ts-")), True


def _hsperf_files() -> set[Path]:
    d = Path(tempfile.gettempdir()) / f"hsperfdata_{_user()}"
    return set(d.iterdir()) if d.is_dir() else set()


def _user() -> str:
    import getpass

    return getpass.getuser()


def _child_pid(parent: int, name: str, timeout_s: float = 10.0) -> int | None:
    """The pid of ``parent``'s child whose command is ``name`` (the launcher starts the JVM)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
            if comm == name and int(rest[1]) == parent:
                return int(entry)
        time.sleep(0.05)  # polling /proc: the JVM is forked right after the launcher parses its args
    return None


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _zombie(pid):
        time.sleep(0.1)  # polling /proc: the JVM is not our child, so it cannot be waited on


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20, check=False).stderr
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = out.splitlines()[0] if out else "?"
    return first.split('"')[1] if '"' in first else first
