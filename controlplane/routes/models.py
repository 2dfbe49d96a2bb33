"""Tenant REST API for models: upload, list, describe, delete.

A tenant key acts on its own tenant; an admin key names the tenant with
``?tenant=``. Another tenant's model answers exactly like a missing one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from controlplane.api_contract import KEYED, errors
from controlplane.catalog import ModelRecord, check_new_version
from controlplane.deps import PrincipalDep, ServicesDep
from controlplane.gateway import UNKNOWN_MODEL_LABEL
from controlplane.upload import FILE_FIELD, receive_upload
from controlplane.validation import MAX_BATCH_SIZE_RULE, TensorSpec, declared_config, validate_model
from kserve.errors import InferplexError, InvalidArgument, PermissionDenied
from tenants.auth import Principal
from tenants.naming import check_model_name, is_model_name

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])

TenantQuery = Annotated[str | None, Query(description="Admin keys only: the tenant to act on.")]

_SPECS = TypeAdapter(list[TensorSpec])
_SPEC_HELP = 'a JSON list like [{"name": "INPUT0", "datatype": "FP32", "dims": [64]}]'
# every option an upload takes; anything else is refused, naming these
_OPTIONS = {"name", "version", "max_batch_size", "inputs", "outputs", "slo_ms", "config", "tenant"}
# what a config declares, so it is given one way: the config, or these options
_CONFIG_OPTIONS = ("inputs", "outputs", "max_batch_size")
DEFAULT_SLO_MS = 100.0


class ModelList(BaseModel):
    models: list[ModelRecord]


class ModelDetail(BaseModel):
    name: str
    versions: list[ModelRecord] = Field(description="Every version, oldest first, with status and profile.")


class DeletedModel(BaseModel):
    name: str
    versions: list[int]


# the instance-level name is internal: tenants know their models by their own names
_INTERNAL = {"qualified_name"}
# what a tenant is shown of a version: the record less the internal fields (the spec, too,
# documents only what is sent); the handlers return records, FastAPI fits them to these
ModelVersion: type[BaseModel] = create_model(
    "ModelVersion", __doc__="One version of a model, as its tenant sees it.",
    **{n: (f.annotation, f) for n, f in ModelRecord.model_fields.items() if n not in _INTERNAL})


class ModelListView(BaseModel):
    models: list[ModelVersion]  # type: ignore[valid-type]


class ModelDetailView(BaseModel):
    name: str
    versions: list[ModelVersion] = Field(  # type: ignore[valid-type]
        description="Every version, oldest first, with status and profile.")


def scope(principal: Principal, tenant: str | None) -> str:
    """The tenant a request acts on."""
    if principal.role == "admin":
        if not tenant:
            raise InvalidArgument("admin keys act on one tenant's models: add ?tenant=<tenant>")
        return tenant
    assert principal.tenant is not None
    if tenant and tenant != principal.tenant:
        raise PermissionDenied("a tenant key acts only on its own tenant's models: leave out ?tenant=")
    return principal.tenant


def _check_options(items: Iterable[tuple[str, str]], where: str) -> None:
    """Refuse an option the upload does not take (it would be dropped silently), or one given
    twice (which one was meant is a guess)."""
    seen: set[str] = set()
    for key, _ in items:
        if key not in _OPTIONS:
            raise InvalidArgument(f"unknown upload option {key!r} ({where}): the options are "
                                  f"{', '.join(sorted(_OPTIONS))}")
        if key in seen:
            raise InvalidArgument(f"{where} {key!r} is given twice: send it once")
        seen.add(key)


def _int(options: dict[str, str], key: str) -> int | None:
    raw = options.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{key} must be an integer, got {raw!r}") from None


def _specs(options: dict[str, str], key: str) -> list[TensorSpec] | None:
    raw = options.get(key)
    if raw is None or raw == "":
        return None
    try:
        return _SPECS.validate_python(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{key} is not valid JSON ({exc}): send {_SPEC_HELP}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidArgument(f"{key}: {problems}; send {_SPEC_HELP}") from None


def _metric_label(name: str | None) -> str:
    """A refused upload's name is unchecked and unbounded (each one a series kept forever)."""
    return name if name and is_model_name(name) else UNKNOWN_MODEL_LABEL


