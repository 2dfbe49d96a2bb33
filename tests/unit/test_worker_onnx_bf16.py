"""The ONNX runtime with BF16 next to other types: numpy has no bfloat16, so BF16
tensors travel as OrtValues, and a model that mixes them with FP32, INT32 or
BYTES tensors must still run (or be refused at load with a clear error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kserve.errors import InvalidArgument
from modelfiles import config as cfg
from worker.runtimes import open_runtime

_TYPES = {"FP32": TensorProto.FLOAT, "BF16": TensorProto.BFLOAT16, "INT32": TensorProto.INT32,
          "BYTES": TensorProto.STRING}


def _runtime(tmp_path: Path, nodes: list[onnx.NodeProto], inputs: dict[str, str],
             outputs: dict[str, str]):
    """An ONNX model of ``nodes`` over [batch, 4] tensors, opened as the worker would."""
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info(n, _TYPES[t], ["batch", 4]) for n, t in inputs.items()],
        [helper.make_tensor_value_info(n, _TYPES[t], ["batch", 4]) for n, t in outputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())

    def io(names: dict[str, str]) -> list[dict[str, Any]]:
        return [{"name": n, "data_type": "TYPE_STRING" if t == "BYTES" else f"TYPE_{t}", "dims": [4]}
                for n, t in names.items()]

    config = cfg.parse_json({"name": "mixed", "platform": cfg.ONNX, "max_batch_size": 8,
                             "input": io(inputs), "output": io(outputs)}, "mixed")
    return open_runtime(path, cfg.spec_of(config), "cpu", 1)


X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3.5


def test_fp32_in_bf16_out(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, [helper.make_node("Cast", ["INPUT0"], ["OUTPUT0"], to=TensorProto.BFLOAT16)],
                  {"INPUT0": "FP32"}, {"OUTPUT0": "BF16"})
    out = rt.run({"INPUT0": X}, ["OUTPUT0"])
    assert out["OUTPUT0"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["OUTPUT0"], X.astype(ml_dtypes.bfloat16))


def test_bf16_and_fp32_in_fp32_out(tmp_path: Path) -> None:
    rt = _runtime(tmp_path,
                  [helper.make_node("Cast", ["INPUT0"], ["X32"], to=TensorProto.FLOAT),
                   helper.make_node("Add", ["X32", "INPUT1"], ["OUTPUT0"])],
                  {"INPUT0": "BF16", "INPUT1": "FP32"}, {"OUTPUT0": "FP32"})
    out = rt.run({"INPUT0": X.astype(ml_dtypes.bfloat16), "INPUT1": np.ones_like(X)}, ["OUTPUT0"])
    np.testing.assert_array_equal(out["OUTPUT0"], X + 1)


def test_bf16_and_int32_in_bf16_and_int32_out_with_read_only_inputs(tmp_path: Path) -> None:
    rt = _runtime(tmp_path,
                  [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"]),
                   helper.make_node("Identity", ["INPUT1"], ["OUTPUT1"])],
                  {"INPUT0": "BF16", "INPUT1": "INT32"}, {"OUTPUT0": "BF16", "OUTPUT1": "INT32"})
    ints = np.arange(8, dtype=np.int32).reshape(4, 2).T  # not contiguous
    ints.setflags(write=False)  # request arrays decoded from a body are read-only views
    out = rt.run({"INPUT0": X.astype(ml_dtypes.bfloat16), "INPUT1": ints}, ["OUTPUT0", "OUTPUT1"])
    np.testing.assert_array_equal(out["OUTPUT0"], X.astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(out["OUTPUT1"], ints)


def test_bf16_in_with_strings_in_and_out(tmp_path: Path) -> None:
    rt = _runtime(tmp_path,
                  [helper.make_node("Cast", ["INPUT0"], ["OUTPUT0"], to=TensorProto.FLOAT),
                   helper.make_node("Identity", ["INPUT1"], ["OUTPUT1"])],
                  {"INPUT0": "BF16", "INPUT1": "BYTES"}, {"OUTPUT0": "FP32", "OUTPUT1": "BYTES"})
    text = np.array([[b"a", b"b", b"c", b"d"]], dtype=np.object_)
    out = rt.run({"INPUT0": X[:1].astype(ml_dtypes.bfloat16), "INPUT1": text}, ["OUTPUT0", "OUTPUT1"])
    np.testing.assert_array_equal(out["OUTPUT0"], X[:1])
    assert out["OUTPUT1"].tolist() == text.tolist()


def test_bf16_out_with_string_inputs_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="failed to load 'mixed'.*BF16 outputs.*BYTES inputs"):
        _runtime(tmp_path,
                 [helper.make_node("Cast", ["INPUT0"], ["OUTPUT0"], to=TensorProto.BFLOAT16),
                  helper.make_node("Identity", ["INPUT1"], ["OUTPUT1"])],
                 {"INPUT0": "FP32", "INPUT1": "BYTES"}, {"OUTPUT0": "BF16", "OUTPUT1": "BYTES"})
