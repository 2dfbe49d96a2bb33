"""The one narrow interface through which the control plane touches an instance.

An instance is anything that speaks KServe v2 plus Triton's model-repository and
statistics extensions: NVIDIA Triton, or ``inferplex worker``. The production
implementation (``placement/triton_driver.py``) is built on ``tritonclient`` and
is the same for both; unit tests of decision cores use fakes of this ABC.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelState:
    """One row of the instance's repository index."""

    name: str
    version: str
    state: str  # READY | UNAVAILABLE | LOADING | UNLOADING
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model version an instance serves now, with the memory it reports for it (None where
    its backend reports none: Triton's Python backend, for one)."""

    name: str
    version: str
    memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    instance_id: str
    http_url: str  # host:port of the v2 HTTP endpoint
    grpc_url: str  # host:port of the v2 gRPC endpoint
    memory_bytes: int  # capacity the control plane may fill
    instance_class: str = "cpu"  # profiles are kept per class
    metrics_url: str | None = None  # Triton's Prometheus endpoint (GPU memory), if given


class LoadSeconds(float):
    """What ``InstanceDriver.load`` returns: wall seconds until ready, with ``cached`` True
    where the instance loaded the files from its own artifact cache and none were sent (a
    warm load, whichever load of the model it was)."""

    cached: bool
    digest: str | None
    """The files' digest (``modelfiles/artifacts.py``) where the instance keeps a cache of
    them: what its memory report's cache lists once the model is unloaded."""

    def __new__(cls, seconds: float, cached: bool = False, digest: str | None = None) -> LoadSeconds:
        value = super().__new__(cls, seconds)
        value.cached = cached
        value.digest = digest
        return value


@dataclass(frozen=True, slots=True)
class InferTiming:
    outputs: dict[str, np.ndarray]
    round_trip_s: float


class InstanceDriver(abc.ABC):
    info: InstanceInfo

    @abc.abstractmethod
    async def is_ready(self) -> bool: ...

    @abc.abstractmethod
    async def index(self) -> list[ModelState]: ...

    @abc.abstractmethod
    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        """Load ``name`` with a Triton model config (JSON form) and files keyed
        ``"<version>/<filename>"``. Returns wall seconds until ready (a ``LoadSeconds`` says
        whether the instance's artifact cache served the files). Raises
        ``kserve.errors.ResourceExhausted`` when it does not fit the instance's
        budget, ``InvalidArgument`` for a bad model."""

    @abc.abstractmethod
    async def unload(self, name: str) -> None: ...

    async def served_models(self, confirm_ready: bool = True) -> list[ServedModel]:
        """What the instance serves now. The index alone cannot say (Triton lists only the
        models of its repository directory, not those loaded with ``file:`` overrides); the
        production driver reads the statistics of every loaded model instead. This default,
        for fakes, reads the index."""
        return [ServedModel(m.name, m.version) for m in await self.index() if m.state == "READY"]

    @abc.abstractmethod
    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        """The statistics extension's JSON (``model_stats`` list)."""

    @abc.abstractmethod
    async def infer_arrays(
        self, name: str, inputs: dict[str, np.ndarray], output_names: list[str] | None = None,
        timeout_s: float | None = None,
    ) -> InferTiming:
        """Run one (batched) inference from numpy arrays; used by the profiler. An
        instance that can stops the execution after ``timeout_s`` (DeadlineExceeded)."""

    async def memory_used(self) -> int | None:
        """Bytes the instance reports in use, where it has such a report: the embedded
        worker's own, or a Triton's GPU memory from its metrics endpoint; None elsewhere."""
        return None

    @abc.abstractmethod
    async def close(self) -> None: ...


def reported_memory_bytes(entry: dict[str, Any]) -> int | None:
    """A statistics entry's ``memory_usage`` total: the worker always reports it, Triton where
    the backend does (its Python backend reports nothing)."""
    sizes = [int(u.get("byte_size", 0)) for u in entry.get("memory_usage") or [] if isinstance(u, dict)]
    return sum(sizes) if sizes else None
