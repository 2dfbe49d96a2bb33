"""Test models, built in code (no torch.onnx.export) and written as bytes.

Every builder takes the model name and returns a :class:`ModelArtifact`: the
Triton model config in its JSON form (what the repository API's ``config``
parameter carries) and the model file's bytes. Helpers turn artifacts into a
Triton repository directory (``write_triton_repo``) or into the ``config`` and
``file:<version>/<filename>`` parameters of a load (``model_files``).

The "bad" builders produce files a worker must refuse: they are only ever
written as bytes, never loaded here.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from controlplane import cli_demo

# The SLO tests upload with unless they are about the SLO: a first request waits for its
# model's cold load, and on a busy CI machine a load can outlast the default 100 ms
TEST_SLO_MS = 10_000

ONNX_OPSET = 17
ONNX_IR_VERSION = 8


@dataclass(frozen=True, slots=True)
class ModelArtifact:
    config: dict[str, Any]  # Triton model config, JSON form
    filename: str  # "model.onnx" or "model.pt"
    data: bytes
    version: int = 1

    def repo_files(self) -> dict[str, bytes]:
        """The file by its path in the model's folder: ``{"1/model.onnx": bytes}``."""
        return {f"{self.version}/{self.filename}": self.data}

    def files(self) -> dict[str, bytes]:
        """The repository API's file parameters: ``{"file:1/model.onnx": bytes}``."""
        return {f"file:{path}": data for path, data in self.repo_files().items()}


Builder = Callable[[str], ModelArtifact]

# v2 datatype -> (Triton config type, ONNX element type, numpy dtype used by tritonclient)
DATATYPES: dict[str, tuple[str, int, Any]] = {
    "BOOL": ("TYPE_BOOL", TensorProto.BOOL, np.bool_),
    "UINT8": ("TYPE_UINT8", TensorProto.UINT8, np.uint8),
    "UINT16": ("TYPE_UINT16", TensorProto.UINT16, np.uint16),
    "UINT32": ("TYPE_UINT32", TensorProto.UINT32, np.uint32),
    "UINT64": ("TYPE_UINT64", TensorProto.UINT64, np.uint64),
    "INT8": ("TYPE_INT8", TensorProto.INT8, np.int8),
    "INT16": ("TYPE_INT16", TensorProto.INT16, np.int16),
    "INT32": ("TYPE_INT32", TensorProto.INT32, np.int32),
    "INT64": ("TYPE_INT64", TensorProto.INT64, np.int64),
    "FP16": ("TYPE_FP16", TensorProto.FLOAT16, np.float16),
    "FP32": ("TYPE_FP32", TensorProto.FLOAT, np.float32),
    "FP64": ("TYPE_FP64", TensorProto.DOUBLE, np.float64),
    "BYTES": ("TYPE_STRING", TensorProto.STRING, np.object_),
    "BF16": ("TYPE_BF16", TensorProto.BFLOAT16, ml_dtypes.bfloat16),
}


def _onnx_bytes(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="inferplex-tests"
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _io(name: str, config_type: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": config_type, "dims": dims}


def _onnx_config(name: str, max_batch_size: int, inputs: list[dict[str, Any]],
                 outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": max_batch_size,
            "input": inputs, "output": outputs}


# --------------------------------------------------------------------------- good models


def simple(name: str = "simple") -> ModelArtifact:
    """Triton's classic example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32 [16])."""
    dims: list[int | str] = ["batch", 16]
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "simple",
        [helper.make_tensor_value_info("INPUT0", TensorProto.INT32, dims),
         helper.make_tensor_value_info("INPUT1", TensorProto.INT32, dims)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, dims),
         helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, dims)],
    )
    config = _onnx_config(
        name, 8,
        [_io("INPUT0", "TYPE_INT32", [16]), _io("INPUT1", "TYPE_INT32", [16])],
        [_io("OUTPUT0", "TYPE_INT32", [16]), _io("OUTPUT1", "TYPE_INT32", [16])],
    )
    return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))


MLP_SIZES = cli_demo.SIZES


