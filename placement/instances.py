"""Registered inference instances: records in the store, one driver each, health.

An instance is registered under ``/inferplex/instances/{id}`` by whoever knows it
exists: ``inferplex up`` for the workers it starts (kind ``embedded``), an admin
for an external server such as Triton (kind ``external``), and later a worker
itself with a lease (``lease`` given: the record vanishes when the worker stops
refreshing it). Every replica lists the prefix on a timer and keeps one driver
per record, so a registration made on one replica reaches the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from kserve.errors import InvalidArgument, NotFound
from kserve.restricted import InstanceCredential
from placement.driver import InstanceInfo
from placement.triton_driver import TritonDriver
from store import keys
from store.base import StateStore
from store.cache import PrefixCache

log = logging.getLogger(__name__)

INSTANCES_PREFIX = keys.INSTANCES
HEALTH_INTERVAL_S = 2.0


class InstanceRecord(BaseModel):
    """What the store holds about one instance."""

    instance_id: str
    http_url: str = Field(description="host:port of the v2 HTTP endpoint")
    grpc_url: str = Field(description="host:port of the v2 gRPC endpoint")
    memory_bytes: int = Field(gt=0, description="memory the control plane may fill with models")
    instance_class: str = "cpu"
    kind: Literal["embedded", "external"] = "external"
    metrics_url: str | None = Field(None, description="a Triton's Prometheus metrics URL: its GPU "
                                    "memory in use (nv_gpu_memory_used_bytes) measures models there")
    registered_at: float = 0.0

    def info(self) -> InstanceInfo:
        return InstanceInfo(self.instance_id, self.http_url, self.grpc_url, self.memory_bytes,
                            self.instance_class, self.metrics_url)


@dataclass(slots=True)
class Instance:
    record: InstanceRecord
    driver: TritonDriver
    healthy: bool = False
    # set when an instance (re)appears healthy; placement then rebuilds its state from what it serves
    needs_resync: bool = True
    # the tenant platforms it serves (placement/backends.py), probed when it (re)appears; None
    # until a probe answered
    platforms: frozenset[str] | None = None


def _check_metrics_url(value: str) -> str:
    value = value.strip()
    if not value.startswith(("http://", "https://")) or "/" not in value.split("://", 1)[1]:
        raise InvalidArgument(f"metrics_url {value!r} must be the full URL of a Prometheus endpoint, "
                              "e.g. http://127.0.0.1:8002/metrics")
    return value


def _check_hostport(value: str, what: str) -> str:
    value = value.strip().removeprefix("http://").removeprefix("grpc://").rstrip("/")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"{what} {value!r} must be host:port, e.g. 127.0.0.1:8001")
    return value


class InstanceRegistry:
    def __init__(self, store: StateStore, *, credential: InstanceCredential | None,
                 request_timeout_s: float) -> None:
        self.store = store
        # what every driver sends to its instance, and its bound on one request
        self.credential = credential
        self.request_timeout_s = request_timeout_s
        self._instances: dict[str, Instance] = {}
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        # a registration or lease expiry seen through the watch triggers a refresh at once,
        # so every replica follows within the watch lag, not the health interval
        self._changed = asyncio.Event()
        self._watch = PrefixCache(store, INSTANCES_PREFIX, on_change=lambda *_: self._changed.set())
        # instances the operator drains (``drain``), watched so every replica shows them
        self._drains = PrefixCache(store, keys.DRAINS)

    async def start(self) -> None:
        await self._watch.start()
        await self._drains.start()
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="instance-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._watch.close()
        await self._drains.close()
        for inst in list(self._instances.values()):
            await inst.driver.close()
        self._instances.clear()

    # ---- registration ----------------------------------------------------------------

    async def register(self, http_url: str, grpc_url: str, memory_bytes: int, *,
                       instance_class: str = "cpu", kind: Literal["embedded", "external"] = "external",
                       instance_id: str | None = None, lease: int | None = None,
                       metrics_url: str | None = None) -> InstanceRecord:
        http_url = _check_hostport(http_url, "http_url")
        grpc_url = _check_hostport(grpc_url, "grpc_url")
        if metrics_url is not None:
            metrics_url = _check_metrics_url(metrics_url)
        if memory_bytes <= 0:
            raise InvalidArgument(f"memory_bytes must be positive, got {memory_bytes}")
        # the id is stable for a URL so re-registering the same server updates it
        iid = instance_id or "ext-" + hashlib.sha256(grpc_url.encode()).hexdigest()[:10]
        rec = InstanceRecord(instance_id=iid, http_url=http_url, grpc_url=grpc_url,
                             memory_bytes=memory_bytes, instance_class=instance_class, kind=kind,
                             metrics_url=metrics_url, registered_at=time.time())
        await self.store.put(keys.instance(iid), rec.model_dump_json().encode(), lease=lease)
        await self.refresh()
        log.info("registered %s instance %s (http %s, grpc %s, %d bytes)", kind, iid, http_url,
                 grpc_url, memory_bytes)
        return rec

    async def deregister(self, instance_id: str) -> None:
        if not await self.store.delete(keys.instance(instance_id)):
            raise NotFound(f"no instance {instance_id!r} is registered; GET /admin/instances lists them")
        await self.store.delete(keys.drain(instance_id))
        await self.refresh()

    async def set_draining(self, instance_id: str, draining: bool) -> None:
        """Drain an instance (placement loads nothing new there and moves its models off) or
        put it back in service. Idempotent; shown by every replica once its watch catches up."""
        if instance_id not in self._instances:
            await self.refresh()
            if instance_id not in self._instances:
                raise NotFound(f"no instance {instance_id!r} is registered; GET /admin/instances lists them")
        key = keys.drain(instance_id)
        if draining:
            await self._drains.caught_up(await self.store.put(key, b'{"draining": true}'))
        elif await self.store.delete(key):
            with contextlib.suppress(TimeoutError):  # the write stands; only this cache is late
                await self._drains.wait_for(lambda c: key not in c, within_s=5.0)

    def draining(self, instance_id: str) -> bool:
        return keys.drain(instance_id) in self._drains

    # ---- reading ---------------------------------------------------------------------

    def list(self) -> list[Instance]:
        return sorted(self._instances.values(), key=lambda i: i.record.instance_id)

    def get(self, instance_id: str) -> Instance | None:
        return self._instances.get(instance_id)

    def driver(self, instance_id: str) -> TritonDriver:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise NotFound(f"no instance {instance_id!r} is registered")
        return inst.driver

    # ---- keeping in step with the store and the instances -------------------------------

    async def refresh(self) -> None:
        """Make the driver set match the store's records, then check health."""
        async with self._refresh_lock:
            kvs = await self.store.list_prefix(INSTANCES_PREFIX)
            wanted: dict[str, InstanceRecord] = {}
            for kv in kvs:
                try:
                    rec = InstanceRecord.model_validate_json(kv.value)
                except ValueError:
                    log.warning("ignoring unreadable instance record %s", kv.key)
                    continue
                wanted[rec.instance_id] = rec
            for iid in list(self._instances):
                cur = self._instances[iid]
                if iid not in wanted or wanted[iid].model_dump(exclude={"registered_at"}) != \
                        cur.record.model_dump(exclude={"registered_at"}):
                    del self._instances[iid]
                    await cur.driver.close()
            for iid, rec in wanted.items():
                if iid not in self._instances:
                    self._instances[iid] = Instance(rec, TritonDriver(
                        rec.info(), credential=self.credential,
                        timeout_s=self.request_timeout_s))
            await self.check_health()

    async def check_health(self) -> None:
        insts = list(self._instances.values())
        results = await asyncio.gather(*(i.driver.is_ready() for i in insts))
        for inst, ok in zip(insts, results, strict=True):
            if ok and not inst.healthy:
                inst.needs_resync = True
                # a server that comes back may be another build, with other backends
                inst.driver.forget_backends()
                inst.platforms = None
                log.info("instance %s is ready", inst.record.instance_id)
            elif not ok and inst.healthy:
                log.warning("instance %s stopped answering", inst.record.instance_id)
            inst.healthy = ok
        unprobed = [i for i in insts if i.healthy and i.platforms is None]
        probed = await asyncio.gather(*(i.driver.backends() for i in unprobed))
        for inst, backends in zip(unprobed, probed, strict=True):
            if backends is not None:
                inst.platforms = backends.platforms()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_INTERVAL_S):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.refresh()
            except Exception:  # the loop must outlive a store or network hiccup
                log.exception("instance refresh failed")
