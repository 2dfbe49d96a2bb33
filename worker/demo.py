"""The built-in demo model for ``inferplex worker --demo``: Triton's classic ``simple``
(INT32 INPUT0, INPUT1 [16]; OUTPUT0 = sum, OUTPUT1 = difference), built in code so
a fresh machine needs no model files."""

from __future__ import annotations

import json

from onnx import TensorProto, helper

DEMO_MODEL = "simple"


def simple_model() -> tuple[str, dict[str, bytes]]:
    """(config JSON, files) ready for ``ModelRepository.load``."""
    dims: list[int | str] = ["batch", 16]
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        DEMO_MODEL,
        [helper.make_tensor_value_info(n, TensorProto.INT32, dims) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, dims) for n in ("OUTPUT0", "OUTPUT1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    tensor = [{"data_type": "TYPE_INT32", "dims": [16]}]
    config = {
        "name": DEMO_MODEL, "platform": "onnxruntime_onnx", "max_batch_size": 8,
        "input": [{"name": n, **tensor[0]} for n in ("INPUT0", "INPUT1")],
        "output": [{"name": n, **tensor[0]} for n in ("OUTPUT0", "OUTPUT1")],
    }
    return json.dumps(config), {"file:1/model.onnx": model.SerializeToString()}
