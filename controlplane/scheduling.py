"""The gateway's side of the scheduler: every inference goes through admission and the
deadline-ordered queues (``admission.Scheduler`` in ``admission.SchedulingShell``) and is
run in the batch the core chose.

A request becomes a ``PendingRequest`` on arrival: its deadline is arrival + the model
version's SLO, or earlier when the client asks (Triton's ``timeout`` parameter in
microseconds, or the ``inferplex-deadline-ms`` header; a client may tighten its deadline,
never loosen it). A request that can be merged (``kserve.batching``) carries its rows and
merge key; one that cannot runs alone, forwarded as it came. When the core dispatches,
``run_batch`` sends one inference to the chosen instance, bounded by the batch's earliest
deadline, and splits the answer back to each caller.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tritonclient.grpc import service_pb2

from admission.model import (
    Dispatch,
    Drop,
    InstanceSlot,
    ModelInfo,
    PendingRequest,
    Refuse,
    SchedulerConfig,
    TenantPolicy,
)
from admission.overhead import DispatchOverhead
from admission.scheduler import Scheduler
from admission.shell import SchedulingShell
from controlplane.metrics import render_counter
from kserve import batching_grpc, batching_http, grpc_codec, http_codec
from kserve.batching import CallerRequest, caller_request
from kserve.errors import InferplexError, InvalidArgument, NotFound
from kserve.tensors import TIMEOUT_PARAMETER
from kserve.tensors import PendingRequest as PendingTensors
from modelfiles.config import ModelSpec, TensorSpec
from modelfiles.requests import check_headers
from placement.triton_driver import Unreachable
from profiler.profile import request_elements

if TYPE_CHECKING:
    from controlplane.catalog import ModelRecord
    from placement.instances import InstanceRegistry
    from placement.service import PlacementService
    from profiler.feed import Prediction
    from profiler.predictor import LatencyPredictor
    from tenants.service import SchedulingPolicy

DEADLINE_HEADER = "inferplex-deadline-ms"
# how long a batch-class execution (no deadline) may run on an instance
BATCH_CLASS_LIMIT_S = 10.0


def model_key(rec: ModelRecord) -> str:
    return f"{rec.qualified_name}@{rec.version}"


class _Predictions:
    """The core's Predictor over the profiler's: the model key carries the version. What
    the core calls execute time is how long a dispatch holds the instance's slot: the
    predicted compute plus the dispatch's own round trip (``DispatchOverhead``)."""

    def __init__(self, predictor: LatencyPredictor, overhead: DispatchOverhead) -> None:
        self.predictor = predictor
        self.overhead = overhead

    def exec_s(self, model: str, instance_class: str, rows: int, work: int) -> float | None:
        # work 0: the request's size is unknown (it could not be read): by batch size alone
        compute = self.predictor.exec_time(model.rpartition("@")[0], instance_class, max(rows, 1),
                                           elements=rows * work if work > 0 else None)
        return None if compute is None else compute + self.overhead.seconds(model)

    def load_s(self, model: str, instance_class: str) -> float | None:
        return self.predictor.load_time(model.rpartition("@")[0], instance_class)


@dataclass
class Call:
    """One caller's request as the shell carries it to ``run_batch``."""

    rec: ModelRecord
    transport: str  # "http" | "grpc"
    caller: CallerRequest | None  # None: not batchable, forwarded as it came
    deadline_s: float | None  # time.monotonic(); None: batch class (bounded by BATCH_CLASS_LIMIT_S)
    elements: int | None  # its input elements (the predictor's size measure), None if unknown
    http_body: bytes = b""
    http_headers: Mapping[str, str] | None = None
    grpc_request: service_pb2.ModelInferRequest | None = None


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class RecentRefusal:
    """One admission refusal or drop, as the console lists it."""

    at: float  # epoch seconds
    tenant: str
    model: str  # as the tenant names it
    reason: str  # quota | infeasible | queue_full | dropped
    message: str


