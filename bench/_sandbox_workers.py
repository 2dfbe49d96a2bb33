"""The workers bench/sandbox_overhead.py compares, and what it measures on them besides
request latency: load times and memory.

"before" is ``inferplex worker`` as of commit ``02d3bbb`` (runtimes in the worker's own
process, no credential), run from a git worktree of that commit with the same venv;
"after" is this tree's worker (every model version in a confined host) with a
credential, "after, no credential" the same worker without one (the sandbox alone).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient

from kserve.restricted import InstanceCredential
from tests.support import models
from tests.support.procs import REPO, Proc, free_port, inferplex_cmd, port_open, wait_until
from tests.support.worker import WorkerProcess

BEFORE_COMMIT = "02d3bbb"
BEFORE, AFTER, AFTER_OPEN = "before", "after", "after, no credential"
VARIANTS = (BEFORE, AFTER, AFTER_OPEN)
QUARANTINE_NEVER = "1000000"  # the runaway trials stop one model ~100 times in a row


@dataclass
class Variant:
    name: str
    worker: WorkerProcess
    start_s: float  # from the process's start until it answers ready (the zygote starts before)
    first_load_s: dict[str, float]  # the first loads in a fresh worker (runtime import)


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached git worktree of ``commit`` in a temp dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="inferplex-before-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False,
                           capture_output=True)


def _start(tree: Path, log_dir: Path, name: str, cpus: str, credential: InstanceCredential | None,
           extra: list[str]) -> WorkerProcess:
    http_port, grpc_port = free_port(), free_port()
    cmd = inferplex_cmd("--log-level", "WARNING", "worker", "--http-port", str(http_port),
                        "--grpc-port", str(grpc_port), "--threads", "1", "--memory-budget", "4GiB",
                        *(["--cpus", cpus] if cpus else []), *extra)
    # cwd and PYTHONPATH put the tree's packages ahead of the venv's editable install
    env = {"PYTHONPATH": str(tree)}
    if credential is not None:
        env |= {"INFERPLEX_INSTANCE_RESTRICTED_KEY": credential.key,
                "INFERPLEX_INSTANCE_RESTRICTED_VALUE": credential.value}
    proc = Proc(cmd, log_dir / f"worker-{name.replace(', ', '-').replace(' ', '-')}.log", env=env, cwd=tree)
    return WorkerProcess(proc, http_port, grpc_port, credential)


def _up(w: WorkerProcess) -> bool:
    return w.http_ready() and port_open(w.grpc_port)


@contextmanager
def variants(log_dir: Path, cpus: str, credential: InstanceCredential,
             model_names: tuple[str, ...]) -> Iterator[dict[str, Variant]]:
    """The three workers, each with ``model_names`` loaded; all stopped afterwards. Started
    one after another, so each one's start time is its own."""
    with ExitStack() as stack:
        before_tree = stack.enter_context(worktree(BEFORE_COMMIT))
        after_flags = ["--quarantine-after", QUARANTINE_NEVER]
        plan = {BEFORE: (before_tree, None, []), AFTER: (REPO, credential, after_flags),
                AFTER_OPEN: (REPO, None, after_flags)}
        out: dict[str, Variant] = {}
        for name, (tree, cred, flags) in plan.items():
            t0 = time.perf_counter()
            w = _start(tree, log_dir, name, cpus, cred, flags)
            stack.callback(w.proc.stop)
            # a finer poll than wait_ready's for the time; wait_ready then reports an early exit
            wait_until(lambda w=w: not w.proc.alive() or _up(w), 60, f"worker {name}", interval_s=0.01)
            start_s = time.perf_counter() - t0
            w.proc.wait_ready(lambda w=w: _up(w), 60, f"worker {name}")
            out[name] = Variant(name, w, start_s, {m: load_seconds(w, m) for m in model_names})
        yield out


def load_seconds(w: WorkerProcess, name: str, kind: str | None = None) -> float:
    """Wall time of one repository load of a test model, as a client sees it."""
    config, files = models.model_files(name, kind)
    with grpcclient.InferenceServerClient(w.grpc_url) as client:
        t0 = time.perf_counter()
        client.load_model(name, config=json.dumps(config), files=files, headers=w.grpc_headers())
        took = time.perf_counter() - t0
    w.loaded.add(name)
    return took


def cold_loads(w: WorkerProcess, kind: str, n: int) -> list[float]:
    """Load (and unload) a model under a name the worker has never seen, n times: in the
    sandbox that is a fork from the zygote, confinement, parse, verify and warm-up."""
    took: list[float] = []
    with grpcclient.InferenceServerClient(w.grpc_url) as client:
        for i in range(n):
            name = f"cold_{kind}_{i}"
            took.append(load_seconds(w, name, kind))
            client.unload_model(name, headers=w.grpc_headers())
            wait_until(lambda name=name: not client.is_model_ready(name, headers=w.grpc_headers()),
                       30, f"{name} unloaded", interval_s=0.01)
    return took


# ---------------------------------------------------------------- memory


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that just ended
            pass
    return out


def _rollup(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, private bytes) of one process, from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields.get("Rss", 0), fields.get("Pss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def model_host_pids(w: WorkerProcess) -> set[int]:
    """The worker's model hosts (its zygote's children)."""
    return {h for z in _children(w.proc.popen.pid) for h in _children(z)}


def process_memory(w: WorkerProcess) -> dict[str, tuple[int, ...]]:
    """role -> (processes, RSS, PSS, private bytes) for the worker, its zygote and the model hosts."""
    worker_pid = w.proc.popen.pid
    roles = {"worker": [worker_pid]}
    zygotes = _children(worker_pid)
    if zygotes:
        roles["zygote"] = zygotes
        roles["model hosts"] = [h for z in zygotes for h in _children(z)]
    out: dict[str, tuple[int, ...]] = {}
    for role, pids in roles.items():
        sums = [_rollup(p) for p in pids]
        out[role] = (len(pids), *(sum(s[i] for s in sums) for i in range(3)))
    return out


def memory_report(v: Variant) -> dict[str, object]:
    charges = v.worker.memory()["models"]
    return {"charged": {m: int(charges[m]) for m in sorted(charges)},
            "processes": {k: list(t) for k, t in process_memory(v.worker).items()}}
