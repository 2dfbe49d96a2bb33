"""Latency profiles: what the profiler measured and the predictor now believes.

``GET /v2/models/{m}/profile`` answers per instance class: load time (cold,
warm, observed in service), execute time per batch size (p50/p99), memory,
observations and last update: the stored offline profile with the predictor's
live window laid over it. Tenant keys see their own models (another tenant's
answers like an unknown model); admin keys name the tenant with ``?tenant=``.
``GET /admin/predictions`` is the accuracy log: dispatch-time predictions next
to the execute times then observed (``bench/prediction_accuracy.py`` reads it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from controlplane.api_contract import KEYED, errors
from controlplane.catalog import Status
from controlplane.deps import AdminDep, PrincipalDep, ServicesDep
from controlplane.routes.models import TenantQuery, scope
from profiler.profile import ClassProfile, ModelProfile

router = APIRouter(tags=["profiles"])


class ProfileView(BaseModel):
    name: str
    version: int
    status: Status
    progress: float | None = Field(None, description="while profiling: the fraction done (0..1)")
    reason: str = ""
    timing: str = Field("compute", description="what an execute time means: the instance's compute "
                        "time (statistics extension), or the round trip where it has none")
    classes: dict[str, ClassProfile] = Field(
        default_factory=dict, description="per instance class; seconds, p50/p99 over n measurements")


@router.get("/v2/models/{model}/profile", response_model=ProfileView, responses=errors(400, *KEYED, 404),
            summary="Load and execute latency per instance class (stored profile + live observations)")
async def model_profile(model: str, services: ServicesDep, principal: PrincipalDep,
                        tenant: TenantQuery = None,
                        version: Annotated[int | None, Query(description="default: the latest")] = None,
                        ) -> ProfileView:
    record = services.catalog.resolve(scope(principal, tenant), model, version)
    stored = ModelProfile.model_validate(record.profile) if record.profile else ModelProfile()
    merged = stored.merged(services.predictor.snapshot(record.qualified_name))
    return ProfileView(name=record.name, version=record.version, status=record.status,
                       progress=record.progress, reason=record.reason, classes=merged.classes)


class PredictionRow(BaseModel):
    model: str = Field(description="instance-level (tenant-qualified) name")
    instance_class: str
    batch: int
    predicted_p50_s: float
    predicted_p99_s: float
    observed_s: float
    basis: str
    at: float


class PredictionLog(BaseModel):
    exact: int = Field(description="executions observed exactly (one between two statistics reads)")
    merged: int = Field(description="executions only seen inside a mean (several between two reads)")
    samples: list[PredictionRow]


@router.get("/admin/predictions", response_model=PredictionLog, responses=errors(400, *KEYED),
            summary="Dispatch-time predictions next to the execute times observed (this replica)")
async def predictions(services: ServicesDep, _: AdminDep,
                      since: Annotated[float, Query(description="epoch seconds")] = 0.0) -> PredictionLog:
    feed = services.placement.feed
    rows = [PredictionRow(model=s.model, instance_class=s.instance_class, batch=s.batch,
                          predicted_p50_s=s.predicted_p50_s, predicted_p99_s=s.predicted_p99_s,
                          observed_s=s.observed_s, basis=s.basis, at=s.at)
            for s in list(feed.samples) if s.at >= since]
    return PredictionLog(exact=feed.exact, merged=feed.merged, samples=rows)
