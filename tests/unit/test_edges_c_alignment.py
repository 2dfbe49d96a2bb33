"""Runtimes get their inputs aligned, whatever the wire handed over (issue 11): a binary
HTTP input is a view into the body at any offset, and ONNX Runtime's reductions sum the
same values differently at different addresses (kserve.alignment.TENSOR_ALIGNMENT)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kserve.alignment import TENSOR_ALIGNMENT, aligned
from kserve.tensors import tensor_from_buffer
from modelfiles import config as cfg
from worker.runtimes import open_runtime
from worker.sandbox import wire

N = 4099
X = (np.random.default_rng(3).standard_normal((1, N)) * 1000).astype(np.float32)


def _at_offset(array: np.ndarray, offset: int) -> np.ndarray:
    """``array``'s values in a read-only view starting ``offset`` bytes past an aligned address,
    as tensor_from_buffer makes them from a body."""
    body = np.zeros(array.nbytes + offset + TENSOR_ALIGNMENT, np.uint8)
    start = -body.ctypes.data % TENSOR_ALIGNMENT + offset
    body[start:start + array.nbytes] = array.reshape(-1).view(np.uint8)
    view = memoryview(body[start:start + array.nbytes]).toreadonly()
    return tensor_from_buffer("X", "FP32", list(array.shape), view, {}).data


def test_aligned_keeps_an_aligned_array_and_copies_an_unaligned_one() -> None:
    for offset in (1, 3, 4, 16, 36):
        view = _at_offset(X, offset)
        assert view.ctypes.data % TENSOR_ALIGNMENT == offset
        out = aligned(view)
        assert out.ctypes.data % TENSOR_ALIGNMENT == 0 and out.flags.c_contiguous
        assert out.shape == X.shape and out.dtype == X.dtype
        assert np.array_equal(out.view(np.uint32), X.view(np.uint32))
    home = aligned(_at_offset(X, 5))
    assert aligned(home) is home  # nothing copied once aligned
    readonly = _at_offset(X, 0)
    assert aligned(readonly) is readonly
    writable = aligned(readonly, writable=True)
    assert writable is not readonly and writable.flags.writeable
    strided = aligned(np.arange(32, dtype=np.float64)[::2])
    assert strided.flags.c_contiguous and strided.ctypes.data % TENSOR_ALIGNMENT == 0
    strings = np.array([b"a", b"b"], dtype=np.object_)
    assert aligned(strings) is strings


def _reduce_runtime(tmp_path: Path):
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X", "axes"], ["SUM"], keepdims=0)], "reduce",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info("SUM", TensorProto.FLOAT, [1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    config = cfg.parse_json({"name": "reduce", "platform": cfg.ONNX, "max_batch_size": 0,
                             "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1, N]}],
                             "output": [{"name": "SUM", "data_type": "TYPE_FP32", "dims": [1]}]}, "reduce")
    return open_runtime(path, cfg.spec_of(config), "cpu", 1)


def test_onnx_reduction_gives_the_same_bits_at_any_input_offset(tmp_path: Path) -> None:
    runtime = _reduce_runtime(tmp_path)
    answers = {offset: runtime.run({"X": _at_offset(X, offset)}, ["SUM"])["SUM"].view(np.uint32).tolist()
               for offset in (0, 1, 3, 4, 8, 12, 20, 32, 36)}
    assert len({str(bits) for bits in answers.values()}) == 1, answers


def test_wire_frames_put_every_tensor_at_an_aligned_address() -> None:
    arrays = {"PAD": np.arange(3, dtype=np.uint8), "S": np.array([b"xy", b""], dtype=np.object_),
              "EMPTY": np.zeros((0, 4), np.float32), "X": _at_offset(X, 3),
              "B": np.array([True, False, True])}
    types = {"PAD": "UINT8", "S": "BYTES", "EMPTY": "FP32", "X": "FP32", "B": "BOOL"}
    ours, theirs = socket.socketpair()
    with ours, theirs:
        descs, buffers = wire.encode_tensors(arrays, types)
        wire.send(ours, {"inputs": descs}, buffers)
        header, payload = wire.recv(theirs, 1 << 20)
    decoded = wire.decode_tensors(header["inputs"], payload, types)
    for name, array in decoded.items():
        if name != "S":
            assert array.ctypes.data % TENSOR_ALIGNMENT == 0, name
        assert array.shape == arrays[name].shape
        assert array.tolist() == arrays[name].tolist()
    assert np.array_equal(decoded["X"].view(np.uint32), X.view(np.uint32))


def test_wire_refuses_a_frame_whose_tensor_runs_into_the_padding() -> None:
    descs, buffers = wire.encode_tensors({"PAD": np.arange(3, dtype=np.uint8), "X": X},
                                         {"PAD": "UINT8", "X": "FP32"})
    payload = memoryview(b"".join(bytes(memoryview(b).cast("B")) for b in buffers))
    assert len(payload) == TENSOR_ALIGNMENT + X.nbytes  # 3 bytes, padding, then X
    with pytest.raises(wire.WireError):
        wire.decode_tensors(descs, payload[:-1], {"PAD": "UINT8", "X": "FP32"})
