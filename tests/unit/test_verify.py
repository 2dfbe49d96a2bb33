"""The model verifier: every common nn layer and the repo's own models pass, each hostile
program or graph is refused with a message naming what it used.

No ``from __future__ import annotations`` here: TorchScript reads the interface attribute's
annotation as an object.
"""

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from kserve.errors import InvalidArgument
from modelfiles.torchscript_ops import ALLOWED, REFUSED_WHY
from modelfiles.verify import (
    MAX_TENSOR_BYTES,
    tensor_bound,
    verify_onnx,
    verify_torchscript,
    verify_torchscript_archive,
)
from tests.support import hostile_models, models
from worker.sandbox.probe import inspect_model

nn = torch.nn


def _saved(module: Any) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def _verify(data: bytes) -> None:
    """What the probe and a model host do: the archive first, then the loaded program."""
    verify_torchscript_archive(data, "m")
    verify_torchscript(torch.jit.load(io.BytesIO(data)), "m")


# every scriptable common layer, as a tenant would script it
LAYERS: dict[str, Any] = {
    "Linear": lambda: nn.Linear(4, 4), "Conv1d": lambda: nn.Conv1d(2, 2, 3),
    "Conv2d": lambda: nn.Conv2d(2, 2, 3), "Conv3d": lambda: nn.Conv3d(2, 2, 3),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(2, 2, 3), "BatchNorm1d": lambda: nn.BatchNorm1d(4),
    "BatchNorm2d": lambda: nn.BatchNorm2d(4), "LayerNorm": lambda: nn.LayerNorm(4),
    "GroupNorm": lambda: nn.GroupNorm(2, 4), "InstanceNorm2d": lambda: nn.InstanceNorm2d(4),
    "LSTM": lambda: nn.LSTM(4, 4, batch_first=True), "GRU": lambda: nn.GRU(4, 4), "RNN": lambda: nn.RNN(4, 4),
    "LSTMCell": lambda: nn.LSTMCell(4, 4), "GRUCell": lambda: nn.GRUCell(4, 4),
    "Embedding": lambda: nn.Embedding(10, 4), "EmbeddingBag": lambda: nn.EmbeddingBag(10, 4),
    "MultiheadAttention": lambda: nn.MultiheadAttention(4, 2),
    "TransformerEncoderLayer": lambda: nn.TransformerEncoderLayer(8, 2, 16),
    "TransformerDecoderLayer": lambda: nn.TransformerDecoderLayer(8, 2, 16),
    "MaxPool2d": lambda: nn.MaxPool2d(2), "AvgPool2d": lambda: nn.AvgPool2d(2),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(1), "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d(1),
    "Activations": lambda: nn.Sequential(nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(),
                                         nn.LeakyReLU(), nn.ELU(), nn.Hardswish(), nn.Mish(), nn.PReLU(),
                                         nn.Softplus(), nn.Softmax(-1), nn.LogSoftmax(-1)),
    "Dropout": lambda: nn.Dropout(0.1), "Upsample": lambda: nn.Upsample(scale_factor=2),
    "UpsampleBilinear": lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
    "Flatten": lambda: nn.Flatten(), "Unflatten": lambda: nn.Unflatten(1, (2, 2)),
    "PixelShuffle": lambda: nn.PixelShuffle(2), "ZeroPad2d": lambda: nn.ZeroPad2d(1),
    "CosineSimilarity": lambda: nn.CosineSimilarity(),
    "Sequential": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(), nn.LayerNorm(8), nn.Linear(8, 2)),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("layer", LAYERS)
def test_every_common_nn_layer_scripted_passes(layer: str) -> None:
    _verify(_saved(torch.jit.script(LAYERS[layer]().eval())))


@pytest.mark.filterwarnings("ignore")
def test_the_repos_own_torchscript_models_pass_scripted_and_traced() -> None:
    from bench.gpu_predictability import ResNet50

    _verify(models.mlp_torchscript().data)
    with torch.inference_mode():
        traced = torch.jit.trace(ResNet50(classes=10, base=8).eval(), torch.randn(1, 3, 32, 32))
    _verify(_saved(traced))
    _verify(_saved(torch.jit.trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                                 nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(),
                                   torch.randn(1, 3, 8, 8))))


@pytest.mark.filterwarnings("ignore")
def test_hostile_torchscript_is_refused_at_its_operation_and_never_runs(tmp_path: Path) -> None:
    victim = tmp_path / "admin.key"
    victim.write_bytes(b"k" * 64)
    for hostile in hostile_models.torchscript_corpus(str(victim)):
        with pytest.raises(InvalidArgument) as err:
            inspect_model(hostile.data, name="m", max_tensor_bytes=MAX_TENSOR_BYTES)
        assert hostile.refusal and hostile.refusal in err.value.message, err.value.message
        assert "models may only use tensor operations" in err.value.message or \
            "torch.jit.load could not load" in err.value.message
    assert victim.read_bytes() == b"k" * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.key"]  # nothing saved beside it


