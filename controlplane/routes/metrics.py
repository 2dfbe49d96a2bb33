"""Prometheus scrape endpoint. Open, like most exporters: it carries counts and
latencies per tenant and model name, no keys or tensors; put it behind the
network boundary operators already use for their Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from controlplane.deps import ServicesDep

router = APIRouter(tags=["operator: metrics"])


@router.get("/metrics", response_class=PlainTextResponse,
            summary="Prometheus text: requests, latency histograms, errors, loads, evictions")
async def metrics(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")
