"""One router per resource, combined here."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

# each module exposes ``router``; modules are added as they are written
_ROUTERS = [
    "controlplane.routes.tenants",
    "controlplane.routes.models",
    "controlplane.routes.admin",
    "controlplane.routes.registration",
    "controlplane.routes.metrics",
    "controlplane.routes.profile",
    "controlplane.routes.v2",
]


def include_routers(app: FastAPI) -> None:
    for name in _ROUTERS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        app.include_router(mod.router)
