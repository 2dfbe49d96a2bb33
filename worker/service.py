"""The worker's transport-agnostic handler layer: both the HTTP and the gRPC server
call these methods and only translate to and from their wire formats."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from kserve.classification import check_classifiable, classify, requested_classes
from kserve.errors import (
    InferplexError,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from kserve.tensors import (
    COMPUTE_NS_PARAMETER,
    TIMEOUT_PARAMETER,
    InferRequest,
    InferResponse,
    PendingRequest,
    Tensor,
)
from modelfiles import config as cfg
from modelfiles.requests import CheckedRequest, check_request
from worker.artifact_cache import cache_snapshot
from worker.executor import Executor
from worker.repository import IndexRow, LoadedModel, LoadedVersion, ModelRepository
from worker.stats import ExecTiming

log = logging.getLogger(__name__)

SERVER_NAME = "inferplex-worker"
# Only what this worker really implements.
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics"]
DEFAULT_MAX_EXEC_S = 10.0


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str


class WorkerService:
    def __init__(self, repository: ModelRepository, executor: Executor, info: ServerInfo, *,
                 allow_repository_control: bool = True, max_exec_s: float = DEFAULT_MAX_EXEC_S) -> None:
        self.repository = repository
        self.executor = executor
        self.info = info
        self.allow_repository_control = allow_repository_control
        self.max_exec_s = max_exec_s
        self.ready = False  # set once the startup loads are done

    # ------------------------------------------------------------------ metadata

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.info.version, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model, _ = self.repository.get(name, version)
        spec = model.spec
        return {
            "name": name,
            "versions": [str(v) for v in sorted(model.versions)] if not version else [version],
            "platform": spec.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.full_shape(spec.max_batch_size)}
                       for t in spec.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.full_shape(spec.max_batch_size)}
                        for t in spec.outputs],
        }

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        model, _ = self.repository.get(name, version)
        return model.config

    def memory(self) -> dict[str, Any]:
        report: dict[str, Any] = dict(self.repository.budget.snapshot())
        report["cache"] = cache_snapshot(self.repository.cache)
        return report

    def index(self, ready_only: bool = False) -> list[IndexRow]:
        return self.repository.index(ready_only)

    # ------------------------------------------------------------------ inference

    async def infer(self, request: InferRequest | PendingRequest, timeout_s: float | None = None) -> InferResponse:
        """``timeout_s``: what the transport allows (gRPC deadline, HTTP header)."""
        started = self._admit(request, timeout_s)
        try:
            outputs, timing = await self.executor.run(started.loaded.runtime, started.checked.inputs,
                                                      started.checked.output_names, started.deadline_ns)
        except Exception as exc:
            error = started.failed(exc)
            raise error from (None if error is exc else exc)
        return started.respond(outputs, timing)

    def infer_blocking(self, request: InferRequest | PendingRequest, timeout_s: float | None = None) -> InferResponse:
        """``infer`` for callers on their own threads (the gRPC server's): same checks,
        same executor, same statistics, no event loop in between."""
        started = self._admit(request, timeout_s)
        try:
            outputs, timing = self.executor.run_blocking(started.loaded.runtime, started.checked.inputs,
                                                         started.checked.output_names, started.deadline_ns)
        except Exception as exc:
            error = started.failed(exc)
            raise error from (None if error is exc else exc)
        return started.respond(outputs, timing)

    def _admit(self, request: InferRequest | PendingRequest, timeout_s: float | None) -> _Started:
        """Resolve and check the request and fix its deadline. A request refused here is
        not counted as a failure: Triton's statistics count only requests that reached the
        model (its own checks refuse before that)."""
        received = time.monotonic_ns()
        model, loaded = self.repository.get(request.model_name, request.model_version)
        checked = check_request(model.spec, request)
        classes = requested_classes(request.outputs)
        for name, count in classes.items():
            out_spec = model.spec.output(name)
            assert out_spec is not None  # check_request refused unknown outputs
            check_classifiable(name, out_spec.datatype, out_spec.dims, count, model.spec.max_batch_size > 0)
        limit_s = min(self.max_exec_s, timeout_s if timeout_s is not None else math.inf,
                      request_timeout_s(request))
        return _Started(request, model.spec, loaded, checked, classes, received,
                        received + int(limit_s * 1e9))

    # ------------------------------------------------------------------ repository

    def _check_control(self) -> None:
        if not self.allow_repository_control:
            raise Unavailable(
                "explicit model load / unload is not allowed: the worker runs with "
                "--model-control-mode none; restart it with --model-control-mode explicit"
            )

    async def load(self, name: str, config_json: str | None, files: dict[str, bytes],
                   digest: str | None = None) -> None:
        """``digest``: the ``inferplex_artifact_sha256`` parameter (modelfiles/artifacts.py)."""
        self._check_control()
        await self.repository.load(name, config_json, files, digest)

    async def unload(self, name: str) -> None:
        self._check_control()
        await self.repository.unload(name)

    # ------------------------------------------------------------------ statistics

    def statistics(self, name: str = "", version: str = "") -> list[dict[str, Any]]:
        """The statistics extension's ``model_stats`` entries (HTTP JSON form), with
        ``memory_usage`` carrying the model's accounted bytes the way Triton reports
        its memory: ``{"type": "CPU"|"GPU", "id": device, "byte_size": n}``."""
        if name:
            model, loaded = self._stats_target(name, version)
            chosen = [loaded.version] if version else sorted(model.versions)
            return [self._version_stats(name, model, v) for v in chosen]
        if version:
            raise NotFound("a model version was given without a model name")
        entries = []
        for entry_name, entry in sorted(self.repository.entries.items()):
            model = entry.model  # once: a reload or unload may swap it meanwhile
            if model is not None:
                entries.extend(self._version_stats(entry_name, model, v) for v in sorted(model.versions))
        return entries

    def _stats_target(self, name: str, version: str) -> tuple[LoadedModel, LoadedVersion]:
        """The model a statistics request names; Triton refuses an unknown one as invalid,
        in words of its own (not the 404 of the other model endpoints)."""
        try:
            return self.repository.get(name, version)
        except NotFound:
            if self.repository.is_ready(name):
                raise InvalidArgument(f"requested model version is not available for model '{name}'") from None
            raise InvalidArgument(f"requested model '{name}' is not available") from None

    def _version_stats(self, name: str, model: LoadedModel, version: int) -> dict[str, Any]:
        stats = model.versions[version].stats.json(name, str(version))
        kind, device_id = _memory_kind(self.repository.device)
        stats["memory_usage"] = [{"type": kind, "id": device_id,
                                  "byte_size": _version_share(model.charged_bytes, sorted(model.versions), version)}]
        return stats


def request_timeout_s(request: InferRequest | PendingRequest) -> float:
    """Triton's ``timeout`` request parameter (microseconds), inf when absent. A caller may
    only shorten what the worker allows."""
    value = request.parameters.get(TIMEOUT_PARAMETER)
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidArgument(f"request parameter '{TIMEOUT_PARAMETER}' must be a positive number "
                              f"of microseconds, got {value!r}")
    return float(value) / 1e6


# Room for what a load carries besides its files (config JSON, names, framing), so a
# load whose files are just over --max-model-bytes gets a message naming the flag
# rather than the transport's generic "message larger than max".
LOAD_ENVELOPE_BYTES = 1 << 20


def check_model_files(name: str, files: dict[str, bytes], max_model_bytes: int) -> None:
    size = sum(len(data) for data in files.values())
    if size > max_model_bytes:
        raise PayloadTooLarge(
            f"failed to load '{name}': its files are {size} bytes, over the worker's limit of "
            f"{max_model_bytes} bytes (--max-model-bytes); raise the limit to load this model"
        )


def _memory_kind(device: str) -> tuple[str, int]:
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        return "GPU", int(index or 0)
    return "CPU", 0


def _version_share(charged: int, versions: list[int], version: int) -> int:
    """Versions load together and are measured as one; split the charge so the versions'
    figures add up to the model's (the remainder goes to the newest)."""
    share = charged // len(versions)
    return share + (charged - share * len(versions) if version == versions[-1] else 0)


@dataclass(slots=True)
class _Started:
    """A checked request on its way through the executor."""

    request: InferRequest | PendingRequest
    spec: cfg.ModelSpec
    loaded: LoadedVersion
    checked: CheckedRequest
    classes: dict[str, int]  # output name -> its top classes asked for (classification extension)
    received: int
    deadline_ns: int  # time.monotonic_ns past which the execution is stopped (plus a margin)

    def failed(self, exc: Exception) -> InferplexError:
        """Count the failure; a runtime's own exception becomes Internal with its message."""
        self.loaded.stats.record_failure(time.monotonic_ns() - self.received)
        if isinstance(exc, InferplexError):
            return exc
        return Internal(f"inference failed for model '{self.request.model_name}' "
                        f"({self.spec.platform}): {exc}")

    def respond(self, outputs: dict[str, np.ndarray], timing: ExecTiming) -> InferResponse:
        tensors = []
        for name in self.checked.output_names:
            out_spec = self.spec.output(name)
            assert out_spec is not None
            array = outputs[name]
            if name in self.classes:
                array = classify(name, array, self.classes[name], self.spec.max_batch_size > 0)
                tensors.append(Tensor(name, "BYTES", list(array.shape), array))
            else:
                tensors.append(Tensor(name, out_spec.datatype, list(array.shape), array))
        self.loaded.stats.record_success(self.checked.batch_size, timing, time.monotonic_ns() - self.received)
        # the batch's own compute time, in-band: the control plane feeds its predictor from
        # it without a statistics read per request (README: "inferplex_compute_ns")
        return InferResponse(self.request.model_name, str(self.loaded.version), self.request.id, tensors,
                             {COMPUTE_NS_PARAMETER: timing.finished - timing.started})
