"""FastAPI dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from controlplane.redact import CALLER
from controlplane.services import Services
from kserve.errors import PermissionDenied
from tenants.auth import Principal
from tenants.keys import one_authorization


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

# declares the scheme in OpenAPI only; the header itself is read below, every copy of it
_BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ipx_...`")


def get_authorization(request: Request, _: Annotated[object, Depends(_BEARER)] = None) -> str | None:
    """The one ``Authorization`` header (two are refused: readers disagree on which counts)."""
    return one_authorization(request.headers.getlist("authorization"))


AuthorizationDep = Annotated[str | None, Depends(get_authorization)]


async def get_principal(services: ServicesDep, authorization: AuthorizationDep) -> Principal:
    principal = await services.tenants.authenticate(authorization)
    CALLER.set(principal)  # how this request's errors read (controlplane.redact)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    if principal.role != "admin":
        raise PermissionDenied("this operation needs an admin key")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
