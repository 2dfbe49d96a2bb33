"""One router per resource, combined here."""

from __future__ import annotations

from fastapi import FastAPI

from controlplane.routes import (
    admin,
    metrics,
    models,
    placement,
    profile,
    registration,
    tenants,
    v2,
)


def include_routers(app: FastAPI) -> None:
    for mod in (tenants, models, admin, placement, registration, metrics, profile, v2):
        app.include_router(mod.router)
