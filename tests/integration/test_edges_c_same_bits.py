"""The same request gives the same bits over every transport (issue 11).

ONNX Runtime's reductions sum a float axis in an order that depends on where the tensor
starts in memory: 4-byte aligned data is summed in vector lanes from the first aligned
address, unaligned data element by element. A tensor's address in the model host is where
it lands in the frame the worker sends it (after the inputs before it), so the bits of a
ReduceSum depended on the sizes and order of the other inputs, and on nothing the model
computes. Every transport, every input order and every size of the inputs before it must
give the bits a lone, aligned tensor gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from tests.support.models import ModelArtifact, _io, _onnx_bytes, _onnx_config
from tests.support.worker import WorkerProcess, run_worker

N = 4099  # a long axis, not a multiple of any vector width
MODEL = "reduce"


def reduce_model(name: str = MODEL) -> ModelArtifact:
    """SUM = ReduceSum(X, axis 1), MEAN = ReduceMean(X, axis 1); PAD (UINT8, any length)
    only echoes back: its size moves X in the request."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X", "axes"], ["SUM"], keepdims=0),
         helper.make_node("ReduceMean", ["X"], ["MEAN"], axes=[1], keepdims=0),
         helper.make_node("Identity", ["PAD"], ["PAD_OUT"])],
        "reduce",
        [helper.make_tensor_value_info("PAD", TensorProto.UINT8, ["batch", "p"]),
         helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", N])],
        [helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("MEAN", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("PAD_OUT", TensorProto.UINT8, ["batch", "p"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    config = _onnx_config(name, 4, [_io("PAD", "TYPE_UINT8", [-1]), _io("X", "TYPE_FP32", [N])],
                          [_io("SUM", "TYPE_FP32", [-1]) | {"reshape": {"shape": []}},
                           _io("MEAN", "TYPE_FP32", [-1]) | {"reshape": {"shape": []}},
                           _io("PAD_OUT", "TYPE_UINT8", [-1])])
    return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with run_worker(tmp_path_factory.mktemp("same-bits"), "--memory-budget", "1GiB") as w:
        artifact = reduce_model()
        with grpcclient.InferenceServerClient(w.grpc_url) as client:
            client.load_model(MODEL, config=json.dumps(artifact.config), files=artifact.files())
        yield w


X = (np.random.default_rng(7).standard_normal((1, N)) * 1000).astype(np.float32)


def _inputs(module: Any, pad: int, order: str, binary: bool) -> list[Any]:
    tensors = {"PAD": np.arange(pad, dtype=np.uint8).reshape(1, pad), "X": X}
    inputs = []
    for name in order.split(","):
        array = tensors[name]
        inp = module.InferInput(name, list(array.shape), "UINT8" if name == "PAD" else "FP32")
        if module is httpclient:
            inp.set_data_from_numpy(array, binary_data=binary)
        else:
            inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs


def _bits(result: Any) -> tuple[list[int], list[int]]:
    return (result.as_numpy("SUM").view(np.uint32).tolist(), result.as_numpy("MEAN").view(np.uint32).tolist())


# (transport, PAD's length in bytes, input order): PAD of 1 or 3 bytes before X puts X at an
# odd offset in the binary body and in the frame to the model host
CASES = [("http-binary", pad, order) for pad in (1, 3, 4, 16) for order in ("PAD,X", "X,PAD")]
CASES += [("http-json", 3, "PAD,X"), ("http-json", 3, "X,PAD"), ("grpc", 3, "PAD,X"), ("grpc", 1, "X,PAD")]


def test_reductions_give_the_same_bits_over_every_transport_and_offset(worker: WorkerProcess) -> None:
    answers: dict[tuple[str, int, str], tuple[list[int], list[int]]] = {}
    with httpclient.InferenceServerClient(worker.http_url) as http, \
            grpcclient.InferenceServerClient(worker.grpc_url) as grpc:
        for transport, pad, order in CASES:
            if transport == "grpc":
                result = grpc.infer(MODEL, _inputs(grpcclient, pad, order, True))
            else:
                result = http.infer(MODEL, _inputs(httpclient, pad, order, transport == "http-binary"))
            answers[(transport, pad, order)] = _bits(result)
    reference = answers[("grpc", 1, "X,PAD")]  # X first: at the frame's start
    differ = {case: bits for case, bits in answers.items() if bits != reference}
    assert not differ, f"reference {reference}; these answered other bits: {differ}"
