"""Which model platforms an instance can serve, and how an ONNX model reaches a Triton that
has no onnxruntime backend.

Triton has no call that lists its backends: the server metadata names protocol extensions
only, and the backend directory is on the server's own disk. So the driver asks by a probe
load: for each backend, a throwaway model whose config names that backend and whose only file
is a ``model.py`` that raises. A server without the backend refuses it at once, before reading any file
(Triton: "unable to find backend library for backend 'X'"; inferplex worker: "unsupported
platform/backend"); any other answer (the model file is missing) means the backend is there.
Nothing stays loaded: Triton lists nothing afterwards, the worker lists the probe UNAVAILABLE.

A server with the Python backend but no onnxruntime serves a tenant's ONNX model through
inferplex's adapter (``placement/triton_python_adapter/model.py``, run under ONNX Runtime in
the backend's stub); no adapter exists for TorchScript, so such a server is not offered
TorchScript models and placement puts them elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfiles.config import DEFAULT_FILENAME, ONNX, TORCHSCRIPT

# the Triton backend each tenant platform runs on
PLATFORM_BACKEND = {ONNX: "onnxruntime", TORCHSCRIPT: "pytorch"}
ADAPTER_BACKEND = "python"
PROBED_BACKENDS = (*PLATFORM_BACKEND.values(), ADAPTER_BACKEND)
# instance-level names no tenant can produce (tenant names start with a letter)
PROBE_NAME_PREFIX = "_backend_probe__"
_MISSING_BACKEND = ("unable to find backend library for backend", "unsupported platform/backend")
ADAPTER_SOURCE = Path(__file__).with_name("triton_python_adapter") / "model.py"
ADAPTER_FILE_PARAMETER = "inferplex_onnx_file"  # the adapter reads the ONNX file's name here


# the probe's only file: no model for onnxruntime or pytorch, and a Python model that fails at
# once (a Python model without its model.py leaves the stub waiting for the load's timeout)
_PROBE_FILES = {"1/model.py": b"raise RuntimeError('inferplex backend probe: not a model')\n"}


def probe_load(backend: str) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """The (name, config, files) of a load that tells whether ``backend`` is there."""
    name = PROBE_NAME_PREFIX + backend
    return name, {"name": name, "backend": backend, "max_batch_size": 0}, dict(_PROBE_FILES)


def backend_missing(refusal: str) -> bool:
    """Whether a probe load's refusal says the server has no such backend."""
    return any(phrase in refusal for phrase in _MISSING_BACKEND)


def platform_of(config: dict[str, Any]) -> str:
    """The tenant platform a model config names (by platform or by backend), "" if neither."""
    platform = str(config.get("platform") or "")
    if platform:
        return platform
    backend = config.get("backend")
    return next((p for p, b in PLATFORM_BACKEND.items() if b == backend), "")


@dataclass(frozen=True, slots=True)
class Backends:
    """The backends a server has, as far as inferplex's platforms are concerned."""

    present: frozenset[str]

    def native(self, platform: str) -> bool:
        return PLATFORM_BACKEND.get(platform) in self.present

    def adapted(self, platform: str) -> bool:
        """Served through the Python-backend adapter (ONNX only)."""
        return not self.native(platform) and platform == ONNX and ADAPTER_BACKEND in self.present

    def platforms(self) -> frozenset[str]:
        """The tenant platforms the server can serve, natively or through the adapter."""
        return frozenset(p for p in PLATFORM_BACKEND if self.native(p) or self.adapted(p))


def adapt_onnx(config: dict[str, Any], files: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The config and files that serve an ONNX model through the Python-backend adapter: the
    same inputs, outputs and batch size (the catalog's config, without dynamic batching: the
    control plane batches), ``backend: python``, and the adapter as ``<version>/model.py``
    beside each version's ONNX file."""
    adapted = {k: v for k, v in config.items() if k not in ("platform", "backend", "default_model_filename")}
    adapted["backend"] = ADAPTER_BACKEND
    onnx_file = str(config.get("default_model_filename") or DEFAULT_FILENAME[ONNX])
    adapted["parameters"] = {**(config.get("parameters") or {}),
                             ADAPTER_FILE_PARAMETER: {"string_value": onnx_file}}
    source = ADAPTER_SOURCE.read_bytes()
    versions = {path.partition("/")[0] for path in files}
    return adapted, {**files, **{f"{v}/model.py": source for v in sorted(versions)}}
