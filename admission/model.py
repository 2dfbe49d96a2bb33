"""What the scheduler core reads and what it decides: plain frozen dataclasses.

The async shell in the gateway builds the inputs (a PendingRequest per arrival, the
instance slots from placement, tenant policies from the admin), hands them to
``admission.scheduler.Scheduler`` with a clock, and applies the decisions it gets back
(Refuse, Dispatch, Drop). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from kserve.errors import DeadlineExceeded, InferplexError, ResourceExhausted, Unavailable

ServiceClass = Literal["interactive", "batch"]
RefuseReason = Literal["quota", "infeasible", "queue_full"]


@dataclass(frozen=True, kw_only=True)
class PendingRequest:
    """One inference request waiting for admission.

    ``deadline_s`` is absolute on the scheduler's clock: the shell passes
    min(arrival + SLO, the client's own deadline); None makes it batch class (no
    deadline). ``merge_key`` is equal for requests that may share a batch (same
    non-batch shapes, datatypes and requested outputs), so they also share ``work``.
    """

    id: str
    tenant: str
    model: str  # instance-level name incl. version, e.g. "acme__m@1"
    display_name: str  # the name the tenant knows, the only one its messages may carry
    arrival_s: float
    deadline_s: float | None
    rows: int = 1  # size along the batch dimension; 1 for models that do not batch
    merge_key: Hashable = ()
    work: int = 1  # input elements per row, for size-aware prediction
    slo_s: float | None = None  # the model's SLO, only to word a refusal
    loading_s: float = 0.0  # of the wait since arrival, the time its model took to load

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"request {self.id}: rows must be >= 1, got {self.rows}")
        if self.work < 0:
            raise ValueError(f"request {self.id}: work must be >= 0, got {self.work}")


@dataclass(frozen=True)
class TenantPolicy:
    """The admin's settings for one tenant (PATCH /admin/tenants/{t})."""

    weight: float = 1.0  # its share of contended instance time, relative to the others
    rate_per_s: float | None = None  # token-bucket refill; None = no rate quota
    burst: int | None = None  # bucket size; None = max(1, ceil(rate_per_s))
    max_concurrent: int | None = None  # admitted and not yet answered
    service_class: ServiceClass = "interactive"
    max_batch_queue: int = 1000  # batch-class requests queued at once

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")
        if self.rate_per_s is not None and not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0 or None, got {self.rate_per_s}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1 or None, got {self.burst}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 or None, got {self.max_concurrent}")
        if self.max_batch_queue < 0:
            raise ValueError(f"max_batch_queue must be >= 0, got {self.max_batch_queue}")


@dataclass(frozen=True)
class ModelInfo:
    """What the core needs to know of a model version: 0 = the model does not batch."""

    max_batch_size: int

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ValueError(f"max_batch_size must be >= 0, got {self.max_batch_size}")


@dataclass(frozen=True)
class InstanceSlot:
    """An inference instance as placement sees it: which models it holds, how many
    executions the control plane keeps in flight there. ``in_flight`` and
    ``busy_until_s`` seed an instance the core has not seen; for one it already tracks,
    its own count of dispatched, uncompleted batches wins. ``loading_until_s``: when the
    loads queued there (placement's predicted ready time of the last) end; a load
    occupies the instance, so nothing dispatched there starts before then."""

    instance_id: str
    instance_class: str
    models: frozenset[str]
    capacity: int = 1
    in_flight: int = 0
    busy_until_s: float = 0.0
    loading_until_s: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"instance {self.instance_id}: capacity must be >= 1, got {self.capacity}")


class Predictor(Protocol):
    """Latency predictions (profiler.predictor answers these): seconds at a conservative
    upper percentile, or None when nothing is known yet."""

    def exec_s(self, model: str, instance_class: str, rows: int, work: int) -> float | None: ...

    def load_s(self, model: str, instance_class: str) -> float | None: ...


@dataclass(frozen=True)
class SchedulerConfig:
    default_exec_s: float = 0.05  # stands in for an unknown execute time (never refuses)
    default_load_s: float = 5.0  # stands in for an unknown load time
    # How far (seconds of instance time per unit of weight) a tenant's virtual time may
    # run ahead of the least-served backlogged tenant on an instance and still compete
    # by deadline; past it, the tenant is over its share and waits.
    fair_slack_s: float = 0.005
    # How far below that floor a tenant returning from idle may start: a burst of about
    # this much instance time (per unit of weight) runs before the busy tenants' turn.
    idle_credit_s: float = 0.025
    # A batch-class execution holds an idle instance at most about this long, so an
    # interactive request arriving meanwhile waits at most this much.
    batch_class_max_exec_s: float = 0.05
    # Admission adds this percentile of the recent prediction errors (admitted requests'
    # completion minus the predicted one, ``admission.calibration``) to every
    # prediction; 0 turns the learned margin off.
    calibration_percentile: float = 99.0

    def __post_init__(self) -> None:
        if self.calibration_percentile > 100:
            raise ValueError(f"calibration_percentile must be <= 100, got {self.calibration_percentile}")
        for name in ("default_exec_s", "default_load_s", "fair_slack_s", "idle_credit_s",
                     "batch_class_max_exec_s", "calibration_percentile"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(frozen=True)
class Refuse:
    """Admission said no; answered at once."""

    request_id: str
    reason: RefuseReason
    message: str
    retry_after_s: float | None = None

    def error(self) -> InferplexError:
        """The error the caller gets: 429 for quota and a full batch queue, 503 otherwise."""
        cls = Unavailable if self.reason == "infeasible" else ResourceExhausted
        return cls(self.message, retry_after_s=self.retry_after_s)


@dataclass(frozen=True)
class Dispatch:
    """Run these requests as one batch (concatenated along the batch dimension, in this
    order) on this instance; ``predicted_s`` is its predicted execute time."""

    batch_id: str
    instance_id: str
    model: str
    request_ids: tuple[str, ...]
    rows: int
    predicted_s: float


@dataclass(frozen=True)
class Drop:
    """A queued request that can no longer meet its deadline; it never runs."""

    request_id: str
    message: str
    late_by_s: float = field(default=0.0)

    def error(self) -> InferplexError:
        return DeadlineExceeded(self.message)


Decision = Dispatch | Drop
