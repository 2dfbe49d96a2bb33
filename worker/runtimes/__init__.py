"""Model runtimes behind one interface (``Runtime``), chosen by Triton platform name."""

from __future__ import annotations

from pathlib import Path

from modelfiles.config import ONNX, TORCHSCRIPT, ModelSpec
from worker.runtimes.base import Runtime


def open_runtime(source: bytes | Path, spec: ModelSpec, device: str, threads: int) -> Runtime:
    """A runtime in this process, from the model's bytes (or its file). The worker itself
    runs models only in confined hosts (worker.sandbox); this is what a host calls."""
    if isinstance(source, Path):
        source = source.read_bytes()
    if spec.platform == ONNX:
        from worker.runtimes.onnxrt import OnnxRuntime

        return OnnxRuntime(source, spec, device, threads)
    if spec.platform == TORCHSCRIPT:
        from worker.runtimes.torchscript import TorchScriptRuntime

        return TorchScriptRuntime(source, spec, device, threads)
    raise ValueError(f"no runtime for platform {spec.platform!r}")


_warmed: set[str] = set()


def import_runtime(platform: str) -> None:
    """Import a runtime's library and pay its one-time setup (ORT's environment) ahead
    of a load, so that cost is not measured as the first model's memory."""
    if platform in _warmed:
        return
    if platform == TORCHSCRIPT:
        import torch  # noqa: F401
    else:
        import onnxruntime
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "warm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    _warmed.add(platform)


__all__ = ["Runtime", "open_runtime", "import_runtime"]
