"""Operator API for inference instances: list (with memory and loaded models), register, drain,
remove."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from controlplane.api_contract import ADMIN, KEYED, StrictBody, errors
from controlplane.deps import AdminDep, ServicesDep

router = APIRouter(prefix="/admin/instances", tags=["admin: instances"])


class LoadedModel(BaseModel):
    name: str = Field(description="instance-level (tenant-qualified) name")
    version: str
    bytes: int = Field(description="memory the control plane accounts for it")


class InstanceView(BaseModel):
    instance_id: str
    kind: Literal["embedded", "external"]
    http_url: str
    grpc_url: str
    instance_class: str
    healthy: bool
    memory_bytes: int = Field(description="budget the control plane may fill")
    used_bytes: int = Field(description="sum of loaded models' accounted memory")
    reported_used_bytes: int | None = Field(
        None, description="what the instance itself reports, if it can (inferplex worker does)")
    models: list[LoadedModel]
    platforms: list[str] | None = Field(
        None, description="model platforms it can serve (probed from its backends; null until known)")
    draining: bool = Field(False, description="being taken out of service: nothing new is loaded "
                           "there and its models move to other instances")


class RegisterInstance(StrictBody):
    http_url: str = Field(description="host:port of the instance's v2 HTTP endpoint")
    grpc_url: str = Field(description="host:port of the instance's v2 gRPC endpoint")
    memory_bytes: int = Field(gt=0, description="memory inferplex may fill with models on it")
    instance_class: str = Field("cpu", description="hardware class; profiles are kept per class")
    metrics_url: str | None = Field(
        None, description="a Triton's Prometheus endpoint (its --metrics-port), e.g. "
        "http://10.0.0.5:8002/metrics: with it, a model's GPU memory is measured around its load")


async def _views(services: ServicesDep) -> list[InstanceView]:
    placements = services.placement.placements()
    views = []
    for inst in services.instances.list():
        iid = inst.record.instance_id
        held = placements.get(iid, {})
        reported = await inst.driver.memory_used() if inst.healthy else None
        views.append(InstanceView(
            instance_id=iid, kind=inst.record.kind, http_url=inst.record.http_url,
            grpc_url=inst.record.grpc_url, instance_class=inst.record.instance_class,
            healthy=inst.healthy, memory_bytes=inst.record.memory_bytes,
            used_bytes=services.placement.used_bytes(iid), reported_used_bytes=reported,
            models=[LoadedModel(name=q, version=p.version, bytes=p.bytes) for q, p in sorted(held.items())],
            platforms=sorted(inst.platforms) if inst.platforms is not None else None,
            draining=services.instances.draining(iid),
        ))
    return views


@router.get("", responses=ADMIN, summary="Every instance: budget, used memory, health and loaded models")
async def list_instances(_: AdminDep, services: ServicesDep) -> list[InstanceView]:
    return await _views(services)


@router.post("", status_code=201, responses=errors(400, *KEYED, 413), summary="Register an external instance (e.g. a Triton server) by URL")
async def register_instance(body: RegisterInstance, _: AdminDep, services: ServicesDep) -> InstanceView:
    rec = await services.instances.register(body.http_url, body.grpc_url, body.memory_bytes,
                                            instance_class=body.instance_class,
                                            metrics_url=body.metrics_url)
    await services.placement.resync()
    return next(v for v in await _views(services) if v.instance_id == rec.instance_id)


@router.delete("/{instance_id}", status_code=204, responses=errors(*KEYED, 404), summary="Forget an instance (its models stay loaded there)")
async def delete_instance(instance_id: str, _: AdminDep, services: ServicesDep) -> None:
    await services.instances.deregister(instance_id)
    await services.placement.resync()


async def _set_draining(instance_id: str, draining: bool, services: ServicesDep) -> InstanceView:
    await services.instances.set_draining(instance_id, draining)
    return next(v for v in await _views(services) if v.instance_id == instance_id)


@router.post("/{instance_id}/drain", responses=errors(*KEYED, 404),
             summary="Drain an instance: load nothing new there and move its models to other "
                     "instances (each with demand stays until a copy elsewhere is ready)")
async def drain_instance(instance_id: str, _: AdminDep, services: ServicesDep) -> InstanceView:
    return await _set_draining(instance_id, True, services)


@router.delete("/{instance_id}/drain", responses=errors(*KEYED, 404),
               summary="Put a drained instance back in service")
async def resume_instance(instance_id: str, _: AdminDep, services: ServicesDep) -> InstanceView:
    return await _set_draining(instance_id, False, services)
