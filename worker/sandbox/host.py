"""A model host: one model version's runtime in its own confined process.

Runs in a child the zygote forked (``worker.sandbox.zygote``). In order:
1. read the version folder's files into memory (the last time it may open a file);
2. ``confine()``: no files, sockets or processes from here on, and a memory limit;
3. parse, verify and load the model from memory — TorchScript's ``__setstate__`` and
   ONNX Runtime's graph optimizations already run inside the sandbox;
4. warm up (a few runs), report ``ready`` (the completed config, private memory), then serve
   ``run`` frames until the worker closes the socket or kills the process.
The worker trusts nothing this process says beyond the frame checks in ``wire``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kserve.datatypes import V2_TO_NUMPY
from kserve.errors import InferplexError, InvalidArgument
from modelfiles import config as cfg
from modelfiles.safety import load_onnx
from modelfiles.verify import (
    tensor_bound,
    verify_onnx,
)
from worker.runtimes import Runtime, import_runtime, open_runtime
from worker.sandbox import wire
from worker.sandbox.confine import address_space_bytes, confine

_PR_SET_PDEATHSIG = 1


def preload(threads: int) -> None:
    """Everything a host needs, imported and initialised in the zygote before it forks:
    a confined host cannot open a module file."""
    import encodings.cp437  # noqa: F401  (zipfile decodes non-UTF-8 entry names with it)
    import zipfile  # noqa: F401

    import onnx  # noqa: F401
    import onnx.checker  # noqa: F401
    import onnx.shape_inference  # noqa: F401
    import torch

    torch.set_num_threads(threads)
    torch.ones(2, 2) @ torch.ones(2, 2)  # first-use initialisation (cpuinfo, allocator)
    for platform in (cfg.ONNX, cfg.TORCHSCRIPT):
        import_runtime(platform)
    import google.protobuf.descriptor_pb2  # noqa: F401  (json_format imports it lazily for maps)
    import ml_dtypes  # noqa: F401

    # every config feature once (maps, versions policy, dims), so nothing imports lazily later
    warm = cfg.parse_json({"name": "warm", "platform": cfg.ONNX, "max_batch_size": 1,
                           "version_policy": {"latest": {"num_versions": 1}},
                           "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                           "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
                           "parameters": {"k": {"string_value": "v"}}}, "warm")
    cfg.to_json(warm)

    import worker.runtimes.onnxrt  # noqa: F401
    import worker.runtimes.torchscript  # noqa: F401


def read_version_files(folder: Path, max_bytes: int) -> dict[str, bytes]:
    """The version folder's files by relative POSIX path, refusing more than max_bytes."""
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            continue  # a link could point anywhere on the host
        if path.is_file():
            total += path.stat().st_size
            if total > max_bytes:
                raise InvalidArgument(f"model files are over {max_bytes} bytes")
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def run_host(sock_fd: int, request: dict[str, Any], zygote_pid: int) -> None:
    """The forked child's whole life. Never returns normally (os._exit by the caller)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote_pid:  # the zygote died before the line above
        os._exit(1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_IGN if sig == signal.SIGINT else signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    keep = {0, 1, 2, sock_fd}
    for fd in _open_fds():
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    sock = socket.socket(fileno=sock_fd)
    try:
        model = _Loaded.start(request)
    except InferplexError as exc:
        wire.send(sock, {"ok": False, "status": type(exc).__name__, "error": exc.message})
        return
    except MemoryError:
        wire.send(sock, {"ok": False, "status": "InvalidArgument",
                         "error": f"failed to load '{request['name']}': it needs more memory than "
                                  f"its limit of {request['memory_limit_extra']} bytes"})
        return
    except Exception as exc:  # the runtime's own errors: report, don't trace back
        wire.send(sock, {"ok": False, "status": "InvalidArgument",
                         "error": f"failed to load '{request['name']}': {exc.__class__.__name__}: {exc}"})
        return
    wire.send(sock, model.ready_message())
    model.serve(sock)


def _open_fds() -> list[int]:
    return [int(fd) for fd in os.listdir("/proc/self/fd") if fd.isdigit()]


class _Loaded:
    def __init__(self, request: dict[str, Any], config: Any, spec: cfg.ModelSpec, runtime: Runtime,
                 smaps_fd: int) -> None:
        self.request = request
        self.config = config
        self.spec = spec
        self.runtime = runtime
        self.smaps_fd = smaps_fd
        self.in_types = {t.name: t.datatype for t in spec.inputs}
        self.out_types = {t.name: t.datatype for t in spec.outputs}
        self.max_input = int(request["max_input_bytes"])

    @classmethod
    def start(cls, request: dict[str, Any]) -> _Loaded:
        name = request["name"]
        folder = Path(request["version_dir"])
        files = read_version_files(folder, int(request["max_model_bytes"]))
        filename = request["filename"]
        if filename not in files:
            raise InvalidArgument(f"failed to load '{name}': model file {filename} not found")
        if str(request["device"]).startswith("cuda"):
            _open_cuda(str(request["device"]))
        # kept open: a confined host cannot open it again to report its memory
        smaps_fd = os.open("/proc/self/smaps_rollup", os.O_RDONLY)
        confine(address_space_bytes() + int(request["memory_limit_extra"]))
        config = cfg.parse_json(request["config"], name)
        platform = config.platform
        if platform == cfg.ONNX:
            source = _onnx_source(files, filename, config, name)
        else:
            source = files[filename]
        del files
        spec = cfg.spec_of(config)
        # TorchScript is verified by its runtime, before and after torch.jit.load
        runtime = open_runtime(source, spec, request["device"], int(request["threads"]))
        del source
        _warm_up(runtime, spec)
        return cls(request, config, spec, runtime, smaps_fd)

    def private_bytes(self) -> int:
        os.lseek(self.smaps_fd, 0, os.SEEK_SET)
        text = os.read(self.smaps_fd, 8192).decode()
        total = 0
        for line in text.splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
        return total

    def ready_message(self) -> dict[str, Any]:
        return {"ok": True, "ready": True, "config": cfg.to_json(self.config),
                "private_bytes": self.private_bytes()}

    def serve(self, sock: socket.socket) -> None:
        while True:
            try:
                header, payload = wire.recv(sock, self.max_input)
            except wire.PeerClosed:
                return
            try:
                arrays = wire.decode_tensors(header.get("inputs"), payload, self.in_types)
                names = [n for n in header.get("outputs", []) if n in self.out_types]
                t0 = time.monotonic_ns()
                deadline = header.get("deadline_ns")
                outputs = self.runtime.run(arrays, names, deadline if isinstance(deadline, int) else None)
                compute_ns = time.monotonic_ns() - t0
                del arrays, payload
                descs, buffers = wire.encode_tensors(outputs, self.out_types)
            except InferplexError as exc:
                wire.send(sock, {"ok": False, "status": type(exc).__name__, "error": exc.message})
                continue
            except MemoryError:
                wire.send(sock, {"ok": False, "status": "Internal",
                                 "error": "the execution needed more memory than the model's limit"})
                continue
            except Exception as exc:
                wire.send(sock, {"ok": False, "status": "Internal", "error": f"{exc.__class__.__name__}: {exc}"})
                continue
            wire.send(sock, {"ok": True, "outputs": descs, "compute_ns": compute_ns}, buffers)


def _onnx_source(files: dict[str, bytes], filename: str, config: Any, name: str) -> bytes:
    """The model with its external data inlined from the files read before confinement,
    checked and verified; completes ``config`` from the graph."""
    model, inlined = load_onnx(files, filename, name)
    verify_onnx(model, name, max_tensor_bytes=tensor_bound(sum(len(d) for d in files.values())))
    cfg.complete_from_onnx(config, model.graph)
    return model.SerializeToString() if inlined else files[filename]


def _open_cuda(device: str) -> None:
    """Everything a GPU host opens lazily (device files, the CUDA, cuBLAS and cuDNN
    libraries, ONNX Runtime's CUDA provider), opened before confinement, which would
    refuse those opens later. Not exercised on this project's CPU-only machines."""
    import torch

    if torch.cuda.is_available():
        x = torch.ones(1, 3, 8, 8, device=device)
        torch.nn.functional.conv2d(x, torch.ones(2, 3, 3, 3, device=device)).sum().item()
        (x.view(3, 64) @ x.view(64, 3)).sum().item()
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("MatMul", ["c", "m"], ["y"])],
        "cuda_warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 3, 3], [1.0] * 54),
                     helper.make_tensor("m", TensorProto.FLOAT, [6, 6], [1.0] * 36)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    index = int(device.partition(":")[2] or 0)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=[("CUDAExecutionProvider", {"device_id": index})])
    session.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})


WARM_UP_RUNS = 3


def _warm_up(runtime: Runtime, spec: cfg.ModelSpec) -> None:
    """``WARM_UP_RUNS`` runs with the smallest inputs, so lazily allocated runtime memory is
    measured with the load, and the first request does not pay the runtime's first runs:
    TorchScript's profiling executor profiles the first run and optimises the second
    (a 1 ms CNN took 27-41 ms, then 3 ms, then 0.6 ms here), and a scheduler that learned
    those would predict high and refuse. Best effort: a model may legitimately reject
    size-1 dims."""
    inputs: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = [1 if d < 0 else d for d in t.full_shape(spec.max_batch_size)]  # batch of 1
        if t.datatype == "BYTES":
            inputs[t.name] = np.full(shape, b"", dtype=np.object_)
        else:
            inputs[t.name] = np.zeros(shape, dtype=V2_TO_NUMPY[t.datatype])
    try:
        for _ in range(WARM_UP_RUNS):
            runtime.run(inputs, [t.name for t in spec.outputs])
    except Exception as exc:
        print(f"warm-up run of '{spec.name}' failed (the load continues): {exc}", file=sys.stderr)
