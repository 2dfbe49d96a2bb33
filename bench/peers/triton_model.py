"""The peers benchmark's Python-backend model for standalone Triton (runs in Triton's stub).

The nvidia-pytriton wheel's tritonserver has the Python backend only (no onnxruntime or
libtorch backend), so a TorchScript model is served by this ``model.py``: it loads the
version folder's ``model.pt`` with ``torch.jit`` (``peer_threads`` intra-op threads), runs
it 3 times on zeros (as inferplex's model host warms a model up), and runs each batch the
dynamic batcher hands it as one call: the requests' inputs concatenated along the batch
axis, the output split back by each request's row count.
It serves a ``model.onnx`` the same way under ONNX Runtime, but by default ONNX models go
through inferplex's own adapter (placement/triton_python_adapter), as inferplex's worker
runs them on this Triton (``triton.ONNX_MODEL`` chooses).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python backend's stub

WARMUP_RUNS = 3
MODEL_FILE_PARAMETER = "peer_model_file"
THREADS_PARAMETER = "peer_threads"


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        threads = int(parameters.get(THREADS_PARAMETER) or 1)
        path = os.path.join(args["model_repository"], args["model_version"],
                            parameters.get(MODEL_FILE_PARAMETER) or "model.pt")
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        if path.endswith(".onnx"):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.run = lambda x: session.run(None, {self.input_name: x})[0]
        else:
            import torch

            torch.set_num_threads(threads)
            module = torch.jit.load(path, map_location="cpu").eval()

            def run(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return module(torch.from_numpy(x)).numpy()

            self.run = run
        # 3 runs before the first request, as inferplex's model host does: TorchScript's profiling
        # executor profiles the first run and optimises the second
        dims = config["input"][0].get("dims")
        if dims:
            warm = np.zeros((1, *(int(d) for d in dims)), np.float32)
            for _ in range(WARMUP_RUNS):
                self.run(warm)

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            parts = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
            y = self.run(np.concatenate(parts, axis=0))
        except Exception as exc:  # the model failed on this batch: every caller in it is told why
            error = pb_utils.TritonError(f"the model failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        out, start = [], 0
        for part in parts:
            rows = np.ascontiguousarray(y[start:start + len(part)])
            start += len(part)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, rows)]))
        return out

    def finalize(self) -> None:
        self.run = None
