"""What placement needs from the floor above it, as interfaces the control plane's wiring
(``controlplane/services.py``) fills in: a few numbers, a metrics sink and the model
catalog. Placement never imports ``controlplane/`` (ARCHITECTURE: the layout is the
architecture), so the catalog and the metrics registry are described here by the few
members placement uses, and any object with them will do (a test passes a fake).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from placement.cluster import DEFAULT_EVICT_MARGIN

Status = Literal["profiling", "ready", "failed", "loading"]


@dataclass(frozen=True, slots=True)
class PlacementSettings:
    """The control plane's settings that placement acts on: ``Settings`` fields of the
    same names, which own the defaults and their documentation."""

    profile_on_upload: bool
    profile_exec_timeout_s: float
    stats_poll_interval_s: float
    placement_policy: str = "cost"
    placement_evict_margin: float | None = DEFAULT_EVICT_MARGIN
    replica_id: str = ""
    """This replica's name: its demand is published under it for the leader (empty: not
    published)."""


class PlacementMetrics(Protocol):
    """The counters placement moves (``controlplane.metrics.Metrics`` has them)."""

    def error(self, tenant: str, model: str, kind: str) -> None: ...

    def load(self, model: str, seconds: float, ok: bool) -> None: ...

    def eviction(self, model: str, reason: str = "delete") -> None: ...

    def loaded_bytes(self, tenant: str, model: str, n: int) -> None: ...

    def cold_start(self, tenant: str, model: str) -> None: ...


class ModelRecord(Protocol):
    """One model version of the catalog, as placement reads it."""

    @property
    def tenant(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def qualified_name(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def platform(self) -> str: ...

    @property
    def status(self) -> Status: ...

    @property
    def profile(self) -> dict[str, Any] | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def slo_ms(self) -> float: ...

    @property
    def max_batch_size(self) -> int: ...


class ModelCatalog(Protocol):
    """The catalog's lookups and status updates that placement and its reconciler use.
    Records are ``Any`` in parameters: the catalog's methods take its own record class,
    which a narrower parameter type here could not accept."""

    def by_qualified(self, qualified: str, version: int | str | None = None) -> Any | None: ...

    def triton_config(self, record: Any) -> dict[str, Any]: ...

    def files(self, record: Any) -> dict[str, bytes]: ...

    async def set_status(self, record: Any, status: Status, reason: str = "",
                         profile: dict[str, Any] | None = None) -> Any | None: ...

    async def set_progress(self, record: Any, progress: float) -> None: ...
