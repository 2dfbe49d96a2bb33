"""The model catalog: every tenant's model versions, their files and status.

Records live at ``/inferplex/models/{tenant}/{model}/{version}`` in the state
store; bytes live in the artifact store under their SHA-256. Lookups on the
request path (``resolve``, ``by_qualified``, ``list``) read an index kept by a
watched PrefixCache, never the store. Another tenant's model is answered exactly
like a model that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Literal

from pydantic import BaseModel

from controlplane.artifacts import ArtifactStore, StagedUpload
from controlplane.redact import public_text
from controlplane.settings import Settings
from controlplane.validation import Platform, TensorSpec, ValidatedModel
from kserve.datatypes import v2_to_config_type
from kserve.errors import Conflict, InvalidArgument, NotFound
from store import keys
from store.base import KeyValue, OwnerGone, StateStore
from store.cache import PrefixCache
from tenants.naming import check_model_name, qualified_name, split_qualified

log = logging.getLogger(__name__)

Status = Literal["profiling", "ready", "failed", "loading"]

# model versions are int64 in the v2 protocol and Triton's repository
MAX_VERSION = 2**63 - 1

__all__ = ["ModelCatalog", "ModelRecord", "Status", "TensorSpec", "check_new_version", "unknown_model"]


BATCHING_NOTE = ("batched across requests by the inferplex control plane; "
                 "Triton's dynamic batcher is off for this model")


def check_new_version(name: str, version: int | None, slo_ms: float) -> None:
    """What ``add_version`` refuses before writing anything; the upload route calls it before
    the (slow) model probe, so a bad option is refused at once."""
    check_model_name(name)
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise InvalidArgument(f"version must be between 1 and {MAX_VERSION}, got {version}")
    if not math.isfinite(slo_ms) or slo_ms <= 0:
        raise InvalidArgument(f"slo_ms must be a finite number > 0, got {slo_ms}")


def unknown_model(name: str, version: int | str | None = None) -> NotFound:
    """Triton's wording, for unknown models and other tenants' models alike."""
    if version is None:
        return NotFound(f"Request for unknown model: '{name}' is not found")
    return NotFound(f"Request for unknown model: '{name}' version {version} is not found")


class ModelRecord(BaseModel):
    tenant: str
    name: str
    version: int
    qualified_name: str
    platform: Platform
    filename: str
    sha256: str
    size_bytes: int
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    slo_ms: float
    status: Status
    reason: str = ""
    created_at: float
    profile: dict[str, Any] | None = None
    progress: float | None = None
    """While ``profiling``: the fraction of the profile done (0..1), for `inferplex model upload`."""


class ModelCatalog:
    def __init__(self, store: StateStore, artifacts: ArtifactStore, settings: Settings) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        # tenant -> model -> version -> record; maintained from the cache's change feed so
        # lookups cost a few dict reads however many tenants there are
        self._index: dict[str, dict[str, dict[int, ModelRecord]]] = {}
        self._cache = PrefixCache(store, keys.MODELS, decode=ModelRecord.model_validate_json,
                                  on_change=self._on_change)
        # serialises "record + bytes" against "last reference gone -> delete bytes" in this
        # process, so an upload of bytes being deleted cannot lose them
        self._bytes_lock = asyncio.Lock()

    async def start(self) -> None:
        removed = await asyncio.to_thread(self.artifacts.clean_tmp)
        if removed:
            log.info("removed %d stale partial uploads", removed)
        await self._cache.start()

    async def close(self) -> None:
        await self._cache.close()

    def _on_change(self, key: str, value: ModelRecord | None, _revision: int) -> None:
        _, tenant, name, version = keys.segments(key)
        models = self._index.setdefault(tenant, {})
        versions = models.setdefault(name, {})
        if value is None:
            versions.pop(int(version), None)
        else:
            versions[value.version] = value
        if not versions:
            del models[name]
        if not models:
            del self._index[tenant]

    # ------------------------------------------------------------------ request path (no I/O)

    def resolve(self, tenant: str | None, name: str, version: int | str | None = None) -> ModelRecord:
        """The tenant's model version (latest that has not failed, when version is None)."""
        if version == "":
            version = None
        versions = self._index.get(tenant, {}).get(name) if tenant is not None else None
        if not versions:
            raise unknown_model(name, version)
        if version is None:
            return _latest(versions)
        try:
            wanted = int(version)
        except (TypeError, ValueError):
            raise unknown_model(name, version) from None
        record = versions.get(wanted)
        if record is None:
            raise unknown_model(name, version)
        return record

    def by_qualified(self, qualified: str, version: int | str | None = None) -> ModelRecord | None:
        try:
            tenant, name = split_qualified(qualified)
            return self.resolve(tenant, name, version)
        except (ValueError, NotFound):
            return None

    def list(self, tenant: str) -> list[ModelRecord]:
        """Every version of every model of the tenant, by name then version."""
        models = self._index.get(tenant, {})
        return [models[name][v] for name in sorted(models) for v in sorted(models[name])]

    def versions(self, tenant: str, name: str) -> list[ModelRecord]:
        """Every version of one model, oldest first; NotFound (as for any unknown model) if none."""
        versions = self._index.get(tenant, {}).get(name)
        if not versions:
            raise unknown_model(name)
        return [versions[v] for v in sorted(versions)]

    def triton_config(self, record: ModelRecord) -> dict[str, Any]:
        """Triton's model config (JSON form) for the instances; named by the qualified name."""

        def io(specs: list[TensorSpec]) -> list[dict[str, Any]]:
            return [{"name": s.name, "data_type": v2_to_config_type(s.datatype), "dims": s.dims}
                    for s in specs]

        # no "dynamic_batching" section, on purpose: the control plane batches across
        # requests itself, so Triton's own batcher stays off (the parameter says so to whoever
        # reads the config on the instance)
        return {"name": record.qualified_name, "platform": record.platform,
                "max_batch_size": record.max_batch_size,
                "input": io(record.inputs), "output": io(record.outputs),
                "parameters": {"inferplex_batching": {"string_value": BATCHING_NOTE}}}

    def files(self, record: ModelRecord) -> dict[str, bytes]:
        """The repository API's files, keyed ``<version>/<filename>`` (the driver adds ``file:``)."""
        return {f"{record.version}/{record.filename}": self.artifacts.read(record.sha256)}

    # ------------------------------------------------------------------ writes

    async def add_version(self, tenant: str, tenant_created: int, name: str, version: int | None,
                          staged: StagedUpload, model: ValidatedModel, slo_ms: float) -> ModelRecord:
        """Record a validated upload and move its bytes to their content address.
        ``version`` None means the next one. ``tenant_created`` is the tenant record's identity
        read when the upload began (``TenantService.tenant_created``): the version is created
        only if that very record still exists, in the same transaction, so an upload that
        outlives its tenant (or the tenant's namesake successor) stores nothing. Nothing stays
        behind on failure."""
        check_new_version(name, version, slo_ms)
        async with self._bytes_lock:
            for _ in range(20):  # racing uploads without a version take the next free one
                v = version if version is not None else await self._next_version(tenant, name)
                record = ModelRecord(
                    tenant=tenant, name=name, version=v, qualified_name=qualified_name(tenant, name),
                    platform=model.platform, filename=model.filename, sha256=staged.sha256,
                    size_bytes=staged.size_bytes, max_batch_size=model.max_batch_size,
                    inputs=model.inputs, outputs=model.outputs, slo_ms=slo_ms, status="profiling",
                    created_at=time.time(),
                )
                key = keys.model_version(tenant, name, v)
                try:
                    rev = await self.store.create_under(key, record.model_dump_json().encode(),
                                                        owner=keys.tenant(tenant), owner_created=tenant_created)
                except OwnerGone:
                    raise NotFound(f"tenant {tenant!r} was deleted while the model was uploading; "
                                   "nothing was stored") from None
                if rev is not None:
                    break
                if version is not None:
                    raise Conflict(f"model '{name}' version {version} already exists: upload another "
                                   "version (or none for the next), or delete this one first")
            else:
                raise Conflict(f"too many concurrent uploads of model '{name}'; try again")
            try:
                await asyncio.to_thread(self.artifacts.commit, staged)
            except BaseException:
                await self.store.delete(key)
                raise
        await self._cache.caught_up(rev)
        log.info("model %s v%d of tenant %s stored (%s, %d bytes)", name, v, tenant,
                 staged.sha256[:12], staged.size_bytes)
        return record

    async def stored_model_names(self, tenant: str) -> list[str]:
        """Names of the tenant's models in the store (not the cache: a version created a
        moment ago counts), sorted."""
        prefix = keys.models_of(tenant)
        return sorted({kv.key.removeprefix(prefix).partition("/")[0]
                       for kv in await self.store.list_prefix(prefix)})

    async def _next_version(self, tenant: str, name: str) -> int:
        # from the store, not the cache: a version created a moment ago must count
        prefix = keys.versions_of(tenant, name)
        versions = [int(kv.key.removeprefix(prefix)) for kv in await self.store.list_prefix(prefix)]
        return max(versions) + 1 if versions else 1

    async def set_status(self, record: ModelRecord, status: Status, reason: str = "",
                         profile: dict[str, Any] | None = None) -> ModelRecord | None:
        """CAS update of one version's status (profile kept unless given); None if the
        version was deleted meanwhile. The tenant reads ``reason``: nothing internal stays in
        it (the whole of it is logged here)."""
        public = public_text(reason, record.tenant)
        if public != reason:
            log.info("model %s v%d %s: %s", record.qualified_name, record.version, status, reason)
            reason = public

        def change(value: dict[str, Any]) -> dict[str, Any]:
            new = {**value, "status": status, "reason": reason}
            if profile is not None:
                new["profile"] = profile
            return new

        updated = await self.store.update_json(keys.model_version(record.tenant, record.name, record.version),
                                               change)
        if updated is None:
            log.info("status %s for deleted model %s v%d ignored", status, record.qualified_name, record.version)
            return None
        await self._cache.caught_up(updated[1])
        return ModelRecord.model_validate(updated[0])

    async def set_progress(self, record: ModelRecord, progress: float) -> None:
        """CAS update of a version's profiling progress; ignored once it left ``profiling``
        (a late write must not look like work still going on)."""

        def change(value: dict[str, Any]) -> dict[str, Any]:
            if value.get("status") != "profiling":
                return value
            return {**value, "progress": round(min(1.0, max(0.0, progress)), 4)}

        await self.store.update_json(keys.model_version(record.tenant, record.name, record.version), change)

    async def delete(self, tenant: str, name: str, version: int | None = None) -> list[ModelRecord]:
        """Delete one version or all of them (metadata, then bytes no record still uses).
        The caller unloads the model from every instance first."""
        one = None if version is None else keys.model_version(tenant, name, version)
        kvs = [kv for kv in await self.store.list_prefix(keys.versions_of(tenant, name))
               if one is None or kv.key == one]
        if not kvs:
            raise unknown_model(name, version)
        gone: list[KeyValue] = []
        deleted: list[ModelRecord] = []
        async with self._bytes_lock:
            for kv in kvs:
                if await self.store.delete(kv.key):
                    gone.append(kv)
                    deleted.append(ModelRecord.model_validate_json(kv.value))
            shas = {r.sha256 for r in deleted}
            if shas:
                # read raw: one unreadable record must not block every tenant's deletes
                still_used = {kv.json().get("sha256") for kv in await self.store.list_prefix(keys.MODELS)}
                for sha in shas - still_used:
                    await asyncio.to_thread(self.artifacts.delete, sha)
        await self._cache.caught_up_with_deletes(gone)
        log.info("deleted %d version(s) of model %s of tenant %s", len(deleted), name, tenant)
        return deleted


def _latest(versions: dict[int, ModelRecord]) -> ModelRecord:
    usable = [v for v, r in versions.items() if r.status != "failed"]
    return versions[max(usable or versions)]
