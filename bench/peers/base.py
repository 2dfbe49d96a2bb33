"""What every system's adapter implements, and the pieces they share.

An adapter is a :class:`Peer`: it installs its system into its own virtual environment
under ``bench/.peers/<name>/`` (idempotent, pinned versions), and ``serve`` starts the
system with every server process pinned to ``budget.cpus``, hosting the models within
``budget.model_memory_bytes``, and yields a :class:`Running`: how the load driver reaches
each model (a ``bench.loadgen.Stream``), one-request inference for the correctness check,
and the root processes whose trees' memory the runner samples. Leaving the context stops
every process the adapter started (and cleans what it wrote outside its work folder).

The adapter code runs in the bench's own interpreter (the project's .venv); the system
itself runs in the peer's venv, as subprocesses. Files a peer's venv executes (a Ray
deployment, a TorchServe handler, an MLServer runtime) live beside the adapter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np

from bench import loadgen

REPO = Path(__file__).resolve().parents[2]
PEERS_HOME = REPO / "bench" / ".peers"  # ignored by git: every peer's venv and scratch files
TORCH_PIN = "torch==2.13.0"  # the CPU build from local disk (an unpinned torch pulls CUDA)
ONNXRUNTIME_PIN = "onnxruntime==1.32.0"


@dataclass(frozen=True)
class PeerModel:
    """One model as every system serves it: the same file (``path``: model.onnx or
    model.pt), the same tensors. ``sample_input``/``sample_output`` are a reference pair
    computed in the bench process (ONNX Runtime on the ONNX twin), for ``check``."""

    name: str  # m00_mlp_s_onnx: [a-z0-9_], valid as a model name everywhere
    kind: str  # "mlp_s", "cnn_m", ...
    format: str  # "onnx" | "torchscript"
    path: Path  # the model file; its folder holds config.pbtxt-free copies only
    input_name: str  # INPUT0 (onnx) / INPUT__0 (torchscript): what inferplex's config names
    output_name: str
    input_shape: tuple[int, ...]  # without the batch dimension
    weight_bytes: int  # the parameters' size; resident size is measured per system
    exec_ms: float  # median execute time at batch 1 in-process, 1 thread, on the servers' CPU
    slo_ms: float
    sample_input: np.ndarray = field(repr=False)  # [1, *input_shape] float32
    sample_output: np.ndarray = field(repr=False)  # [1, out] float32

    @property
    def triton_platform(self) -> str:
        return "onnxruntime_onnx" if self.format == "onnx" else "pytorch_libtorch"


@dataclass(frozen=True)
class Budget:
    """What every system gets: the same CPUs, intra-op threads and memory for models."""

    cpus: str  # every server process pinned here (taskset -c), e.g. "1"
    threads: int  # intra-op threads per runtime session
    model_memory_bytes: int  # models resident at once, by their measured resident size

    def slots(self, models: Sequence[PeerModel], resident_bytes: Callable[[PeerModel], int]) -> int:
        """How many models of the set's mean resident size fit: the count a system that can
        only be told "at most N models" (Ray's max_num_models_per_replica, TorchServe's
        registered models, MLServer's loaded models) is given."""
        mean = sum(resident_bytes(m) for m in models) / max(1, len(models))
        return max(1, int(self.model_memory_bytes // max(1.0, mean)))


class Running(Protocol):
    """A started system."""

    def stream(self, model: PeerModel, schedule: Sequence[float]) -> loadgen.Stream: ...

    def infer(self, model: PeerModel, x: np.ndarray) -> np.ndarray: ...

    def pids(self) -> list[int]: ...  # root processes: the runner sums RSS over their trees

    def counters(self) -> Mapping[str, float]: ...  # loads/evictions/cold starts it reports, else {}


class Peer(Protocol):
    name: str  # "ray", "torchserve", ...
    label: str  # "Ray Serve 2.60.0 (multiplexed)"
    needs_netns: bool  # run (server and driver) inside `unshare -n` with only loopback up

    def install(self) -> Path: ...  # the peer venv's python; idempotent

    def serve(self, workdir: Path, models: Sequence[PeerModel], budget: Budget) -> AbstractContextManager[Running]: ...

    def settings(self, models: Sequence[PeerModel], budget: Budget) -> dict[str, str]: ...  # all that could favour it

    def capabilities(self) -> dict[str, str]: ...  # keys: CAPABILITIES; a short honest answer each


CAPABILITIES = ("tenant isolation", "SLO-aware admission", "memory shares per tenant", "eviction",
                "batching across requests", "protocol")


# ---------------------------------------------------------------- helpers for adapters


def ensure_venv(name: str, requirements: Sequence[str], stamp_extra: str = "") -> Path:
    """``bench/.peers/<name>/venv`` with ``requirements`` pip-installed, once: a stamp file
    holds what was installed, so a second call with the same list costs nothing. Returns
    the venv's python."""
    home = PEERS_HOME / name
    env_dir = home / "venv"
    py = env_dir / "bin" / "python"
    stamp = home / ".installed"
    want = "\n".join([*requirements, stamp_extra]).strip()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    home.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", *requirements], check=True)
    stamp.write_text(want + "\n")
    return py


def pinned(cmd: Sequence[str], cpus: str) -> list[str]:
    """``cmd`` under ``taskset -c cpus``: the process and every child it starts stay there."""
    return ["taskset", "-c", cpus, *cmd]


def thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "INFERPLEX_BENCH_THREADS": n}


def start(cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A server process in its own process group (so ``stop`` reaches its children), its
    output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    return subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    """SIGTERM to the process group, SIGKILL after ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        _kill_group(proc, signal.SIGKILL)
        return
    _kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        proc.wait(10)
    _kill_group(proc, signal.SIGKILL)  # anything it left in its group


def _kill_group(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None,
              ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200) -> None:
    """Poll ``url`` until ``ok``; raise with the log's tail when the deadline passes or
    ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before {url} answered\n{tail(log)}")
        try:
            r = httpx.get(url, timeout=2.0)
            if ok(r):
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:g} s (last: {last})\n{tail(log)}")


def tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def tree_memory_bytes(roots: Sequence[int]) -> int:
    """Memory of ``roots`` and all their descendants, from /proc: each process's PSS
    (its private pages plus its share of pages mapped by several, so the runtime
    libraries every model host maps count once in all), or its RSS where smaps cannot be
    read."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    seen: set[int] = set()
    todo = list(roots)
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += _pss_bytes(pid)
        except OSError:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * page
            except OSError:
                continue
        todo.extend(children.get(pid, []))
    return total


def _pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no Pss in /proc/{pid}/smaps_rollup")


def raw_float32(x: np.ndarray) -> bytes:
    """The body of a raw-bytes request: the tensor, C order, little-endian float32."""
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def python_of_this_repo() -> str:
    return sys.executable