def _slo(options: dict[str, str]) -> float:
    raw = options.get("slo_ms")
    if raw is None or raw == "":
        return DEFAULT_SLO_MS
    try:
        slo = float(raw)
    except ValueError:
        slo = math.nan
    # nan/inf parse as floats but cannot be stored as JSON numbers (the record would be unreadable)
    if not math.isfinite(slo):
        raise InvalidArgument(f"slo_ms must be a number of milliseconds, got {raw!r}")
    return slo


_CONFIG_HELP = (
    "A Triton model config for the file: config.pbtxt text or its JSON form (as Triton's repository load "
    "takes it), with name, platform/backend, max_batch_size, input and output (each: name, data_type such "
    "as TYPE_FP32, dims; dims leave out the batch dimension when max_batch_size > 0). Instead of inputs, "
    "outputs and max_batch_size; checked against the file, other fields refused. A max_batch_size it "
    "leaves out follows the default rule."
)

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The model file (ONNX or TorchScript; the format is read from the content). "
        "Either multipart/form-data with the file in `file` and the options as form fields, or the raw "
        "bytes with the options as query parameters.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": [FILE_FIELD, "name"], "properties": {
                FILE_FIELD: {"type": "string", "format": "binary"},
                "name": {"type": "string"}, "version": {"type": "integer"},
                "max_batch_size": {"type": "integer", "description": MAX_BATCH_SIZE_RULE},
                "slo_ms": {"type": "number"},
                "inputs": {"type": "string", "description": _SPEC_HELP},
                "outputs": {"type": "string", "description": _SPEC_HELP},
                "config": {"type": "string", "description": _CONFIG_HELP},
            }}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {"name": "name", "in": "query", "schema": {"type": "string"},
         "description": "Model name (required, here, as a form field or as the config's name)."},
        {"name": "version", "in": "query", "schema": {"type": "integer"},
         "description": "Version number; default: the next one."},
        {"name": "max_batch_size", "in": "query", "schema": {"type": "integer"},
         "description": f"Largest batch. {MAX_BATCH_SIZE_RULE}"},
        {"name": "inputs", "in": "query", "schema": {"type": "string"},
         "description": f"{_SPEC_HELP}; inferred from ONNX files, required for TorchScript."},
        {"name": "outputs", "in": "query", "schema": {"type": "string"},
         "description": f"{_SPEC_HELP}; inferred from ONNX files, required for TorchScript."},
        {"name": "config", "in": "query", "schema": {"type": "string"}, "description": _CONFIG_HELP},
        {"name": "slo_ms", "in": "query", "schema": {"type": "number"},
         "description": f"Latency target in ms (default {DEFAULT_SLO_MS:g})."},
        {"name": "tenant", "in": "query", "schema": {"type": "string"},
         "description": "Admin keys only: the tenant to upload for."},
    ],
}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelVersion,
             responses=errors(400, *KEYED, 404, 409, 413),
             summary="Upload a model version (ONNX or TorchScript), validated before it is accepted",
             openapi_extra=_UPLOAD_DOC)
