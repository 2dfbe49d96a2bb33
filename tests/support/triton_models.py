"""Triton's classic ``simple`` and ``simple_string`` models, two ways each.

On real Triton (only the Python backend in the nvidia-pytriton wheel) they are Python-backend
models: ``python_simple`` / ``python_simple_string``. On ``inferplex worker`` they are ONNX:
``models.simple`` and ``onnx_simple_string`` here. Same names, inputs, outputs and
max_batch_size, so a differential test can send both servers the same requests:
INPUT0, INPUT1 [-1, 16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
(``simple_string``: the numbers as decimal strings, BYTES in and out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnx import TensorProto, helper

from tests.support.models import ModelArtifact, _io, _onnx_bytes, _onnx_config, config_pbtxt

# One source for both Python models: the config's datatype says whether the tensors are
# numbers or their decimal strings (Triton passes the config to initialize()).
PYTHON_SIMPLE_MODEL = '''\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.strings = config["input"][0]["data_type"] == "TYPE_STRING"

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            if self.strings:
                a, b = a.astype(np.int32), b.astype(np.int32)
            total, difference = a + b, a - b
            if self.strings:
                total = np.array([str(x).encode() for x in total.flat], dtype=np.object_).reshape(a.shape)
                difference = np.array([str(x).encode() for x in difference.flat],
                                      dtype=np.object_).reshape(a.shape)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", total), pb_utils.Tensor("OUTPUT1", difference)]))
        return responses
'''


def _simple_config(name: str, config_type: str) -> dict[str, Any]:
    return {
        "name": name, "max_batch_size": 8,
        "input": [_io("INPUT0", config_type, [16]), _io("INPUT1", config_type, [16])],
        "output": [_io("OUTPUT0", config_type, [16]), _io("OUTPUT1", config_type, [16])],
    }


def _python_model(name: str, config_type: str) -> ModelArtifact:
    config = _simple_config(name, config_type) | {"backend": "python"}
    return ModelArtifact(config, "model.py", PYTHON_SIMPLE_MODEL.encode())


def python_simple(name: str = "simple") -> ModelArtifact:
    return _python_model(name, "TYPE_INT32")


def python_simple_string(name: str = "simple_string") -> ModelArtifact:
    return _python_model(name, "TYPE_STRING")


def onnx_simple_string(name: str = "simple_string") -> ModelArtifact:
    """``simple_string`` as ONNX: strings cast to INT32, added and subtracted, cast back."""
    dims: list[int | str] = ["batch", 16]
    nodes = [helper.make_node("Cast", [f"INPUT{i}"], [f"n{i}"], to=TensorProto.INT32) for i in (0, 1)]
    nodes += [helper.make_node("Add", ["n0", "n1"], ["sum"]), helper.make_node("Sub", ["n0", "n1"], ["diff"]),
              helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
              helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING)]
    graph = helper.make_graph(
        nodes, "simple_string",
        [helper.make_tensor_value_info(f"INPUT{i}", TensorProto.STRING, dims) for i in (0, 1)],
        [helper.make_tensor_value_info(f"OUTPUT{i}", TensorProto.STRING, dims) for i in (0, 1)],
    )
    spec = _simple_config(name, "TYPE_STRING")
    return ModelArtifact(_onnx_config(name, 8, spec["input"], spec["output"]), "model.onnx", _onnx_bytes(graph))


def write_model(repository: Path, artifact: ModelArtifact) -> Path:
    """``<repository>/<name>/config.pbtxt`` and ``<version>/<file>``: Triton's layout."""
    model_dir = repository / artifact.config["name"]
    for path, data in artifact.repo_files().items():
        (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / path).write_bytes(data)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(artifact.config))
    return model_dir
