"""A model's stored latency profile: what the offline profiler measured, per instance class.

Stored as JSON with the model version in the state store and served by
``GET /v2/models/{m}/profile``. The predictor is seeded from it and can fold its
live observations back into one (``LatencyPredictor.snapshot``), which
``ModelProfile.merged`` overlays on the stored one for the API.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class LatencyStats(BaseModel):
    """p50 / p99 seconds over ``n`` measurements."""

    model_config = ConfigDict(frozen=True)

    p50_s: float = Field(ge=0.0, description="median seconds")
    p99_s: float = Field(ge=0.0, description="99th percentile seconds")
    n: int = Field(ge=0, description="how many measurements the percentiles are over")

    @field_validator("p50_s", "p99_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("latency must be a finite number of seconds")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> LatencyStats:
        if self.p99_s < self.p50_s:
            raise ValueError(f"p99_s ({self.p99_s}) is below p50_s ({self.p50_s})")
        return self

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencyStats:
        """Summarise raw samples (at least one)."""
        if not samples:
            raise ValueError("LatencyStats.of needs at least one sample")
        ordered = sorted(samples)
        return cls(p50_s=percentile(ordered, 50.0), p99_s=percentile(ordered, 99.0), n=len(ordered))


def request_elements(shapes: Iterable[Sequence[int]]) -> int:
    """The size measure predictions are keyed by: the request's input elements, summed
    over its inputs, each the product of its full shape (batch dimension included; a
    BYTES tensor counts its strings). Additive, so the requests merged into one batch
    sum to the batch's elements; every dynamic dimension moves it, so a sequence of 128
    tokens is 128 times one token where batch-keyed prediction saw no difference."""
    total = 0
    for shape in shapes:
        n = 1
        for d in shape:
            if d < 0:
                raise ValueError(f"a request's shape cannot hold a negative dimension, got {list(shape)}")
            n *= int(d)
        total += n
    return total


class SizePoint(BaseModel):
    """Execute seconds measured at one input size (see ``request_elements``)."""

    model_config = ConfigDict(frozen=True)

    elements: int = Field(ge=1, description="input elements of the execution, batch dimension included")
    batch: int | None = Field(None, ge=1, description="batch size it was measured at; "
                              "None for live traffic, whose batches mix")
    stats: LatencyStats = Field(description="execute seconds at that size")


class ClassProfile(BaseModel):
    """Everything measured for one model on one instance class."""

    load_time_cold_s: LatencyStats | None = Field(
        None, description="artifact store cold: fetch + load until ready")
    load_time_warm_s: LatencyStats | None = Field(
        None, description="artifact bytes already cached: fetch + load until ready")
    load_time_observed_s: LatencyStats | None = Field(
        None, description="loads the control plane saw in service (recent window)")
    exec: dict[int, LatencyStats] = Field(
        default_factory=dict, description="execute seconds per batch size, dynamic dims at 1")
    sizes: list[SizePoint] = Field(
        default_factory=list,
        description="execute seconds per input size (elements), sorted by elements; empty "
                    "in profiles stored before sizes were measured")
    memory_bytes: int | None = Field(None, ge=0, description="resident memory once loaded, if the instance reports it")
    observations: int = Field(0, ge=0, description="measurements behind this profile, offline and live")
    updated_at: float = Field(0.0, ge=0.0, description="epoch seconds of the last measurement")

    @field_validator("exec")
    @classmethod
    def _batches_positive(cls, v: dict[int, LatencyStats]) -> dict[int, LatencyStats]:
        bad = [b for b in v if b < 1]
        if bad:
            raise ValueError(f"batch sizes must be >= 1, got {bad}")
        return dict(sorted(v.items()))

    @field_validator("sizes")
    @classmethod
    def _sizes_sorted(cls, v: list[SizePoint]) -> list[SizePoint]:
        return sorted(v, key=lambda p: (p.elements, p.batch or 0))

    def merged(self, newer: ClassProfile) -> ClassProfile:
        """This profile with ``newer``'s measurements laid over it (per field, per batch)."""
        return ClassProfile(
            load_time_cold_s=newer.load_time_cold_s or self.load_time_cold_s,
            load_time_warm_s=newer.load_time_warm_s or self.load_time_warm_s,
            load_time_observed_s=newer.load_time_observed_s or self.load_time_observed_s,
            exec={**self.exec, **newer.exec},
            sizes=list({(p.elements, p.batch): p for p in [*self.sizes, *newer.sizes]}.values()),
            memory_bytes=newer.memory_bytes if newer.memory_bytes is not None else self.memory_bytes,
            observations=max(self.observations, newer.observations),
            updated_at=max(self.updated_at, newer.updated_at),
        )


class ModelProfile(BaseModel):
    """Per instance class (``"cpu"``, ``"h200"``, ...) → its ``ClassProfile``."""

    classes: dict[str, ClassProfile] = Field(default_factory=dict)

    def with_class(self, instance_class: str, profile: ClassProfile) -> ModelProfile:
        """A copy with ``instance_class`` replaced (e.g. after profiling on a new class)."""
        return ModelProfile(classes={**self.classes, instance_class: profile})

    def merged(self, newer: ModelProfile) -> ModelProfile:
        """The stored profile with live data overlaid; classes only in one side are kept."""
        out = dict(self.classes)
        for cls_name, cp in newer.classes.items():
            out[cls_name] = out[cls_name].merged(cp) if cls_name in out else cp
        return ModelProfile(classes=out)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) over sorted values."""
    n = len(ordered)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {pct}")
    if n == 1:
        return float(ordered[0])
    rank = (n - 1) * pct / 100.0
    lo = int(rank)
    if lo >= n - 1:
        return float(ordered[-1])
    frac = rank - lo
    return float(ordered[lo] + (ordered[lo + 1] - ordered[lo]) * frac)


def percentile_upper(ordered: Sequence[float], pct: float) -> float:
    """The upper closest rank (numpy's ``method="higher"``): never below the interpolated
    value, and the max for ``pct`` above ``100 * (n - 2) / (n - 1)``."""
    n = len(ordered)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {pct}")
    return float(ordered[min(n - 1, math.ceil((n - 1) * pct / 100.0 - 1e-12))])