async def upload_model(request: Request, services: ServicesDep, principal: PrincipalDep) -> ModelRecord:
    query = dict(request.query_params)
    # all of this before a byte of the body is read: a mistake in the URL costs no upload
    _check_options(request.query_params.multi_items(), "query parameter")
    tenant = scope(principal, query.get("tenant"))
    # which tenant record this upload is for: one deleted (or re-created) meanwhile gets nothing
    tenant_created = await services.tenants.tenant_created(tenant)
    if query.get("name"):
        check_model_name(query["name"])  # before reading a byte of the body
    try:
        received = await receive_upload(request, services.artifacts, services.settings.max_upload_bytes)
    except InferplexError:
        services.metrics.error(tenant, _metric_label(query.get("name")), "upload_refused")
        raise
    options = {**query, **received.fields}
    name = options.get("name", "")
    try:
        _check_options(received.fields.items(), "form field")
        if "tenant" in received.fields:
            raise InvalidArgument("tenant is a query parameter (?tenant=<tenant>, admin keys only), "
                                  "not a form field")
        both = sorted(k for k in received.fields.keys() & query.keys() if received.fields[k] != query[k])
        if both:
            raise InvalidArgument(f"{', '.join(both)} given both as a query parameter and as a form field, "
                                  "with different values: send each option once")
        config = declared_config(options["config"]) if options.get("config") else None
        if config is not None:
            clash = [k for k in _CONFIG_OPTIONS if options.get(k)]
            if clash:
                raise InvalidArgument(f"give the model's I/O once: either config or {', '.join(clash)}, "
                                      "not both")
            if config.name and name and config.name != name:
                raise InvalidArgument(f"the config names the model {config.name!r} but name={name!r}: make "
                                      "them the same, or leave the config's name out")
            name = name or config.name
        if not name:
            raise InvalidArgument("missing model name: send name=<model> (query parameter or form field)")
        version, slo_ms = _int(options, "version"), _slo(options)
        check_new_version(name, version, slo_ms)  # before the model probe, which takes seconds
        if config is not None:
            model = await validate_model(
                received.staged.path, inputs=config.inputs, outputs=config.outputs,
                max_batch_size=config.max_batch_size, name=name, platform=config.platform,
            )
        else:
            model = await validate_model(
                received.staged.path, inputs=_specs(options, "inputs"), outputs=_specs(options, "outputs"),
                max_batch_size=_int(options, "max_batch_size"), name=name,
            )
        record = await services.catalog.add_version(tenant, tenant_created, name, version, received.staged,
                                                     model, slo_ms)
    except InferplexError as exc:
        services.metrics.error(tenant, _metric_label(name), "upload_refused")
        log.info("upload of %r for tenant %s refused: %s", name, tenant, exc.message)
        raise
    finally:
        services.artifacts.discard(received.staged)  # a no-op once the bytes were accepted
    services.placement.model_uploaded(record)
    return record


@router.get("", response_model=ModelListView, responses=errors(400, *KEYED),
            summary="List the tenant's models (every version)")
async def list_models(services: ServicesDep, principal: PrincipalDep, tenant: TenantQuery = None) -> ModelList:
    return ModelList(models=services.catalog.list(scope(principal, tenant)))


@router.get("/{name}", response_model=ModelDetailView, responses=errors(400, *KEYED, 404), summary="Describe a model: versions, status, reason, profile")
async def describe_model(name: str, services: ServicesDep, principal: PrincipalDep,
                         tenant: TenantQuery = None) -> ModelDetail:
    return ModelDetail(name=name, versions=services.catalog.versions(scope(principal, tenant), name))


@router.delete("/{name}", response_model=DeletedModel, responses=errors(400, *KEYED, 404, 409),
               summary="Delete a model (every version); it is unloaded from every instance first")
async def delete_model(name: str, services: ServicesDep, principal: PrincipalDep,
                       tenant: TenantQuery = None) -> DeletedModel:
    owner = scope(principal, tenant)
    records = services.catalog.versions(owner, name)
    await services.placement.unload_everywhere(records[0].qualified_name)
    deleted = await services.catalog.delete(owner, name)
    return DeletedModel(name=name, versions=[r.version for r in deleted])


@router.delete("/{name}/versions/{version}", response_model=DeletedModel,
               responses=errors(400, *KEYED, 404, 409),
               summary="Delete one version of a model; the model is unloaded from every instance first")
async def delete_model_version(name: str, version: int, services: ServicesDep, principal: PrincipalDep,
                               tenant: TenantQuery = None) -> DeletedModel:
    owner = scope(principal, tenant)
    record = services.catalog.resolve(owner, name, version)
    await services.placement.unload_everywhere(record.qualified_name)
    deleted = await services.catalog.delete(owner, name, version)
    return DeletedModel(name=name, versions=[r.version for r in deleted])
