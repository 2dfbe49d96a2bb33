"""The sandbox behind the verifier: a process that called ``confine()`` (what every model
host does before it reads a model) cannot read or write a host file, create a socket or
a process, or signal another process, even running TorchScript the verifier would have
refused; its memory is capped; tensor work still runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_HOSTILE = r"""
import io, json, os, socket, subprocess, sys, threading
import numpy as np, torch
from worker.sandbox.confine import confine
secret, target, setstate_model = sys.argv[1], sys.argv[2], sys.argv[3]
model_bytes = open(setstate_model, "rb").read()
parent = os.getppid()
c = confine(4 << 30)
results = {"uid": c.uid, "landlock_abi": c.landlock_abi}
def attempt(what, fn):
    try:
        out = fn()
        results[what] = "allowed: " + repr(out)[:80]
    except BaseException as e:
        results[what] = "denied: " + type(e).__name__ + ": " + str(e)[:120]
attempt("read a file", lambda: open(secret, "rb").read())
attempt("write a file", lambda: open(target, "wb").write(b"x"))
attempt("from_file read", lambda: torch.from_file(secret, shared=False, size=8, dtype=torch.uint8).tolist())
attempt("from_file write", lambda: torch.from_file(target, shared=True, size=8, dtype=torch.uint8).fill_(1))
attempt("setstate at load", lambda: torch.jit.load(io.BytesIO(model_bytes)).stolen[:4].tolist())
attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("unix socket", lambda: socket.socketpair())
attempt("subprocess", lambda: subprocess.run(["/bin/true"]).returncode)
attempt("fork", lambda: os.fork())
attempt("signal the parent", lambda: os.kill(parent, 0))
attempt("list a directory", lambda: os.listdir("/"))
attempt("allocate past the limit", lambda: np.ones(1 << 30, np.float64).sum())
attempt("tensor work", lambda: float((torch.ones(64, 64) @ torch.ones(64, 64)).sum()))
def in_thread():
    box = []
    t = threading.Thread(target=lambda: box.append(float(torch.ones(3).sum())))
    t.start(); t.join()
    return box[0]
attempt("a thread", in_thread)
print(json.dumps(results))
"""


def _setstate_reader(path: str) -> bytes:
    """A TorchScript module whose ``__setstate__`` reads a file with torch.from_file: code
    that runs inside torch.jit.load, before any check of the loaded program could."""
    import io

    import torch

    class Stealer(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path
            self.stolen = torch.zeros(48, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return (self.path, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            self.path = state[0]
            self.training = state[1]
            self.stolen = torch.from_file(self.path, shared=False, size=48, dtype=torch.uint8)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Stealer(path)), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, Path]:
    root = tmp_path_factory.mktemp("confine")
    secret = root / "admin.key"
    secret.write_bytes(b"K" * 48)
    secret.chmod(0o644)  # readable by nobody too: only the sandbox stands in the way
    target = root / "overwrite-me"
    target.write_bytes(b"original")
    target.chmod(0o666)
    model = root / "setstate.pt"
    model.write_bytes(_setstate_reader(str(secret)))
    model.chmod(0o644)
    root.chmod(0o755)
    out = subprocess.run([sys.executable, "-c", _HOSTILE, str(secret), str(target), str(model)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), secret, target


@pytest.mark.parametrize("what", ["read a file", "write a file", "from_file read", "from_file write",
                                  "setstate at load", "socket", "unix socket", "subprocess", "fork",
                                  "signal the parent", "list a directory"])
def test_a_confined_process_cannot_touch_files_sockets_or_processes(confined, what: str) -> None:
    results, _, _ = confined
    assert results[what].startswith("denied:"), results[what]
    assert "KKKK" not in results[what] and "75, 75" not in results[what]


def test_a_hostile_write_leaves_the_file_as_it_was(confined) -> None:
    _, _, target = confined
    assert target.read_bytes() == b"original"


def test_a_confined_process_is_memory_capped_but_still_computes(confined) -> None:
    results, _, _ = confined
    assert results["allocate past the limit"].startswith("denied: MemoryError"), results
    assert results["tensor work"] == "allowed: 262144.0"
    assert results["a thread"] == "allowed: 3.0"


def test_a_root_process_runs_its_models_as_nobody(confined) -> None:
    import os

    results, _, _ = confined
    if os.getuid() == 0:
        assert results["uid"] == 65534
    else:
        assert results["uid"] == os.getuid()
