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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


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
            import torch

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
            self.loads += 1
            return load_model(self.specs[model_id], self.threads, self._evicted)

        async def _run(self, xs: list[Any]) -> list[Any]:
            # a batch holds one model's requests: Ray splits batches by multiplexed model id
            return run_batch(await self.get_model(serve.get_multiplexed_model_id()), xs)

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
                x = decode(body, spec["input_shape"])
            except ValueError as exc:
                return Response(str(exc), status_code=400)
            y = np.ascontiguousarray(await self.predict(x), dtype="<f4")
            return Response(y.tobytes(), media_type="application/octet-stream",
                            headers={"x-shape": ",".join(map(str, y.shape))})

    return Models.bind()


# ---------------------------------------------------------------- the runtime code (no Ray here)


class OnnxModel:
    """An ONNX model in onnxruntime: ``intra_op`` threads, one inter-op, sequential."""

    def __init__(self, path: str, threads: int, on_evict: Callable[[], None] | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session: Any = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self._on_evict = on_evict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    def __del__(self) -> None:  # Ray calls it on eviction, then the collector may again: once
        if getattr(self, "_on_evict", None) is not None:
            self._on_evict()
        self._on_evict, self.session = None, None


class TorchModel:
    """A TorchScript module (torch's thread counts are the process's: set by the replica)."""

    def __init__(self, path: str, on_evict: Callable[[], None] | None = None) -> None:
        import torch

        self.torch = torch
        self.module: Any = torch.jit.load(path, map_location="cpu").eval()
        self._on_evict = on_evict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(np.array(x))).numpy()

    def __del__(self) -> None:
        if getattr(self, "_on_evict", None) is not None:
            self._on_evict()
        self._on_evict, self.module = None, None


def load_model(spec: dict[str, Any], threads: int, on_evict: Callable[[], None] | None = None) -> Any:
    """The model ``spec`` names (``path``, ``format``: onnx | torchscript)."""
    if spec["format"] == "onnx":
        return OnnxModel(spec["path"], threads, on_evict)
    return TorchModel(spec["path"], on_evict)


def decode(body: bytes, input_shape: list[int]) -> np.ndarray:
    """A request's raw float32 body as ``[-1, *input_shape]``; ValueError says what is wrong."""
    row = 4 * int(np.prod(input_shape))
    if not body or len(body) % row:
        raise ValueError(f"the body ({len(body)} bytes) is not a float32 batch of shape "
                         f"[-1, {', '.join(map(str, input_shape))}]")
    return np.frombuffer(body, dtype="<f4").reshape(-1, *input_shape)


def run_batch(model: Callable[[np.ndarray], np.ndarray], xs: list[np.ndarray]) -> list[np.ndarray]:
    """One runtime call for a batch of requests (each ``[rows, ...]``); each gets its rows back."""
    y = model(np.concatenate(xs) if len(xs) > 1 else xs[0])
    return np.split(y, np.cumsum([len(x) for x in xs])[:-1])


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