class _Impl(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3


@torch.jit.interface
class _ModuleInterface(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pass


class _UsesInterface(nn.Module):
    impl: _ModuleInterface

    def __init__(self) -> None:
        super().__init__()
        self.impl = _Impl()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.impl.forward(x)


class _Prints(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("got", x)
        return x


class _Empty(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty([4]) + x


class _HiddenInBranch(nn.Module):
    @torch.jit.export
    def helper(self, x: torch.Tensor, n: int) -> torch.Tensor:
        for i in range(n):
            if i > 2:
                x = x + torch.from_file("/etc/hostname", shared=False, size=1, dtype=torch.uint8).float()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_module_interfaces_resolve_to_verified_submodules() -> None:
    _verify(_saved(torch.jit.script(_UsesInterface())))


@pytest.mark.parametrize(("module", "named"), [
    (_Prints, "prim::Print (in forward), which writes to the worker's output"),
    (_Empty, "aten::empty (in forward), which returns uninitialised memory (use zeros)"),
    (_HiddenInBranch, "aten::from_file (in helper), which reads or writes files"),
])
def test_refusals_name_the_operation_and_where_it_is(module: type[nn.Module], named: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        _verify(_saved(torch.jit.script(module())))
    assert err.value.message.startswith(f"failed to load 'm': the TorchScript program calls {named}")


def test_the_allowlist_holds_no_operation_it_refuses() -> None:
    assert not ALLOWED & REFUSED_WHY.keys()
    assert all(op.split("::")[0] in ("aten", "prim") for op in ALLOWED)
    file_ops = {s.name for s in torch._C._jit_get_all_schemas()  # every op that takes a file name
                if any(a.name in ("filename", "path", "file") and "str" in str(a.type) for a in s.arguments)}
    assert {"aten::from_file", "aten::save"} <= file_ops and not file_ops & ALLOWED


# --------------------------------------------------------------------------- ONNX


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], **graph: Any) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, **graph),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])


@pytest.mark.parametrize("name", ["simple", "mlp", "cnn", "wide", "identity_bytes"])
def test_the_repos_onnx_models_pass(name: str) -> None:
    verify_onnx(onnx.load_from_string(models.BUILDERS[name](name).data), "m", max_tensor_bytes=MAX_TENSOR_BYTES)


def test_custom_domains_are_refused_in_the_graph_and_in_subgraphs() -> None:
    custom = helper.make_node("Spawn", ["x"], ["y"], domain="com.evil", name="n1")
    with pytest.raises(InvalidArgument, match="node 'n1' in the graph uses operator Spawn of the custom domain 'com.evil'"):
        verify_onnx(_model([custom], [X], [Y]), "m", max_tensor_bytes=MAX_TENSOR_BYTES)
    branch = helper.make_graph([helper.make_node("Spawn", ["x"], ["z"], domain="com.evil")], "b", [], [Y])
    plain = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "p", [], [Y])
    cond = numpy_helper.from_array(np.array(True), "c")
    node = helper.make_node("If", ["c"], ["y"], then_branch=plain, else_branch=branch, name="choose")
    with pytest.raises(InvalidArgument, match="a subgraph of If 'choose' uses operator Spawn"):
        verify_onnx(_model([node], [X], [Y], initializer=[cond]), "m", max_tensor_bytes=MAX_TENSOR_BYTES)


def test_model_local_functions_are_walked_like_the_graph() -> None:
    def with_function(body_op: str, body_domain: str) -> onnx.ModelProto:
        function = helper.make_function("local.fns", "Double", ["a"], ["b"],
                                        [helper.make_node(body_op, ["a", "a"], ["b"], domain=body_domain)],
                                        [helper.make_opsetid("", 17)])
        model = _model([helper.make_node("Double", ["x"], ["y"], domain="local.fns")], [X], [Y])
        model.functions.append(function)
        model.opset_import.append(helper.make_opsetid("local.fns", 1))
        return model

    verify_onnx(with_function("Add", ""), "m", max_tensor_bytes=MAX_TENSOR_BYTES)
    with pytest.raises(InvalidArgument, match="function 'Double' uses operator Steal of the custom domain 'com.evil'"):
        verify_onnx(with_function("Steal", "com.evil"), "m", max_tensor_bytes=MAX_TENSOR_BYTES)


@pytest.mark.parametrize("hostile", hostile_models.onnx_corpus(), ids=lambda h: h.artifact.config["name"])
def test_hostile_onnx_is_refused_with_its_reason(hostile: hostile_models.Hostile) -> None:
    with pytest.raises(InvalidArgument) as err:
        verify_onnx(onnx.load_from_string(hostile.data), "m", max_tensor_bytes=MAX_TENSOR_BYTES)
    assert hostile.refusal and hostile.refusal in err.value.message


def test_static_sizes_from_constant_inputs_are_bounded() -> None:
    shape = numpy_helper.from_array(np.array([4096, 1024, 4], np.int64), "shape")
    expand = _model([helper.make_node("Expand", ["x", "shape"], ["big"], name="grow"),
                     helper.make_node("ReduceSum", ["big"], ["y"])], [X], [Y], initializer=[shape])
    verify_onnx(expand, "m", max_tensor_bytes=64 << 20)  # 64 MiB fits
    with pytest.raises(InvalidArgument, match=r"Expand node 'grow' makes a tensor of shape \[4096, 1024, 4\] \(64.0 MiB\), "
                                              r"over the 32.0 MiB one tensor may hold"):
        verify_onnx(expand, "m", max_tensor_bytes=32 << 20)


def test_initializers_over_the_bound_are_refused_and_the_bound_grows_with_the_file() -> None:
    wide = onnx.load_from_string(models.wide_onnx().data)  # a 16 MiB initializer
    with pytest.raises(InvalidArgument, match=r"initializer 'W' has shape \[1024, 4096\] \(16.0 MiB\)"):
        verify_onnx(wide, "m", max_tensor_bytes=1 << 20)
    assert tensor_bound(10) == MAX_TENSOR_BYTES and tensor_bound(3 << 30) == 3 << 30


def test_a_runaway_loop_is_valid_and_passes() -> None:
    verify_onnx(onnx.load_from_string(hostile_models.runaway_loop().data), "m", max_tensor_bytes=MAX_TENSOR_BYTES)
