"""The peers benchmark's TorchServe handler: one model file (ONNX or TorchScript) per archive.

Runs inside TorchServe's Python worker (the peer's venv, never the bench's): TorchServe
imports this file from the unpacked .mar, makes one ``Handler`` and calls ``initialize``
once, then ``handle`` with every batch its frontend formed (up to the model's
``batch_size`` requests within ``max_batch_delay``). The archive also holds ``model.json``
(the model's format, input shape and the runtime's thread count). A request's body is
the input tensor's raw little-endian float32 bytes (``[n, *input_shape]``, n >= 1); the
answer is the output's raw float32 bytes (``[n, out]``, content type
application/octet-stream). One malformed request gets a 400 of its own; the rest of its
batch is answered.

Exactly one class is defined here: TorchServe takes the module's only class as the
service.
"""

import json
import os

import numpy as np

META_FILE = "model.json"
OCTET = "application/octet-stream"
WARMUP_RUNS = 3


class Handler:
    def __init__(self):
        self.meta = None
        self.run = None
        self.initialized = False

    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, META_FILE)) as f:
            self.meta = json.load(f)
        threads = int(self.meta.get("threads", 1))
        path = os.path.join(model_dir, self.meta["file"])
        import torch  # TorchServe's worker has imported it already: its thread pool is set either way

        torch.set_num_threads(threads)
        if self.meta["format"] == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            self.run = lambda x: sess.run(None, {name: x})[0]
        else:
            module = torch.jit.load(path, map_location="cpu").eval()

            def run(x):
                with torch.inference_mode():
                    return module(torch.from_numpy(x)).numpy()

            self.run = run
        # 3 runs before the first request, as inferplex's model host does: TorchScript's profiling
        # executor profiles the first run and optimises the second
        warm = np.zeros((1, *self.meta["input_shape"]), np.float32)
        for _ in range(WARMUP_RUNS):
            self.run(warm)
        self.initialized = True

    def handle(self, data, context):
        if data is None:  # TorchServe's warm-up call on an empty batch
            return None
        shape = tuple(self.meta["input_shape"])
        per_row = int(np.prod(shape))
        arrays, answers = [], [None] * len(data)
        for i, request in enumerate(data):
            body = request.get("body") if request.get("body") is not None else request.get("data")
            if isinstance(body, str):
                body = body.encode()
            if not isinstance(body, (bytes, bytearray)) or len(body) == 0 or len(body) % (4 * per_row):
                size = len(body) if isinstance(body, (bytes, bytearray, str)) else 0
                context.set_response_status(400, "bad input", i)
                answers[i] = (f"the body must be raw little-endian float32 of shape [n, "
                              f"{', '.join(map(str, shape))}] ({4 * per_row} bytes a row); got {size} bytes").encode()
                continue
            x = np.frombuffer(bytearray(body), dtype="<f4").reshape(-1, *shape)
            arrays.append((i, x))
        if arrays:
            batch = np.concatenate([x for _, x in arrays]) if len(arrays) > 1 else arrays[0][1]
            out = np.ascontiguousarray(self.run(np.ascontiguousarray(batch, dtype=np.float32)), dtype="<f4")
            start = 0
            for i, x in arrays:
                answers[i] = out[start:start + x.shape[0]].tobytes()
                context.set_response_content_type(i, OCTET)
                start += x.shape[0]
        return answers
