"""Profiling a new model version (issue 7), as placement's shell does it (issue 12).

After an upload the version is profiled in the background on an idle instance, else where
the planner makes room for it (evicting as for a cold model), then marked ready (or failed
with what to fix); a model placed on a class it was never profiled on is profiled there.
``PlacementService`` (``placement/service.py``) mixes this in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from typing import Any

from kserve.errors import InferplexError, Internal, InvalidArgument, ResourceExhausted
from placement.cluster import ModelCosts, ModelSpec
from placement.cluster_view import DEFAULT_EXEC_S, DEFAULT_LOAD_S
from placement.ports import ModelRecord
from placement.profiling_site import choose_profiling_instance
from profiler.profile import ModelProfile

log = logging.getLogger("placement.service")

# instance-level names that no tenant can produce (tenant names start with a letter)
PROFILE_NAME_PREFIX = "_profile__"
# how the driver and the worker introduce an execution's failure (placement.triton_driver,
# worker.service): "instance X failed while running M: inference failed for model 'M' (platform): "
_RUN_FAILED_PREFIX = re.compile(r"^(?:instance \S+ failed while running \S+: )?"
                                r"(?:inference failed for model '[^']*' \([\w-]+\): )?")
_NEEDS = re.compile(r"needs (\d+) bytes")


def _needed_bytes(message: str) -> int | None:
    """The bytes an instance said a load needs ("... needs N bytes, M free ..."), if it said."""
    m = _NEEDS.search(message)
    return int(m.group(1)) if m else None


class ProfilingMixin:
    """The profiling half of ``PlacementService`` (its attributes are the service's)."""

    # set by PlacementService
    settings: Any
    catalog: Any
    predictor: Any
    instances: Any
    planner: Any
    _profiling: set[tuple[str, str, str]]
    _background: set[asyncio.Task[Any]]
    _reserved: dict[str, int]
    _sizes: dict[str, int]
    _actual: dict[str, dict[str, Any]]

    def model_uploaded(self, record: ModelRecord) -> None:
        """Profile the new version in the background, then mark it ready (or failed)."""
        self._start_profiling(record, None)

    def _start_profiling(self, record: ModelRecord, instance_class: str | None) -> None:
        key = (record.qualified_name, str(record.version), instance_class or "")
        if key in self._profiling:
            return
        self._profiling.add(key)
        task = asyncio.create_task(self._profile(record, instance_class),
                                   name=f"profile-{record.qualified_name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _t: self._profiling.discard(key))

    def _profile_new_class(self, record: ModelRecord, instance_class: str) -> None:
        """A model placed on a class it was never profiled on gets a profile for that class."""
        if not self.settings.profile_on_upload or record.status == "profiling":
            return
        classes = (record.profile or {}).get("classes") or {}
        if instance_class not in classes:
            self._start_profiling(record, instance_class)

    async def _profile(self, record: ModelRecord, instance_class: str | None = None) -> None:
        """Profile on an idle instance (of ``instance_class``, or any for a new upload), else
        where the planner makes room (evicting, as for a cold model, never busy copies). An
        instance refusing it for room it lacks right now is not the model's fault: room is made
        with the size it measured and the profile runs again; a model larger than any instance's
        whole budget is failed."""
        first = instance_class is None
        if not self.settings.profile_on_upload:
            if first:
                await self.catalog.set_status(record, "ready")
            return
        size = self._model_bytes(record)
        plan = choose_profiling_instance(size, self._snapshot(), instance_class, record.platform)
        inst = None
        if plan.placed:
            if not plan.idle:
                log.warning("profiling %s on %s, which serves tenants' models: no instance is idle",
                            record.qualified_name, plan.instance_id)
            inst = self.instances.get(plan.instance_id or "")
            assert inst is not None
            self._reserve(inst.record.instance_id, size)
        for attempt in range(3):
            if inst is None:
                inst = await self._room_to_profile(record, size, instance_class)
            if inst is None:
                # no room to profile is not the model's fault: serve it, seed from live timings
                reason = plan.reason or "no instance has room to profile it now"
                log.warning("not profiling %s: %s", record.qualified_name, reason)
                if first:
                    await self.catalog.set_status(record, "ready", reason=f"not profiled: {reason}")
                return
            held = (inst.record.instance_id, size)  # reserved for the profile, released below
            try:
                profile = await self._run_profile(record, inst)
            except ResourceExhausted as exc:
                need = _needed_bytes(exc.message)
                if need is None or need > inst.record.memory_bytes or attempt == 2:
                    log.warning("profiling %s failed: %s", record.qualified_name, exc.message)
                    if first:
                        await self._profiling_failed(record, inst, PROFILE_NAME_PREFIX + record.qualified_name, exc)
                    return
                log.info("profiling %s: %s; making room for %d bytes", record.qualified_name,
                         exc.message, need)
                key = f"{record.qualified_name}@{record.version}"
                self._sizes[key] = max(need, self._sizes.get(key, 0))
                size = max(size, need)
                inst = None
                continue
            except (InvalidArgument, Internal) as exc:
                # the instance answered, refusing or failing the model itself: it cannot be served
                log.warning("profiling %s failed: %s", record.qualified_name, exc.message)
                if first:
                    await self._profiling_failed(record, inst, PROFILE_NAME_PREFIX + record.qualified_name, exc)
                return
            except Exception as exc:  # the instance went away or timed out, not the model: serve unprofiled
                log.exception("profiling %s did not finish", record.qualified_name)
                if first:
                    await self.catalog.set_status(record, "ready", reason=f"not profiled: {exc}")
                return
            finally:
                self._reserve(held[0], -held[1])
            break
        else:  # pragma: no cover - the loop returns or breaks
            return
        self.predictor.seed_from_profile(record.qualified_name, inst.record.instance_class, profile)
        # merge into the freshest record: another class may have been profiled meanwhile
        latest = self.catalog.by_qualified(record.qualified_name, str(record.version)) or record
        existing = ModelProfile.model_validate(latest.profile) if latest.profile else ModelProfile()
        stored = existing.with_class(inst.record.instance_class, profile).model_dump(mode="json")
        if await self.catalog.set_status(latest, "ready", profile=stored) is None:
            # deleted while profiling: a namesake uploaded later must not start from these timings
            self.predictor.forget(record.qualified_name)
            return
        log.info("profiled %s on %s", record.qualified_name, inst.record.instance_id)

    async def _run_profile(self, record: ModelRecord, inst: Any) -> Any:
        from profiler.offline import profile_model

        name = PROFILE_NAME_PREFIX + record.qualified_name
        config = dict(self.catalog.triton_config(record), name=name)

        async def progress(_stage: str, done: float) -> None:
            await self.catalog.set_progress(record, done)

        # compute timing: the basis the feed observes live executions on
        return await profile_model(
            inst.driver, name, config, lambda: asyncio.to_thread(self.catalog.files, record),
            loads=2, warmup=3, runs_per_batch=60, min_runs_per_batch=20, max_seconds=15.0,
            timing="compute", progress=progress, exec_timeout_s=self.settings.profile_exec_timeout_s,
        )

    def _reserve(self, instance_id: str, size: int) -> None:
        self._reserved[instance_id] = self._reserved.get(instance_id, 0) + size

    async def _room_to_profile(self, record: ModelRecord, size: int, instance_class: str | None) -> Any | None:
        """An instance (of ``instance_class``, one that serves the model's platform) where the
        planner makes ``size`` bytes of room for the profile, as for a cold model: its victims
        are unloaded and the room reserved (the caller releases it); None where nothing can go."""
        name = PROFILE_NAME_PREFIX + record.qualified_name
        snap = self.cluster()
        classes = {i.instance_class for i in snap.instances}
        if instance_class is not None:
            classes &= {instance_class}
        # what the profile holds while it runs; its own numbers are unknown yet
        costs = {cls: ModelCosts(size, DEFAULT_LOAD_S, {1: DEFAULT_EXEC_S}) for cls in classes}
        spec = ModelSpec(name, record.tenant, f"{record.tenant}/{record.name} (profiling)",
                         record.slo_ms / 1e3, costs, platform=record.platform)
        plan = self.planner.place(dataclasses.replace(snap, models={**snap.models, name: spec}, wanted=(name,)))
        load = next((a for a in plan.loads if a.model == name), None)
        inst = self.instances.get(load.instance_id) if load is not None else None
        if load is None or inst is None:
            return None
        # the room is claimed before the first await: a concurrent plan sees it taken
        self._reserve(load.instance_id, size)
        victims = self._take_victims(plan.unloads, load.instance_id)
        try:
            for v in victims:
                await self._apply_unload(v)
        except BaseException:
            self._reserve(load.instance_id, -size)
            raise
        return inst

    async def _profiling_failed(self, record: ModelRecord, inst: Any, name: str, exc: InferplexError) -> None:
        """Mark the version failed with what to fix, leaving no copy of it on any instance."""
        reason = exc.message
        if isinstance(exc, Internal):  # it loaded, then failed to run on its declared inputs
            # the runtime's last line says what clashed; the driver's and worker's prefixes don't
            detail = next((ln.strip() for ln in reversed(exc.message.splitlines()) if ln.strip()), "")
            detail = _RUN_FAILED_PREFIX.sub("", detail)
            reason = (f"the model failed when run on inputs of its declared shapes and datatypes "
                      f"({detail[-400:]}): declare the inputs and outputs (dims, datatypes, "
                      "max_batch_size) the model computes, and upload it again")
        with contextlib.suppress(InferplexError):  # profile_model unloads it; a failed unload must not stay
            await inst.driver.unload(name)
        for iid, models in list(self._actual.items()):
            placed = models.get(record.qualified_name)
            if placed is not None and placed.version == str(record.version):
                with contextlib.suppress(InferplexError):
                    await self.unload_from(iid, record.qualified_name)
        await self.catalog.set_status(record, "failed", reason=reason)
