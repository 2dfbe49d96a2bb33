"""inferplex's ONNX adapter for Triton's Python backend (runs inside Triton, not in inferplex).

A Triton whose backend directory has no onnxruntime backend (the ``nvidia-pytriton`` wheel's
server has only the Python backend) can still serve a tenant's ONNX model: the driver loads
this file as ``<version>/model.py`` next to the tenant's ``<version>/model.onnx``, with
``backend: python`` and the parameter ``inferplex_onnx_file`` naming the ONNX file. The model
runs under ONNX Runtime in the backend's stub process, one request at a time, on the CPU.

It needs ``onnxruntime`` (and numpy < 2, which the stub itself needs) importable in the stub's
interpreter: the stub embeds Python isolated (PYTHONPATH is ignored) and takes its sys.path
from the first ``python3`` on Triton's PATH, so that Python's environment must hold them
(scripts/ensure-triton builds one). The driver uses this adapter only where the server lacks
the model's own backend (``placement/backends.py``); production Triton, with its onnxruntime
backend, is sent the tenant's model unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by the Python backend's stub

MODEL_FILE_PARAMETER = "inferplex_onnx_file"
THREADS_PARAMETER = "inferplex_threads"


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        filename = parameters.get(MODEL_FILE_PARAMETER) or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        # one stub process per model: keep it from taking every core of a shared machine
        options.intra_op_num_threads = int(parameters.get(THREADS_PARAMETER) or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [i["name"] for i in config.get("input", [])]
        self.output_names = [o["name"] for o in config.get("output", [])]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                feeds = {}
                for name in self.input_names:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:  # a missing input is ONNX Runtime's to name
                        feeds[name] = _as_onnx(tensor)
                wanted = list(request.requested_output_names()) or self.output_names
                values = self.session.run(wanted, feeds)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(wanted, values, strict=True)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # the tenant's model failed on this request: say why to its caller
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"the model failed: {exc}")))
        return responses

    def finalize(self) -> None:
        self.session = None


def _as_onnx(tensor: Any) -> np.ndarray:
    array = tensor.as_numpy()
    # BYTES arrive as an object array of bytes; ONNX Runtime's string tensors take str
    if array.dtype == np.object_:
        return np.vectorize(lambda b: b.decode("utf-8") if isinstance(b, bytes) else b, otypes=[object])(array)
    return array
