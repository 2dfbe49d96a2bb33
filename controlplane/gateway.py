"""The v2 inference gateway's handler layer, shared by the HTTP routes and the gRPC servicer.

Transports only translate; everything a tenant can observe is decided here:
which models exist for it (its own, under its own names), how errors read, and
where a request goes. Inference is forwarded without decoding tensors: the body
(HTTP) or the protobuf (gRPC) goes to an instance holding the model with the
model name swapped for the instance-level one, and the answer comes back with
the tenant's name swapped in again.

Decisions (documented in the README):
- health (live/ready) and server metadata need no key, so load balancers can probe;
  everything that names a model needs a tenant key.
- "model ready" means servable: uploaded and not failed. A model that is not
  loaded anywhere is still ready, because the next request loads it.
- admin keys are not bound to a tenant, so they cannot infer (403).
- an inferplex worker's response parameter ``inferplex_compute_ns`` (the batch's
  compute time) feeds the predictor and is passed on to the tenant unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tritonclient.grpc import service_pb2

from controlplane.metrics import Metrics
from controlplane.redact import CALLER, Redactor
from controlplane.scheduling import ScheduledForwarding
from controlplane.settings import Settings
from kserve.errors import (
    DeadlineExceeded,
    InferplexError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from kserve.jsonbody import check_json, check_nesting
from kserve.tensors import COMPUTE_NS_PARAMETER, TIMEOUT_PARAMETER
from placement.instances import InstanceRegistry
from placement.service import PlacementLost, PlacementService
from placement.triton_driver import Unreachable
from profiler.feed import Prediction
from profiler.predictor import LatencyPredictor
from profiler.profile import ClassProfile
from tenants.auth import Principal

if TYPE_CHECKING:
    from controlplane.catalog import ModelCatalog, ModelRecord
    from tenants.service import TenantService

log = logging.getLogger(__name__)

SERVER_NAME = "inferplex"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["classification", "model_repository", "statistics", "binary_tensor_data"]
# the metrics label of requests for a model the tenant does not have: the name they sent
# is unbounded (one series each, kept forever) and may be a guess at another tenant's
UNKNOWN_MODEL_LABEL = "<unknown>"
REPOSITORY_DENIED = ("tenants cannot load or unload models through the repository API; "
                     "upload models with POST /v1/models (or `inferplex model upload`)")


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    body: bytes
    headers: dict[str, str]


def _status_kind(exc: InferplexError) -> str:
    return type(exc).__name__


class Gateway:
    def __init__(self, tenants: TenantService, catalog: ModelCatalog, placement: PlacementService,
                 instances: InstanceRegistry, predictor: LatencyPredictor, metrics: Metrics,
                 settings: Settings) -> None:
        self.tenants = tenants
        self.catalog = catalog
        self.placement = placement
        self.instances = instances
        self.predictor = predictor
        self.metrics = metrics
        self.settings = settings
        # every message a tenant gets passes through this at the transports' edge
        self.redact = Redactor(self._internal_names)
        self._background: set[asyncio.Task[None]] = set()  # quarantine checks in flight
        # admission, deadline-ordered queues and batching; None: forward each request as it
        # comes (INFERPLEX_SCHEDULER=false, kept to compare against)
        self.scheduled: ScheduledForwarding | None = (
            ScheduledForwarding(placement, instances, predictor, tenants.policy, self._predict,
                                slots_per_instance=settings.scheduler_slots_per_instance)
            if settings.scheduler else None)

    def _internal_names(self) -> list[str]:
        return [part for i in self.instances.list()
                for part in (i.record.instance_id, i.record.http_url, i.record.grpc_url)]

    # ---- who, and which model ----------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = await self.tenants.authenticate(authorization)
        CALLER.set(principal)
        if principal.tenant is None:
            raise PermissionDenied("the v2 inference API needs a tenant API key; admin keys are not "
                                   "bound to a tenant (issue one with `inferplex key issue --tenant T`)")
        return principal

    def resolve(self, principal: Principal, name: str, version: str | None) -> ModelRecord:
        assert principal.tenant is not None
        record = self.catalog.resolve(principal.tenant, name, version or None)
        if record.status == "failed":
            raise InvalidArgument(f"model '{name}' version {record.version} failed to load on an "
                                  f"instance: {record.reason}; upload a fixed version")
        return record

    # ---- metadata ----------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    async def server_ready(self) -> bool:
        return any(i.healthy for i in self.instances.list())

    def model_metadata(self, principal: Principal, name: str, version: str | None) -> dict[str, Any]:
        rec = self.resolve(principal, name, version)
        batch = [-1] if rec.max_batch_size > 0 else []
        versions = [str(r.version) for r in self.catalog.versions(rec.tenant, rec.name)]

        def tensors(specs: list[Any]) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": s.datatype, "shape": batch + list(s.dims)} for s in specs]

        return {"name": rec.name, "versions": versions,
                "platform": rec.platform, "inputs": tensors(rec.inputs), "outputs": tensors(rec.outputs)}

    def model_ready(self, principal: Principal, name: str, version: str | None) -> bool:
        try:
            self.resolve(principal, name, version)
        except InvalidArgument:  # failed: exists, but is not servable
            return False
        return True

    def model_config(self, principal: Principal, name: str, version: str | None) -> dict[str, Any]:
        rec = self.resolve(principal, name, version)
        return dict(self.catalog.triton_config(rec), name=rec.name)

    # ---- statistics and index ------------------------------------------------------------

    async def statistics(self, principal: Principal, name: str | None,
                         version: str | None) -> dict[str, Any]:
        tenant = principal.tenant
        assert tenant is not None
        wanted: str | None = None  # a version asked for: never answer with another's numbers
        if name:
            records = [self.resolve(principal, name, version)]
            wanted = str(records[0].version) if version else None
        else:  # each model's latest usable version, as a request naming no version gets
            names = sorted({r.name for r in self.catalog.list(tenant)})
            records = [self.catalog.resolve(tenant, n) for n in names]
        by_qualified = {r.qualified_name: r for r in records}
        stats: dict[str, dict[str, Any]] = {}
        for iid, models in self.placement.placements().items():
            held = [q for q in models if q in by_qualified]
            inst = self.instances.get(iid)
            if not held or inst is None or not inst.healthy:
                continue
            for q in held:
                try:
                    answer = await inst.driver.statistics(q)
                except InferplexError as exc:
                    log.warning("statistics of %s on %s: %s", q, iid, exc)
                    continue
                for entry in answer.get("model_stats", []):
                    if entry.get("name") == q and wanted in (None, str(entry.get("version"))):
                        stats[q] = dict(entry, name=by_qualified[q].name)
        out = []
        for q, rec in by_qualified.items():
            out.append(stats.get(q) or {
                "name": rec.name, "version": str(rec.version), "last_inference": 0,
                "inference_count": 0, "execution_count": 0, "inference_stats": {}, "batch_stats": [],
            })
        return {"model_stats": out}

    def repository_index(self, principal: Principal) -> list[dict[str, str]]:
        assert principal.tenant is not None
        rows = []
        for rec in self.catalog.list(principal.tenant):
            if rec.status == "failed":
                state, reason = "UNAVAILABLE", rec.reason
            elif self.placement.find_loaded(rec.qualified_name, str(rec.version)) is not None:
                state, reason = "READY", ""
            else:
                state, reason = "UNAVAILABLE", "not loaded; the first request loads it"
            rows.append({"name": rec.name, "version": str(rec.version), "state": state, "reason": reason})
        return rows

    # ---- inference -----------------------------------------------------------------------

    def _cold_deadline(self, rec: ModelRecord, tenant: str, arrival: float) -> float | None:
        return self.scheduled.cold_deadline(rec, tenant, arrival) if self.scheduled is not None else None

    async def infer_http(self, principal: Principal, name: str, version: str | None, body: bytes,
                         headers: Mapping[str, str]) -> HttpResult:
        """``body`` is already decompressed and within the size limit."""
        started = time.perf_counter()
        arrival = time.monotonic()
        tenant = principal.tenant or ""
        status = "error"
        label = UNKNOWN_MODEL_LABEL
        serving: str | None = None  # in flight for placement: its copies are not evicted
        try:
            rec = self.resolve(principal, name, version)
            qualified, label = rec.qualified_name, rec.name
            self.placement.activity.begin(qualified, arrival)
            serving = qualified
            if self.scheduled is not None:
                self.scheduled.refuse_over_quota(rec, tenant)
            # before a cold load, and before the parses below (the instance checks it again)
            check_json(_json_part(body, headers), "request", self.settings.max_json_values,
                       "INFERPLEX_MAX_JSON_VALUES")
            body, headers = _without_scheduling_parameters_http(body, headers)
            for attempt in _PLACEMENT_ATTEMPTS:
                loading = time.monotonic()
                driver = await self.placement.ensure_loaded(rec, self._cold_deadline(rec, tenant, arrival))
                loading = time.monotonic() - loading
                try:
                    if self.scheduled is not None:
                        answer = await self.scheduled.http(rec, driver, tenant, arrival, body, headers, loading)
                        code, out, out_headers = answer.status, answer.body, answer.headers
                    else:
                        code, out, out_headers = await self._forward_http(rec, driver, body, headers)
                    break
                except PlacementLost:
                    _retry_lost(rec, attempt)
                except Unreachable:
                    # the instance died under it: fail over to another copy (admission checks
                    # the deadline again, so a request that can no longer make it is refused)
                    self.placement.unreachable(driver.info.instance_id)
                    _retry_lost(rec, attempt)
            if code == 200:
                out, out_headers = _rename_http_response(out, out_headers, qualified, rec.name)
            else:
                if code in (503, 504):  # stopped at its deadline, or quarantined for it
                    self._check_quarantine(rec, driver)
                out = self._instance_error(code, out, name)
                self.metrics.error(tenant, label, f"instance_{code}")
            status = str(code)
            return HttpResult(code, out, out_headers)
        except InferplexError as exc:
            status = str(exc.http_status)
            self.metrics.error(tenant, label, _status_kind(exc))
            raise
        finally:
            if serving is not None:
                self.placement.activity.end(serving)
            self.metrics.request(tenant, label, "http", status, time.perf_counter() - started)

    async def _forward_http(self, rec: ModelRecord, driver: Any, body: bytes,
                            headers: Mapping[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """Pass-through: the request goes to the instance as it comes."""
        batch = _http_batch(rec, headers, body)
        prediction = self._predict(rec, driver, batch)
        t0 = time.perf_counter()
        code, out, out_headers = await driver.infer_raw_http(
            rec.qualified_name, str(rec.version), body, headers, timeout_s=self.settings.request_timeout_s,
            exec_timeout_s=_exec_timeout_s(rec))
        if code == 404:
            raise self.placement.lost(driver.info.instance_id, rec.qualified_name)
        if code == 200:
            self.placement.observe(driver, rec.qualified_name, batch, time.perf_counter() - t0, prediction,
                                   http_compute_s(out, out_headers))
        return code, out, out_headers

    def _check_quarantine(self, rec: ModelRecord, driver: Any) -> None:
        """After an instance stopped (or refused) an execution: if the instance has
        quarantined the model, mark the version failed with the reason and unload it,
        so no instance runs it again (a new upload replaces it)."""
        task = asyncio.create_task(self._quarantine_if_stopped(rec, driver))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quarantine_if_stopped(self, rec: ModelRecord, driver: Any) -> None:
        try:
            rows = await driver.index()
        except InferplexError:
            return
        row = next((r for r in rows if r.name == rec.qualified_name and r.version == str(rec.version)), None)
        if row is None or row.state == "READY" or QUARANTINED not in row.reason:
            return
        log.warning("model %s version %d quarantined on %s: %s", rec.qualified_name, rec.version,
                    driver.info.instance_id, row.reason)
        reason = (f"quarantined: its executions were stopped at their deadline (the {rec.slo_ms:g} ms "
                  "latency target) too many times in a row; upload a version that finishes within it")
        if await self.catalog.set_status(rec, "failed", reason=reason) is not None:
            await self.placement.unload_everywhere(rec.qualified_name)

    def _instance_error(self, code: int, body: bytes, name: str) -> bytes:
        """An instance's v2 error answer, as the tenant may read it."""
        try:
            message = json.loads(body)["error"]
            if not isinstance(message, str):
                raise TypeError(message)
        except (ValueError, KeyError, TypeError):
            message = f"the inference instance answered HTTP {code} without a v2 error message"
        return json.dumps({"error": self.redact.message(message, code, keep=(name,))}).encode()

    def _predict(self, rec: ModelRecord, driver: Any, batch: int | None,
                 elements: int | None = None) -> Prediction | None:
        """The predictor's answer at dispatch time, kept to compare with what then happens;
        by the request's input elements when they are known."""
        if batch is None:
            return None
        q, cls = rec.qualified_name, driver.info.instance_class
        classes = (rec.profile or {}).get("classes") or {}
        if cls in classes and not self.predictor.seeded(q, cls):
            # another replica (or this one before a restart) profiled it: seed from the store.
            # Not "cls not in known(q)": a cold load's observe_load creates the state unseeded.
            self.predictor.seed_from_profile(q, cls, ClassProfile.model_validate(classes[cls]))
        p50 = self.predictor.exec_time(q, cls, batch, percentile=50.0, elements=elements)
        p99 = self.predictor.exec_time(q, cls, batch, elements=elements)
        if p50 is None or p99 is None:
            return None
        return Prediction(batch, p50, p99, elements)

    async def infer_grpc(self, principal: Principal,
                         request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
        started = time.perf_counter()
        arrival = time.monotonic()
        tenant = principal.tenant or ""
        name = request.model_name
        status = "error"
        label = UNKNOWN_MODEL_LABEL
        serving: str | None = None
        try:
            rec = self.resolve(principal, name, request.model_version)
            qualified, label = rec.qualified_name, rec.name
            self.placement.activity.begin(qualified, arrival)
            serving = qualified
            if self.scheduled is not None:
                self.scheduled.refuse_over_quota(rec, tenant)
            request.model_name = qualified
            request.model_version = str(rec.version)
            for key in SCHEDULING_PARAMETERS:
                if key in request.parameters:
                    del request.parameters[key]
            for attempt in _PLACEMENT_ATTEMPTS:
                loading = time.monotonic()
                driver = await self.placement.ensure_loaded(rec, self._cold_deadline(rec, tenant, arrival))
                loading = time.monotonic() - loading
                try:
                    if self.scheduled is not None:
                        response = await self.scheduled.grpc(rec, driver, tenant, arrival, request, loading)
                    else:
                        response = await self._forward_grpc(rec, driver, request)
                    break
                except PlacementLost:
                    _retry_lost(rec, attempt)
                except Unreachable:
                    self.placement.unreachable(driver.info.instance_id)
                    _retry_lost(rec, attempt)
                except (DeadlineExceeded, Unavailable):
                    self._check_quarantine(rec, driver)
                    raise
            response.model_name = rec.name
            status = "OK"
            return response
        except InferplexError as exc:
            status = exc.grpc_code.name
            self.metrics.error(tenant, label, _status_kind(exc))
            raise
        finally:
            if serving is not None:
                self.placement.activity.end(serving)
            self.metrics.request(tenant, label, "grpc", status, time.perf_counter() - started)


    async def _forward_grpc(self, rec: ModelRecord, driver: Any,
                            request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
        """Pass-through: the request goes to the instance as it comes."""
        batch: int | None = 1
        if rec.max_batch_size > 0:
            batch = _batch_in_range(rec, int(request.inputs[0].shape[0])
                                    if request.inputs and request.inputs[0].shape else None)
        prediction = self._predict(rec, driver, batch)
        t0 = time.perf_counter()
        _bound_execution(request, rec)
        try:
            response = await driver.infer_raw_grpc(request, timeout_s=self.settings.request_timeout_s)
        except NotFound:
            raise self.placement.lost(driver.info.instance_id, rec.qualified_name) from None
        self.placement.observe(driver, rec.qualified_name, batch, time.perf_counter() - t0, prediction,
                               grpc_compute_s(response))
        return response


# An instance that answers "unknown model" for a model routed to it restarted without it: the
# request is routed again once (the model loaded again), then refused
_PLACEMENT_ATTEMPTS = (1, 2)


def _retry_lost(rec: ModelRecord, attempt: int) -> None:
    if attempt == _PLACEMENT_ATTEMPTS[-1]:
        raise Unavailable(f"model '{rec.name}' was lost by the instance serving it, twice; retry",
                          retry_after_s=1)


# How an instance's repository index words a model it stopped running (worker/sandbox/client.py)
QUARANTINED = "quarantined"


def _exec_timeout_s(rec: ModelRecord) -> float:
    """How long the instance may run this request's execution. Until admission gives every
    request a deadline on arrival, the execution's limit is the model version's SLO,
    counted from dispatch (the instance adds a small margin before it stops it)."""
    return rec.slo_ms / 1000


def _bound_execution(request: service_pb2.ModelInferRequest, rec: ModelRecord) -> None:
    """Triton's ``timeout`` parameter (us) on the forwarded request: the tenant's own, when
    it is shorter and well-formed, else the execution limit. A tenant may tighten it only."""
    limit_us = max(1, int(_exec_timeout_s(rec) * 1e6))
    own = request.parameters.get(TIMEOUT_PARAMETER)
    if own is not None and own.WhichOneof("parameter_choice") == "int64_param" and 0 < own.int64_param < limit_us:
        return
    request.parameters[TIMEOUT_PARAMETER].int64_param = limit_us


# Request parameters that order work on a shared instance (Triton's queue policy reads
# "priority"): the control plane schedules, so a tenant's own value never reaches it.
SCHEDULING_PARAMETERS = ("priority",)


def _json_part(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The JSON part of a v2 HTTP request: all of it without Inference-Header-Content-Length."""
    hlen = headers.get("inference-header-content-length")
    try:
        return body[: int(hlen)] if hlen else body
    except ValueError:
        return body  # the instance refuses a bad header length with its own message


def _without_scheduling_parameters_http(body: bytes, headers: Mapping[str, str]) -> tuple[bytes, Mapping[str, str]]:
    """Drop SCHEDULING_PARAMETERS from the request's top-level parameters. The JSON part is
    parsed and re-encoded only when one of the names appears in it at all."""
    hlen = headers.get("inference-header-content-length")
    try:
        split = int(hlen) if hlen else len(body)
    except ValueError:
        return body, headers  # the instance refuses a bad header length with its own message
    head = body[:split]
    if not any(f'"{key}"'.encode() in head for key in SCHEDULING_PARAMETERS):
        return body, headers
    check_nesting(head, "request")  # json.loads would raise RecursionError: a 500
    try:
        request = json.loads(head)
    except ValueError:
        return body, headers
    params = request.get("parameters") if isinstance(request, dict) else None
    if not isinstance(params, dict) or not any(key in params for key in SCHEDULING_PARAMETERS):
        return body, headers
    for key in SCHEDULING_PARAMETERS:
        params.pop(key, None)
    new_head = json.dumps(request, separators=(",", ":")).encode()
    if not hlen:
        return new_head, headers
    out = dict(headers)
    out["inference-header-content-length"] = str(len(new_head))
    return new_head + body[split:], out


def _http_batch(rec: ModelRecord, headers: Mapping[str, str], body: bytes) -> int | None:
    """The batch size, when it is cheap to read: the JSON header is split off (binary
    data) or the model is not batched. Otherwise the statistics still tell it later."""
    if rec.max_batch_size <= 0:
        return 1
    hlen = headers.get("inference-header-content-length")
    if not hlen:
        return None
    try:
        head = body[: int(hlen)]
        check_nesting(head, "request")
        inputs = json.loads(head).get("inputs") or []
        return _batch_in_range(rec, int(inputs[0]["shape"][0]))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _batch_in_range(rec: ModelRecord, batch: int | None) -> int | None:
    """A batch size the predictor can answer for; anything else (0, negative, over the
    model's max) is the instance's to refuse with its own message, not a gateway crash."""
    if batch is None or not 1 <= batch <= rec.max_batch_size:
        return None
    return batch


# The value must be a JSON key (its quotes unescaped), so BYTES data or a name that merely
# contains the text cannot match; where the key sits is checked by _in_top_parameters.
_COMPUTE_KEY = re.compile(rb'"' + COMPUTE_NS_PARAMETER.encode() + rb'"\s*:\s*(\d{1,18})\s*[,}]')
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]', re.S)
_TOP_PARAMETERS = ((b"{", None), (b"{", b'"parameters"'))
# The inferplex worker's own layout, matched from the first byte: every string is a whole
# JSON string token, so a match is the top-level "parameters" by construction
_STR = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCALAR = rb'(?:' + _STR + rb'|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)'
_WORKER_LAYOUT = re.compile(
    rb'\{"model_name":' + _STR + rb',"model_version":' + _STR + rb'(?:,"id":' + _STR + rb')?'
    rb',"parameters":\{(?:' + _STR + rb':' + _SCALAR + rb',)*"' + COMPUTE_NS_PARAMETER.encode()
    + rb'":(\d{1,18})[,}]')


def http_compute_s(body: bytes, headers: Mapping[str, str]) -> float | None:
    """The instance's in-band compute time from a v2 HTTP infer response, or None.

    Only the JSON header (before Inference-Header-Content-Length) is searched, and only
    a key of the top-level "parameters" object counts: outputs' parameters, the request
    id, output names and JSON tensor data cannot forge it. No full JSON parse: the
    worker's layout is one anchored regex; anything else is one search for the key and a
    structural walk over the tokens before a hit."""
    hlen = headers.get("inference-header-content-length")
    end = len(body)
    if hlen:
        try:
            end = min(int(hlen), end)
        except ValueError:
            return None
    m = _WORKER_LAYOUT.match(body, 0, end)
    if m is not None:
        return int(m.group(1)) / 1e9
    m = _COMPUTE_KEY.search(body, 0, end)
    while m is not None:
        if _in_top_parameters(body, m.start()):
            return int(m.group(1)) / 1e9
        m = _COMPUTE_KEY.search(body, m.start() + 1, end)
    return None


def _in_top_parameters(body: bytes, at: int) -> bool:
    """Whether the JSON string token starting at ``at`` is a key of the top-level
    "parameters" object."""
    stack: list[tuple[bytes, bytes | None]] = []
    key: bytes | None = None
    last: bytes | None = None
    prev = b""
    for tok in _JSON_TOKEN.finditer(body):
        start = tok.start()
        if start >= at:
            return (start == at and prev in (b"{", b",") and len(stack) == 2
                    and tuple(stack) == _TOP_PARAMETERS)
        if tok.end() > at:
            return False  # ``at`` is inside a string
        t = tok.group()
        if t in (b"{", b"["):
            stack.append((t, key))
            key = None
        elif t in (b"}", b"]"):
            if not stack:
                return False
            stack.pop()
            key = None
        elif t == b":":
            key = last
        elif t == b",":
            key = None
        else:
            last = t
        prev = t[:1]
    return False


def grpc_compute_s(response: service_pb2.ModelInferResponse) -> float | None:
    """The instance's in-band compute time from a gRPC infer response, or None."""
    if COMPUTE_NS_PARAMETER not in response.parameters:
        return None
    param = response.parameters[COMPUTE_NS_PARAMETER]
    which = param.WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        return None
    ns = getattr(param, which)
    return ns / 1e9 if ns >= 0 else None


# v2 servers (Triton, inferplex worker) write model_name first in an infer response
_MODEL_NAME_FIRST = re.compile(rb'\{\s*"model_name"\s*:\s*"')


def _rename_http_response(body: bytes, headers: dict[str, str], qualified: str,
                          name: str) -> tuple[bytes, dict[str, str]]:
    """Swap ``model_name`` in the JSON part of a v2 infer response, keeping binary data."""
    hlen = headers.get("inference-header-content-length")
    split = int(hlen) if hlen else len(body)
    m = _MODEL_NAME_FIRST.match(body)
    q = qualified.encode()
    if m is not None and body.startswith(q + b'"', m.end()):
        # both names need no JSON escaping (tenants.naming), so swapping the bytes of the
        # top-level value is exact and skips a parse and re-encode of the whole header
        at = m.end()
        head = b"".join((body[:at], name.encode(), body[at + len(q):split]))
    else:
        try:
            header = json.loads(body[:split])
        except ValueError as exc:
            raise Internal(f"the instance sent an unreadable infer response: {exc}") from exc
        header["model_name"] = name
        head = json.dumps(header, separators=(",", ":")).encode()
    out_headers = {"content-type": headers.get("content-type", "application/json")}
    if hlen:
        out_headers["inference-header-content-length"] = str(len(head))
        return head + body[split:], out_headers
    return head, out_headers
