"""Model runtimes behind one interface (``Runtime``), chosen by Triton platform name."""

from __future__ import annotations

from pathlib import Path

from worker.config import ONNX, TORCHSCRIPT, ModelSpec
from worker.runtimes.base import Runtime


def open_runtime(path: Path, spec: ModelSpec, device: str, threads: int) -> Runtime:
    if spec.platform == ONNX:
        from worker.runtimes.onnxrt import OnnxRuntime

        return OnnxRuntime(path, spec, device, threads)
    if spec.platform == TORCHSCRIPT:
        from worker.runtimes.torchscript import TorchScriptRuntime

        return TorchScriptRuntime(path, spec, device, threads)
    raise ValueError(f"no runtime for platform {spec.platform!r}")


def import_runtime(platform: str) -> None:
    """Import a runtime's library ahead of a load, so its one-time import cost is not
    measured as the first model's memory."""
    if platform == TORCHSCRIPT:
        import torch  # noqa: F401
    else:
        import onnxruntime  # noqa: F401


__all__ = ["Runtime", "open_runtime", "import_runtime"]
