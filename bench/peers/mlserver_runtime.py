"""The peers benchmark's custom MLServer runtime (runs inside MLServer, in its venv).

MLServer has no ONNX or TorchScript runtime of its own for this: a user writes an
``MLModel``. This one loads the model-settings' ``parameters.uri`` (a ``model.onnx`` under
ONNX Runtime, or a ``model.pt`` under ``torch.jit``), with ``parameters.extra.threads``
intra-op threads (1 in the benchmark), runs it 3 times on zeros of ``parameters.extra.input_shape``
(as inferplex's model host warms a model up), and answers a v2 request's single FP32 input with
its single FP32 output, named as ``parameters.extra`` says. Adaptive batching (in the
model settings) hands ``predict`` requests already concatenated along the batch axis and
splits the answer again, so the runtime runs one batch per call.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

WARMUP_RUNS = 3


class PeerModelRuntime(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self._input_name = extra.get("input_name", "INPUT0")
        self._output_name = extra.get("output_name", "OUTPUT0")
        threads = int(extra.get("threads", 1))
        path = await get_model_uri(self.settings)
        if path.endswith(".onnx"):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            feed = session.get_inputs()[0].name
            self._run = lambda x: session.run(None, {feed: x})[0]
        elif path.endswith(".pt"):
            import torch

            torch.set_num_threads(threads)
            module = torch.jit.load(path, map_location="cpu").eval()

            def run(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return module(torch.from_numpy(x)).numpy()

            self._run = run
        else:
            raise MLServerError(f"{self.name}: the model file must be a .onnx or a .pt (TorchScript), not {path}")
        # 3 runs before the first request, as inferplex's model host does: TorchScript's profiling
        # executor profiles the first run and optimises the second
        if extra.get("input_shape"):
            warm = np.zeros((1, *extra["input_shape"]), np.float32)
            for _ in range(WARMUP_RUNS):
                self._run(warm)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise MLServerError(f"{self.name} takes one input ({self._input_name}), got {len(payload.inputs)}")
        x = np.ascontiguousarray(NumpyCodec.decode_input(payload.inputs[0]), dtype=np.float32)
        y = np.ascontiguousarray(self._run(x), dtype=np.float32)
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(self._output_name, y)])