class _Noted:
    """The core as the shell sees it: every refusal and drop is noted in ``recent`` (the
    newest ``maxlen``); the rest of the core is reached through unchanged."""

    def __init__(self, core: Scheduler, recent: deque[RecentRefusal]) -> None:
        self._core = core
        self._recent = recent
        self._queued: dict[str, tuple[str, str]] = {}  # request id -> (tenant, model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def admit(self, req: PendingRequest, now: float) -> Refuse | None:
        refusal = self._core.admit(req, now)
        if refusal is None:
            self._queued[req.id] = (req.tenant, req.display_name)
        else:
            self._recent.append(RecentRefusal(time.time(), req.tenant, req.display_name, refusal.reason,
                                              refusal.message))
        return refusal

    def schedule(self, now: float) -> list[Any]:
        decisions = self._core.schedule(now)
        for d in decisions:
            if isinstance(d, Drop):
                who = self._queued.pop(d.request_id, None)
                if who is not None:
                    self._recent.append(RecentRefusal(time.time(), *who, "dropped", d.message))
            else:
                for rid in d.request_ids:
                    self._queued.pop(rid, None)
        return decisions

    def cancel(self, request_id: str) -> bool:
        self._queued.pop(request_id, None)
        return self._core.cancel(request_id)


class ScheduledForwarding:
    def __init__(self, placement: PlacementService, instances: InstanceRegistry,
                 predictor: LatencyPredictor, policy_of: Callable[[str], SchedulingPolicy | None],
                 predict: Callable[[ModelRecord, Any, int | None, int | None], Prediction | None], *,
                 slots_per_instance: int = 1, config: SchedulerConfig | None = None) -> None:
        self.placement = placement
        self.instances = instances
        self.policy_of = policy_of
        self.predict = predict  # the gateway's: seeds the predictor from a stored profile first
        self._policies: dict[str, SchedulingPolicy] = {}
        self._specs: dict[str, ModelSpec] = {}  # by model key: what check_headers compares with
        self.slots_per_instance = slots_per_instance
        # an execute time nobody has measured yet (a model still profiling, a new size) counts
        # as nothing ahead of others: refusing on a guess would turn away work that fits
        self.overhead = DispatchOverhead()
        self.core = Scheduler(_Predictions(predictor, self.overhead),
                              config or SchedulerConfig(default_exec_s=0.0))
        # the newest admission refusals and drops, for the console's decisions view
        self.refusals: deque[RecentRefusal] = deque(maxlen=500)
        self.shell = SchedulingShell(_Noted(self.core, self.refusals), self._run_batch)  # type: ignore[arg-type]
        self._models: set[str] = set()
        self._slots: list[InstanceSlot] | None = None  # what the core was last given
        self._seeded: set[tuple[str, str]] = set()  # (model key, instance class)

    async def close(self) -> None:
        await self.shell.close()

    def render_decisions(self) -> str:
        """Every scheduler decision counted per tenant, model and reason, for /metrics."""
        return render_counter(
            "inferplex_scheduler_decisions_total",
            "Scheduler decisions by tenant, model (instance-level name@version) and reason: admitted, "
            "quota, infeasible, queue_full, dispatched, dropped, cancelled, completed, late, failed.",
            {(("tenant", t), ("model", m), ("reason", r)): n for (t, m, r), n in self.core.decisions().items()}
        ) + self._render_margin()

    def _render_margin(self) -> str:
        learned, external = self.core.margin_parts(time.monotonic())
        name = "inferplex_admission_margin_seconds"
        return (f"# HELP {name} What admission adds to every prediction now: learned (a high percentile of "
                "admitted requests' recent lateness against plan) and shell (the event loop's measured delay).\n"
                f"# TYPE {name} gauge\n"
                f'{name}{{part="learned"}} {learned:.6f}\n{name}{{part="shell"}} {external:.6f}\n'
                "# HELP inferplex_dispatch_overhead_seconds A dispatch's round trip beyond the compute its "
                "instance reported, at the percentile the scheduler adds to execute times (all models).\n"
                "# TYPE inferplex_dispatch_overhead_seconds gauge\n"
                f"inferplex_dispatch_overhead_seconds {self.overhead.seconds(''):.6f}\n")

    # ---- arrival ------------------------------------------------------------------------

    def refuse_over_quota(self, rec: ModelRecord, tenant: str) -> None:
        """Raises the quota's 429 for a tenant over it, before its request is parsed or its
        model loaded: under a flood, the refusals must cost the least they can."""
        self._apply_policy(tenant)
        refusal = self.core.quota_refusal(tenant, model_key(rec), "", time.monotonic())
        if refusal is not None:
            self.refusals.append(RecentRefusal(time.time(), tenant, rec.name, refusal.reason, refusal.message))
            raise refusal.error()

    def cold_deadline(self, rec: ModelRecord, tenant: str, arrival: float) -> float | None:
        """The deadline a request waiting for a cold load must meet: arrival + SLO (None for a
        batch-class tenant: it has none)."""
        policy = self.policy_of(tenant)
        if policy is not None and policy.service_class == "batch":
            return None
        return arrival + rec.slo_ms / 1000

    def _pending(self, rec: ModelRecord, driver: Any, tenant: str, arrival: float,
                 client_timeout_s: float | None, caller: CallerRequest | None,
                 loading_s: float) -> PendingRequest:
        key = model_key(rec)
        if key not in self._models:
            self.core.set_model(key, ModelInfo(max(rec.max_batch_size, 0)))
            self._models.add(key)
        self._refresh_slots()
        policy = self._apply_policy(tenant)
        slo_s = rec.slo_ms / 1000
        deadline: float | None = arrival + slo_s
        if client_timeout_s is not None:
            deadline = min(arrival + slo_s, arrival + client_timeout_s)
        if policy is not None and policy.service_class == "batch":
            deadline = None  # runs only in capacity interactive work leaves idle
        rid = uuid.uuid4().hex
        batchable = caller is not None and rec.max_batch_size > 0
        rows = caller.rows if batchable and caller is not None else 1
        elements = _elements(caller)
        seed = (key, driver.info.instance_class)
        if seed not in self._seeded:  # seeds this replica's predictor from the stored profile
            self.predict(rec, driver, rows, elements)
            if seed[1] in ((rec.profile or {}).get("classes") or {}):
                self._seeded.add(seed)
        return PendingRequest(
            id=rid, tenant=tenant, model=key, display_name=rec.name, arrival_s=arrival,
            deadline_s=deadline, rows=rows, merge_key=caller.key if batchable and caller else ("alone", rid),
            work=(elements or 0) // rows, slo_s=slo_s, loading_s=loading_s)

    def _checked(self, rec: ModelRecord, transport: str,
                 parsed: PendingTensors | None) -> CallerRequest | None:
        """A request the model cannot take (names, datatypes, shapes, batch size) is refused
        here in the instance's own words, before admission and before its data is decoded;
        one that fits becomes a batch member (its data decoded once, kept raw)."""
        if parsed is None:
            return None
        check_headers(self._spec(rec), parsed)
        return caller_request(transport, parsed)

    def _spec(self, rec: ModelRecord) -> ModelSpec:
        key = model_key(rec)
        spec = self._specs.get(key)
        if spec is None:
            def tensors(specs: Any) -> tuple[TensorSpec, ...]:
                return tuple(TensorSpec(t.name, t.datatype, tuple(t.dims)) for t in specs)

            spec = ModelSpec(rec.name, rec.platform, rec.max_batch_size, tensors(rec.inputs),
                             tensors(rec.outputs))
            self._specs[key] = spec
        return spec

    def _apply_policy(self, tenant: str) -> SchedulingPolicy | None:
        """The admin's policy for the tenant, handed to the core when it changed."""
        policy = self.policy_of(tenant)
        if policy is not None and self._policies.get(tenant) != policy:
            self.core.set_policy(tenant, TenantPolicy(
                weight=policy.weight, rate_per_s=policy.rate_per_s, burst=policy.burst,
                max_concurrent=policy.max_concurrent, service_class=policy.service_class))
            self._policies[tenant] = policy
        return policy

    def _refresh_slots(self) -> None:
        slots = []
        holdings = {iid: held for iid, held in self.placement.holdings().items()
                    if (inst := self.instances.get(iid)) is not None and inst.healthy}
        draining = {iid for iid in holdings if self.instances.draining(iid)}
        # a draining instance serves a model only while no other instance holds it
        elsewhere = {(q, v) for iid, held in holdings.items() if iid not in draining for q, v in held.items()}
        for iid, held in holdings.items():
            inst = self.instances.get(iid)
            models = frozenset(f"{q}@{v}" for q, v in held.items()
                               if iid not in draining or (q, v) not in elsewhere)
            slots.append(InstanceSlot(iid, inst.record.instance_class, models,
                                      capacity=self.slots_per_instance))
        # read on every arrival, changed rarely: the core re-indexes only on a change
        if slots != self._slots:
            self.core.set_instances(slots)
            self._slots = slots

    async def http(self, rec: ModelRecord, driver: Any, tenant: str, arrival: float, body: bytes,
                   headers: Mapping[str, str], loading_s: float = 0.0) -> HttpAnswer:
        """``loading_s``: of the time since ``arrival``, how long the model took to load."""
        hlen = headers.get("inference-header-content-length")
        try:
            parsed = http_codec.parse_infer_request(body, int(hlen) if hlen and hlen.isdigit() else None,
                                                    rec.name, str(rec.version))
        except InferplexError:
            parsed = None  # forwarded alone: the instance answers it with its own error
        caller = self._checked(rec, "http", parsed)
        timeout = _client_timeout_s(caller.parameters if caller else {}, headers.get(DEADLINE_HEADER))
        pending = self._pending(rec, driver, tenant, arrival, timeout, caller, loading_s)
        return await self.shell.submit(pending, Call(rec, "http", caller, pending.deadline_s,
                                                     _elements(caller), body, headers))

    async def grpc(self, rec: ModelRecord, driver: Any, tenant: str, arrival: float,
                   request: service_pb2.ModelInferRequest,
                   loading_s: float = 0.0) -> service_pb2.ModelInferResponse:
        try:
            parsed = grpc_codec.parse_infer_request(request)
        except InferplexError:
            parsed = None  # forwarded alone: the instance answers it with its own error
        caller = self._checked(rec, "grpc", parsed)
        params = {}
        if TIMEOUT_PARAMETER in request.parameters:
            params[TIMEOUT_PARAMETER] = request.parameters[TIMEOUT_PARAMETER].int64_param
        timeout = _client_timeout_s(params, None)
        pending = self._pending(rec, driver, tenant, arrival, timeout, caller, loading_s)
        return await self.shell.submit(pending, Call(rec, "grpc", caller, pending.deadline_s,
                                                     _elements(caller), grpc_request=request))

    # ---- dispatch -----------------------------------------------------------------------

    async def _run_batch(self, dispatch: Dispatch, calls: list[Call]) -> tuple[list[Any], float | None]:
        inst = self.instances.get(dispatch.instance_id)
        if inst is None or not inst.healthy:
            # every caller fails over to another copy (the gateway retries once, through
            # admission again, so one that can no longer make its deadline is refused)
            raise Unreachable(f"instance {dispatch.instance_id} went away before this batch ran",
                              retry_after_s=1)
        driver = inst.driver
        rec = calls[0].rec
        now = time.monotonic()
        deadline = min((c.deadline_s for c in calls if c.deadline_s is not None),
                       default=now + BATCH_CLASS_LIMIT_S)
        # The instance stops the execution once it has run the model's SLO (a runaway is
        # bounded, and quarantined when it keeps running that long), not at the batch's
        # remaining budget: an execution the prediction sent off with little slack would
        # be killed for a millisecond of noise, its host restarted and the healthy model
        # counted towards quarantine. One that finishes late is counted late.
        exec_timeout_s = max(deadline - now, rec.slo_ms / 1000, 0.001)
        batch = dispatch.rows if rec.max_batch_size > 0 else 1
        sizes = [c.elements for c in calls]
        elements = sum(e for e in sizes if e is not None) if None not in sizes else None
        prediction = self.predict(rec, driver, batch, elements)
        t0 = time.perf_counter()
        self.placement.activity.dispatched(rec.qualified_name, dispatch.instance_id)
        try:
            if calls[0].transport == "http":
                results, compute_s = await self._http_batch(driver, rec, dispatch, calls, exec_timeout_s)
            else:
                results, compute_s = await self._grpc_batch(driver, rec, dispatch, calls, exec_timeout_s)
        finally:
            self.placement.activity.finished(rec.qualified_name, dispatch.instance_id)
        round_trip = time.perf_counter() - t0
        if any(isinstance(r, NotFound) or getattr(r, "status", None) == 404 for r in results):
            raise self.placement.lost(dispatch.instance_id, rec.qualified_name)  # every caller retries
        self.placement.observe(driver, rec.qualified_name, batch, round_trip, prediction,
                               compute_s, elements=elements)
        self.overhead.observe(dispatch.model, round_trip, compute_s)
        return results, compute_s

    async def _http_batch(self, driver: Any, rec: ModelRecord, dispatch: Dispatch, calls: list[Call],
                          exec_timeout_s: float) -> tuple[list[Any], float | None]:
        from controlplane.gateway import http_compute_s

        if len(calls) == 1:
            call = calls[0]
            code, out, out_headers = await driver.infer_raw_http(
                rec.qualified_name, str(rec.version), call.http_body, call.http_headers or {},
                exec_timeout_s=exec_timeout_s)
            return [HttpAnswer(code, out, out_headers)], (http_compute_s(out, out_headers) if code == 200 else None)
        callers = [c.caller for c in calls]
        assert all(callers)
        body, headers = batching_http.merge_http(callers, dispatch.batch_id,  # type: ignore[arg-type]
                                                 max(1, int(exec_timeout_s * 1e6)))
        code, out, out_headers = await driver.infer_raw_http(
            rec.qualified_name, str(rec.version), body, headers, exec_timeout_s=exec_timeout_s)
        if code != 200:
            return [HttpAnswer(code, out, out_headers)] * len(calls), None
        answers = batching_http.split_http(out, _int(out_headers.get("inference-header-content-length")),
                                           callers)  # type: ignore[arg-type]
        return [HttpAnswer(a.status, a.body, dict(a.headers)) for a in answers], http_compute_s(out, out_headers)

    async def _grpc_batch(self, driver: Any, rec: ModelRecord, dispatch: Dispatch, calls: list[Call],
                          exec_timeout_s: float) -> tuple[list[Any], float | None]:
        from controlplane.gateway import grpc_compute_s

        limit_us = max(1, int(exec_timeout_s * 1e6))
        if len(calls) == 1:
            request = calls[0].grpc_request
            assert request is not None
            request.parameters[TIMEOUT_PARAMETER].int64_param = limit_us
            try:
                response = await driver.infer_raw_grpc(request)
            except InferplexError as exc:
                return [exc], None
            return [response], grpc_compute_s(response)
        callers = [c.caller for c in calls]
        merged = batching_grpc.merge_grpc(callers, dispatch.batch_id, limit_us)  # type: ignore[arg-type]
        merged.model_name, merged.model_version = rec.qualified_name, str(rec.version)
        try:
            response = await driver.infer_raw_grpc(merged)
        except InferplexError as exc:
            return [exc] * len(calls), None
        return batching_grpc.split_grpc(response, callers), grpc_compute_s(response)  # type: ignore[arg-type]


def _elements(caller: CallerRequest | None) -> int | None:
    """The request's input elements, full shapes (profiler.profile.request_elements): the
    size the predictor keys on; None when the request could not be read."""
    if caller is None:
        return None
    return request_elements([t.shape for t in caller.inputs])


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _client_timeout_s(params: Mapping[str, Any], header: str | None) -> float | None:
    """The client's own deadline, relative: Triton's ``timeout`` (us) or the header (ms)."""
    limits = []
    value = params.get(TIMEOUT_PARAMETER)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        limits.append(value / 1e6)
    if header is not None:
        try:
            ms = float(header)
        except ValueError:
            ms = math.nan
        if not ms > 0 or not math.isfinite(ms):
            raise InvalidArgument(f"header {DEADLINE_HEADER} must be a positive number of milliseconds, "
                                  f"got {header!r}")
        limits.append(ms / 1000)
    return min(limits) if limits else None