def simple_inputs(module: Any, a: np.ndarray, b: np.ndarray | None = None, binary: bool = True) -> list:
    """``simple``'s INPUT0 and INPUT1 (INT32) for a tritonclient module: http, grpc or
    their asyncio variants. ``b`` defaults to ``a``; ``binary`` applies to HTTP only."""
    b = a if b is None else b
    inputs = [module.InferInput("INPUT0", list(a.shape), "INT32"),
              module.InferInput("INPUT1", list(b.shape), "INT32")]
    for inp, x in zip(inputs, (a, b), strict=True):
        if module.__name__.startswith("tritonclient.http"):
            inp.set_data_from_numpy(x, binary_data=binary)
        else:
            inp.set_data_from_numpy(x)
    return inputs


def mlp_weights(seed: int = 0) -> list[np.ndarray]:
    """W1 [64,128], b1 [128], W2 [128,10], b2 [10] — shared by the ONNX and TorchScript MLPs
    and ``inferplex demo-model``."""
    return cli_demo.mlp_weights(seed)


def mlp_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What both MLP variants compute, in numpy."""
    w1, b1, w2, b2 = mlp_weights(seed)
    return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2


def mlp_onnx(name: str = "mlp") -> ModelArtifact:
    """FP32 MLP 64 -> 128 -> 10 with a dynamic batch dimension (ONNX)."""
    i, _, o = MLP_SIZES
    graph = cli_demo.mlp_graph("mlp")
    config = _onnx_config(name, 64, [_io("INPUT0", "TYPE_FP32", [i])], [_io("OUTPUT0", "TYPE_FP32", [o])])
    return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))


def _torch_mlp():  # -> torch.nn.Module; torch imported lazily (slow import)
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            i, h, o = MLP_SIZES
            self.fc1 = torch.nn.Linear(i, h)
            self.fc2 = torch.nn.Linear(h, o)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    module = MLP()
    w1, b1, w2, b2 = mlp_weights()
    with torch.no_grad():
        module.fc1.weight.copy_(torch.from_numpy(w1.T.copy()))
        module.fc1.bias.copy_(torch.from_numpy(b1))
        module.fc2.weight.copy_(torch.from_numpy(w2.T.copy()))
        module.fc2.bias.copy_(torch.from_numpy(b2))
    return module.eval()


def mlp_torchscript(name: str = "mlp_pt") -> ModelArtifact:
    """The same MLP as TorchScript (torch.jit.script + torch.jit.save), Triton's INPUT__0 naming."""
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_torch_mlp()), buf)
    i, _, o = MLP_SIZES
    config = {"name": name, "platform": "pytorch_libtorch", "max_batch_size": 64,
              "input": [_io("INPUT__0", "TYPE_FP32", [i])],
              "output": [_io("OUTPUT__0", "TYPE_FP32", [o])]}
    return ModelArtifact(config, "model.pt", buf.getvalue())


def cnn_onnx(name: str = "cnn") -> ModelArtifact:
    """Small FP32 CNN on [3,32,32] images -> 10 logits, dynamic batch (ONNX)."""
    rng = np.random.default_rng(1)
    c1 = (rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32)
    c1b = np.zeros(16, np.float32)
    c2 = (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    c2b = np.zeros(32, np.float32)
    fc = (rng.standard_normal((32, 10)) * 0.2).astype(np.float32)
    fcb = np.zeros(10, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["INPUT0", "C1", "C1B"], ["h1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h1"], ["h1r"]),
         helper.make_node("MaxPool", ["h1r"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Conv", ["p1", "C2", "C2B"], ["h2"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h2"], ["h2r"]),
         helper.make_node("GlobalAveragePool", ["h2r"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "FC", "FCB"], ["OUTPUT0"])],
        "cnn",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(a, n) for a, n in
                     [(c1, "C1"), (c1b, "C1B"), (c2, "C2"), (c2b, "C2B"), (fc, "FC"), (fcb, "FCB")]],
    )
    config = _onnx_config(name, 64, [_io("INPUT0", "TYPE_FP32", [3, 32, 32])],
                          [_io("OUTPUT0", "TYPE_FP32", [10])])
    return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))


def wide_onnx(name: str = "wide") -> ModelArtifact:
    """FP32 [batch,1024] x [1024,4096]: 16 MiB of weights, so file bytes dominate its memory."""
    w = np.random.default_rng(2).standard_normal((1024, 4096)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["INPUT0", "W"], ["OUTPUT0"])], "wide",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 1024])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4096])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    config = _onnx_config(name, 8, [_io("INPUT0", "TYPE_FP32", [1024])], [_io("OUTPUT0", "TYPE_FP32", [4096])])
    return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))


