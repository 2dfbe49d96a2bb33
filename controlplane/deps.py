"""FastAPI dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from controlplane.redact import CALLER
from controlplane.services import Services
from kserve.errors import PermissionDenied
from tenants.auth import Principal


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    principal = await services.tenants.authenticate(authorization)
    CALLER.set(principal)  # how this request's errors read (controlplane.redact)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    if principal.role != "admin":
        raise PermissionDenied("this operation needs an admin key")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
