"""Prometheus scrape endpoint, for admin keys only: its series name every tenant and
model, and it is served on the same port tenants reach, so an open endpoint would let
any tenant list the others' models. Prometheus sends the key with
``authorization: {credentials: <admin key>}`` in the scrape config."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from controlplane.api_contract import ADMIN
from controlplane.deps import AdminDep, ServicesDep

router = APIRouter(tags=["operator: metrics"])


@router.get("/metrics", response_class=PlainTextResponse, responses=ADMIN,
            summary="Prometheus text: requests, latency histograms, errors, loads, evictions (admin key)")
async def metrics(services: ServicesDep, _: AdminDep) -> PlainTextResponse:
    text = services.metrics.render()
    if services.gateway.scheduled is not None:
        text += services.gateway.scheduled.render_decisions()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