def identity(datatype: str) -> Builder:
    """A builder for OUTPUT0 = INPUT0 of one v2 datatype, shape [batch, -1] (max_batch_size 8)."""
    config_type, onnx_type, _ = DATATYPES[datatype]

    def build(name: str = f"identity_{datatype.lower()}") -> ModelArtifact:
        graph = helper.make_graph(
            [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
            f"identity_{datatype.lower()}",
            [helper.make_tensor_value_info("INPUT0", onnx_type, ["batch", "n"])],
            [helper.make_tensor_value_info("OUTPUT0", onnx_type, ["batch", "n"])],
        )
        config = _onnx_config(name, 8, [_io("INPUT0", config_type, [-1])],
                              [_io("OUTPUT0", config_type, [-1])])
        return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))

    return build


BUILDERS: dict[str, Builder] = {
    "simple": simple,
    "mlp": mlp_onnx,
    "mlp_pt": mlp_torchscript,
    "cnn": cnn_onnx,
    "wide": wide_onnx,
    **{f"identity_{dt.lower()}": identity(dt) for dt in DATATYPES},
}


# --------------------------------------------------------------------------- bad files


def corrupt_onnx() -> bytes:
    """Bytes that are not a parseable ONNX model (a valid model cut in half, then junk)."""
    good = simple().data
    return good[: len(good) // 2] + b"\xff\xfe not onnx \x00" * 8


def onnx_unknown_op() -> bytes:
    """Passes onnx.checker (ops of a custom domain are not checked) but no runtime has the op."""
    x = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [None, 4])
    node = helper.make_node("Frobnicate", ["INPUT0"], ["OUTPUT0"], domain="com.example")
    graph = helper.make_graph([node], "unknown_op", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = ONNX_IR_VERSION
    return model.SerializeToString()


def onnx_external_data(location: str = "../../etc/passwd") -> bytes:
    """A checker-valid ONNX model whose initializer lives in an external file at ``location``."""
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "W"], ["OUTPUT0"])],
        "external",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = ONNX_IR_VERSION
    return model.SerializeToString()  # not checked: check_model would itself go looking for the file


def pickle_pt() -> bytes:
    """A ``.pt`` that is a plain pickle (never load it)."""
    return pickle.dumps({"weights": [1.0, 2.0, 3.0], "note": "a pickle, not TorchScript"})


def state_dict_pt() -> bytes:
    """A ``torch.save``'d state_dict: a zip archive, but not TorchScript."""
    import torch

    buf = io.BytesIO()
    torch.save(_torch_mlp().state_dict(), buf)
    return buf.getvalue()


def bad_model_files(name: str, data: bytes, filename: str = "model.onnx",
                    platform: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Load parameters for a bad file under a config that is otherwise fine."""
    if platform is None:
        platform = "pytorch_libtorch" if filename.endswith(".pt") else "onnxruntime_onnx"
    prefix = "__0" if platform == "pytorch_libtorch" else "0"
    config = {"name": name, "platform": platform, "max_batch_size": 8,
              "input": [_io(f"INPUT{prefix}", "TYPE_FP32", [4])],
              "output": [_io(f"OUTPUT{prefix}", "TYPE_FP32", [4])]}
    return config, {f"file:1/{filename}": data}


# --------------------------------------------------------------------------- helpers


def model_files(name: str, kind: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(config JSON, files) for a load through the repository API; ``kind`` picks the
    builder (default: the one registered under ``name``)."""
    artifact = BUILDERS[kind or name](name)
    return artifact.config, artifact.files()


def config_pbtxt(config: dict[str, Any]) -> str:
    """The config in Triton's ``config.pbtxt`` protobuf text format."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def write_triton_repo(root: Path, models: dict[str, Builder], *,
                      omit_config: Iterable[str] = ()) -> Path:
    """Write ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/<file>``
    (Triton's layout). Models named in ``omit_config`` get no config.pbtxt."""
    skip = set(omit_config)
    root.mkdir(parents=True, exist_ok=True)
    for name, builder in models.items():
        artifact = builder(name)
        model_dir = root / name
        (model_dir / str(artifact.version)).mkdir(parents=True, exist_ok=True)
        (model_dir / str(artifact.version) / artifact.filename).write_bytes(artifact.data)
        if name not in skip:
            (model_dir / "config.pbtxt").write_text(config_pbtxt(artifact.config))
    return root
