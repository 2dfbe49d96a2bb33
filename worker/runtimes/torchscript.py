"""TorchScript (``pytorch_libtorch``) runtime.

I/O binding follows Triton's PyTorch backend: TorchScript has no tensor names
Triton can rely on, so inputs are passed to ``forward`` positionally in the
order the config lists them (name them ``INPUT__0``, ``INPUT__1``, ... or
anything else), and the module's outputs (a tensor, or a tuple/list of tensors)
are matched to the config's outputs by position. A dict result is matched by name.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from kserve.alignment import aligned
from kserve.errors import InvalidArgument
from modelfiles.config import ModelSpec
from modelfiles.safety import check_torchscript_bytes
from modelfiles.verify import verify_torchscript, verify_torchscript_archive
from worker.runtimes.base import Runtime

_SUPPORTED = {"BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}


class TorchScriptRuntime(Runtime):
    def __init__(self, source: bytes, spec: ModelSpec, device: str, threads: int) -> None:
        import torch

        unsupported = [t.name for t in (*spec.inputs, *spec.outputs) if t.datatype not in _SUPPORTED]
        if unsupported:
            raise InvalidArgument(
                f"failed to load '{spec.name}': tensors {unsupported} have datatypes this worker's "
                f"TorchScript runtime does not support; use one of {sorted(_SUPPORTED)} or ONNX"
            )
        check_torchscript_bytes(source, spec.name)
        verify_torchscript_archive(source, spec.name)  # what would run inside torch.jit.load
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidArgument(f"device {device} asked for, but torch sees no CUDA device; run with --device cpu")
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # process-wide; one executor thread uses it
        try:
            self.module = torch.jit.load(io.BytesIO(source), map_location=device).eval()
        except Exception as exc:
            raise InvalidArgument(
                f"failed to load '{spec.name}': torch.jit.load could not read the archive: {exc}"
            ) from None
        verify_torchscript(self.module, spec.name)  # every operation the program can run
        self._torch = torch
        self._device = torch.device(device)
        self._input_order = [t.name for t in spec.inputs]
        self._output_order = [t.name for t in spec.outputs]

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        tensors = []
        for name in self._input_order:
            # torch.from_numpy wants a writable buffer; aligned like ONNX Runtime's inputs
            array = aligned(inputs[name], writable=True)
            tensors.append(self._torch.from_numpy(array).to(self._device))
        return tensors

    def infer(self, prepared: Any, output_names: list[str], deadline_ns: int | None = None) -> Any:
        with self._torch.inference_mode():
            return self.module(*prepared)

    def collect(self, raw: Any, output_names: list[str]) -> dict[str, np.ndarray]:
        if isinstance(raw, dict):
            by_name = raw
        else:
            results = list(raw) if isinstance(raw, (tuple, list)) else [raw]
            if len(results) < len(self._output_order):
                raise InvalidArgument(
                    f"the TorchScript module returned {len(results)} outputs but the config lists "
                    f"{len(self._output_order)}; outputs are matched to the config by position"
                )
            by_name = dict(zip(self._output_order, results, strict=False))
        return {name: by_name[name].detach().cpu().numpy() for name in output_names}

    def close(self) -> None:
        del self.module
