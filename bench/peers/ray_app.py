"""The peers benchmark's Ray Serve app, run by the Ray peer's venv (never by the bench's).

    python ray_app.py --address 127.0.0.1:PORT --config app.json

connects to a running Ray head (``ray start --head --block``, started by the adapter),
starts Serve's HTTP proxy on ``config["http_port"]`` (127.0.0.1), deploys the app and
exits once it is running (Serve's controller is detached: the app stays up).

The app is one deployment, one replica. Its ``@serve.multiplexed`` loader loads a model
by id (the model's name, from the ``serve_multiplexed_model_id`` header) from its file
(``config["models"]``: name -> path, format, input shape) with ONNX Runtime or TorchScript,
at most ``config["slots"]`` per replica (Ray evicts the least recently used). Requests
are batched by ``@serve.batch`` (Ray splits a batch by model id). A request's body is
the input tensor's raw float32 bytes, reshaped to ``[-1, *input_shape]``; the answer is
the output's raw float32 bytes with its shape in the ``x-shape`` header. ``GET /stats``
answers the loader's own counts (loads, evictions, models resident).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def build_app(config: dict[str, Any]) -> Any:
    """The Serve application for ``config`` (slots, batching and replica options come from
    it, so they are fixed when the class is defined, as Ray's decorators want)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    batch = config["batch"]  # None: unbatched

    @serve.deployment(name="models", num_replicas=1, max_ongoing_requests=config["max_ongoing_requests"],
                      max_queued_requests=config["max_queued_requests"],
                      ray_actor_options={"num_cpus": config["replica_num_cpus"]})
    class Models:
        def __init__(self) -> None:
            import numpy as np
            import onnxruntime as ort
            import torch

            self.np, self.ort, self.torch = np, ort, torch
            self.threads = int(config["threads"])
            torch.set_num_threads(self.threads)
            torch.set_num_interop_threads(1)
            self.specs: dict[str, dict[str, Any]] = config["models"]
            self.loads = 0
            self.evictions = 0

        def _evicted(self) -> None:
            self.evictions += 1

        @serve.multiplexed(max_num_models_per_replica=int(config["slots"]))
        async def get_model(self, model_id: str) -> Any:
            spec = self.specs[model_id]
            self.loads += 1
            if spec["format"] == "onnx":
                return OnnxModel(self.ort, spec["path"], self.threads, self._evicted)
            return TorchModel(self.torch, spec["path"], self._evicted)

        async def _run(self, xs: list[Any]) -> list[Any]:
            # a batch holds one model's requests: Ray splits batches by multiplexed model id
            model = await self.get_model(serve.get_multiplexed_model_id())
            y = model(self.np.concatenate(xs) if len(xs) > 1 else xs[0])
            return self.np.split(y, self.np.cumsum([len(x) for x in xs])[:-1])

        if batch is None:  # unbatched: one request, one call
            async def predict(self, x: Any) -> Any:
                return (await self._run([x]))[0]
        else:
            @serve.batch(max_batch_size=int(batch["max_batch_size"]), batch_wait_timeout_s=float(batch["wait_s"]))
            async def predict(self, xs: list[Any]) -> list[Any]:
                return await self._run(xs)

        async def __call__(self, request: Request) -> Response:
            if request.url.path.rstrip("/").endswith("/stats"):
                return JSONResponse({"loads": self.loads, "evictions": self.evictions})
            model_id = serve.get_multiplexed_model_id()
            spec = self.specs.get(model_id)
            if spec is None:
                return Response(f"unknown model {model_id!r}: set the serve_multiplexed_model_id header "
                                "to one of the app's models", status_code=404)
            body = await request.body()
            try:
                x = self.np.frombuffer(body, dtype="<f4").reshape(-1, *spec["input_shape"])
            except ValueError:
                return Response(f"the body ({len(body)} bytes) is not a float32 batch of shape "
                                f"[-1, {', '.join(map(str, spec['input_shape']))}]", status_code=400)
            y = self.np.ascontiguousarray(await self.predict(x), dtype="<f4")
            return Response(y.tobytes(), media_type="application/octet-stream",
                            headers={"x-shape": ",".join(map(str, y.shape))})

    class OnnxModel:
        def __init__(self, ort: Any, path: str, threads: int, on_evict: Any) -> None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self._on_evict = on_evict

        def __call__(self, x: Any) -> Any:
            return self.session.run(None, {self.input: x})[0]

        def __del__(self) -> None:  # Ray calls it on eviction (then the collector may again)
            if self._on_evict is not None:
                self._on_evict()
                self._on_evict, self.session = None, None

    class TorchModel:
        def __init__(self, torch: Any, path: str, on_evict: Any) -> None:
            self.torch = torch
            self.module = torch.jit.load(path, map_location="cpu").eval()
            self._on_evict = on_evict

        def __call__(self, x: Any) -> Any:
            with self.torch.inference_mode():
                return self.module(self.torch.from_numpy(x.copy())).numpy()

        def __del__(self) -> None:
            if self._on_evict is not None:
                self._on_evict()
                self._on_evict, self.module = None, None

    return Models.bind()


def main() -> int:
    p = argparse.ArgumentParser(description="deploy the peers benchmark's Ray Serve app")
    p.add_argument("--address", required=True, help="the Ray head's GCS address, 127.0.0.1:PORT")
    p.add_argument("--config", required=True, type=Path)
    args = p.parse_args()
    config = json.loads(args.config.read_text())

    import ray
    from ray import serve

    ray.init(address=args.address, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": int(config["http_port"])})
    serve.run(build_app(config), name="peers", route_prefix="/")  # returns once the app is running
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
