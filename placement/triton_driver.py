"""The production InstanceDriver: standard KServe v2 + Triton repository/statistics calls only.

The same class drives NVIDIA Triton and ``inferplex worker``; one extra only, for a
server whose metadata says it is an inferplex worker: a load first names its files by
digest and sends them only if the worker's artifact cache lacks them
(modelfiles/artifacts.py). Control calls (load, unload, index, stats, profiling
inference) go through ``tritonclient.grpc.aio``. The gateway's hot path uses raw
pass-through instead (a gRPC stub on a second channel, a keep-alive HTTP/1.1 pool
from ``placement.http_hop``), so a request is forwarded without decoding its tensors.

Every call carries the instance credential, when one is set, as the header Triton's
``--http-restricted-api`` / ``--grpc-restricted-protocol`` demand (kserve/restricted.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc
import httpx
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from kserve.errors import (
    DeadlineExceeded,
    InferplexError,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from kserve.restricted import InstanceCredential
from kserve.tensors import TIMEOUT_HEADER
from modelfiles.artifacts import ARTIFACT_PARAMETER, CACHING_SERVERS, files_digest
from placement.backends import (
    PROBED_BACKENDS,
    Backends,
    adapt_onnx,
    backend_missing,
    platform_of,
    probe_load,
)
from placement.driver import (
    InferTiming,
    InstanceDriver,
    InstanceInfo,
    LoadSeconds,
    ModelState,
    ServedModel,
    reported_memory_bytes,
)
from placement.http_hop import HopError, HttpHop

log = logging.getLogger(__name__)

# model files travel in load requests; tensors in infer requests
MAX_MESSAGE_BYTES = 1 << 30
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
# hop-by-hop and recomputed headers are not forwarded to the instance
_HTTP_FORWARD = ("content-type", "inference-header-content-length")
_GRPC_STATUS = {c.name: c for c in grpc.StatusCode}
# how Triton (and the worker) words a refusal for a missing or wrong credential
_RESTRICTED = "is restricted, expecting header"
# what grpc itself says when the call's own deadline passed (no answer from the instance)
_CLIENT_DEADLINE = "Deadline Exceeded"
# Triton's per-GPU gauge on its metrics endpoint (absent on a CPU-only server)
_GPU_MEMORY_USED = "nv_gpu_memory_used_bytes"
PROBE_TIMEOUT_S = 10.0


def gpu_memory_used(metrics_text: str) -> int | None:
    """The bytes in use over every GPU a Triton's Prometheus text reports, None without GPUs."""
    values = [float(line.rpartition(" ")[2]) for line in metrics_text.splitlines()
              if line.startswith(_GPU_MEMORY_USED + "{") or line.startswith(_GPU_MEMORY_USED + " ")]
    return int(sum(values)) if values else None


def _status_of(exc: InferenceServerException) -> grpc.StatusCode | None:
    # tritonclient reports "StatusCode.UNAVAILABLE" (str of the enum)
    status = str(exc.status() or "")
    return _GRPC_STATUS.get(status.rpartition(".")[2])


class Unreachable(Unavailable):
    """The instance could not be reached or dropped the connection before answering (it died,
    or its network did): the request never ran to an answer there and may run elsewhere."""


def _credential_refused(instance: str, doing: str, refusal: str) -> Unavailable:
    # the operator, not a retry, fixes this; the refusal (it names the header) stays in the log
    log.error("instance %s refused the control plane's credential while %s (%s): give the instance and "
              "the control plane the same INFERPLEX_INSTANCE_RESTRICTED_KEY/VALUE", instance, doing, refusal)
    return Unavailable(f"instance {instance} refused the control plane's credential while {doing}",
                       retry_after_s=1)


def _map_error(exc: InferenceServerException | grpc.RpcError, instance: str, doing: str,
               *, load: bool = False) -> InferplexError:
    if isinstance(exc, grpc.RpcError):
        code, msg = exc.code(), exc.details() or str(exc)  # type: ignore[attr-defined]
    else:
        code, msg = _status_of(exc), exc.message() or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and _RESTRICTED in msg:  # Triton's gRPC refusal code
        return _credential_refused(instance, doing, msg)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and msg != _CLIENT_DEADLINE:
        return DeadlineExceeded(msg)  # the instance stopped the execution (or never ran it)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unreachable(f"instance {instance} is unreachable while {doing}: {msg}", retry_after_s=1)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"instance {instance} did not answer in time while {doing}: {msg}", retry_after_s=1)
    if load:
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the worker's "insufficient memory budget"
            return ResourceExhausted(msg)
        return InvalidArgument(f"instance {instance} refused to load the model: {msg}")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(msg)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(msg)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(msg)
    return Internal(f"instance {instance} failed while {doing}: {msg}")


class TritonDriver(InstanceDriver):
    def __init__(self, info: InstanceInfo, *, credential: InstanceCredential | None = None,
                 timeout_s: float = 30.0, load_timeout_s: float = 300.0) -> None:
        self.info = info
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        # built once: tritonclient takes headers per call, the stub metadata per call
        self._headers = credential.grpc_headers() if credential else None
        self._metadata = credential.grpc_metadata() if credential else None
        self._client = grpcclient.InferenceServerClient(info.grpc_url, channel_args=CHANNEL_OPTIONS)
        self._channel = grpc.aio.insecure_channel(info.grpc_url, options=CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        http_headers = credential.http_headers() if credential else {}
        self._http = httpx.AsyncClient(
            base_url=f"http://{info.http_url}", headers=http_headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        # the infer hot path: a bare keep-alive pool costs a fraction of httpx's or aiohttp's CPU
        self._hop = HttpHop(info.http_url, headers=http_headers)
        # read once per (re)appearance of the server by probe loads (placement/backends.py)
        self._backends: Backends | None = None
        self._caching: bool | None = None  # the server has an artifact cache (read once, like backends)
        self._probing = asyncio.Lock()
        self._warned_strict = False

    # ---- control ---------------------------------------------------------------------

    async def is_ready(self) -> bool:
        try:
            if await self._client.is_server_ready(headers=self._headers, client_timeout=2.0):
                self._warned_strict = False
                return True
            live = await self._client.is_server_live(headers=self._headers, client_timeout=2.0)
        except (InferenceServerException, grpc.RpcError):
            return False
        if live and not self._warned_strict:
            # Triton's default --strict-readiness=true: one model that failed to load (a backend
            # probe, a tenant's broken model) makes the whole server "not ready" for good
            self._warned_strict = True
            log.warning("instance %s is live but not ready; a Triton stays not ready after any failed "
                        "load unless started with --strict-readiness=false, which inferplex needs "
                        "(it tracks each model's readiness itself)", self.info.instance_id)
        return False

    async def index(self) -> list[ModelState]:
        try:
            resp = await self._client.get_model_repository_index(headers=self._headers,
                                                                 client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _map_error(exc, self.info.instance_id, "reading the repository index") from exc
        return [ModelState(m.name, m.version, m.state, m.reason) for m in resp.models]

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> LoadSeconds:
        """Loads the model as given where the server has its backend; an ONNX model on a
        Triton with only the Python backend goes through inferplex's adapter. On an inferplex
        worker the files travel only when its artifact cache lacks them (``cached`` says)."""
        platform = platform_of(config)
        backends = await self.backends() if platform else None
        if backends is not None and not backends.native(platform):
            if not backends.adapted(platform):
                raise InvalidArgument(f"instance {self.info.instance_id} cannot load {name}: it has no "
                                      f"backend for {platform} models")
            config, files = adapt_onnx(config, files)
        started = time.perf_counter()
        digest = None
        if files and await self._has_cache():
            digest = await asyncio.to_thread(files_digest, files)
            if await self._load_by_digest(name, config, digest):
                return LoadSeconds(time.perf_counter() - started, cached=True, digest=digest)
        try:
            await self._client.load_model(
                name, config=json.dumps(config),
                files={f"file:{path}": data for path, data in files.items()},
                headers=self._headers, client_timeout=self.load_timeout_s,
            )
        except InferenceServerException as exc:
            raise _map_error(exc, self.info.instance_id, f"loading {name}", load=True) from exc
        return LoadSeconds(time.perf_counter() - started, digest=digest)

    async def _load_by_digest(self, name: str, config: dict[str, Any], digest: str) -> bool:
        """A load naming the files by digest, none sent; False where the worker does not
        hold them (it answers NOT_FOUND, modelfiles/artifacts.py)."""
        request = service_pb2.RepositoryModelLoadRequest(model_name=name)
        request.parameters["config"].string_param = json.dumps(config)
        request.parameters[ARTIFACT_PARAMETER].string_param = digest
        try:
            await self._stub.RepositoryModelLoad(request, timeout=self.load_timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return False
            raise _map_error(exc, self.info.instance_id, f"loading {name}", load=True) from exc
        return True

    async def _has_cache(self) -> bool:
        """Whether the server is an inferplex worker (the only kind that knows the digest
        parameter: a Triton would ignore it and load nothing, or a same-named model of its
        own repository). Unknown while it cannot be asked: then the files are sent."""
        if self._caching is None:
            try:
                meta = await self._client.get_server_metadata(headers=self._headers,
                                                              client_timeout=self.timeout_s)
            except InferenceServerException:
                return False
            self._caching = meta.name in CACHING_SERVERS
        return self._caching

    async def backends(self) -> Backends | None:
        """Which of inferplex's backends the server has (probed once; None while it cannot
        be asked)."""
        async with self._probing:
            if self._backends is None:
                present = await asyncio.gather(*(self._has_backend(b) for b in PROBED_BACKENDS))
                if None not in present:
                    self._backends = Backends(frozenset(b for b, has in zip(PROBED_BACKENDS, present,
                                                                              strict=True) if has))
                    log.info("instance %s has backends %s", self.info.instance_id,
                             sorted(self._backends.present))
            return self._backends

    def forget_backends(self) -> None:
        """The server (re)appeared: it may be another build, so probe again."""
        self._backends = None
        self._caching = None

    async def _has_backend(self, backend: str) -> bool | None:
        name, config, files = probe_load(backend)
        try:
            await self._client.load_model(name, config=json.dumps(config),
                                          files={f"file:{p}": d for p, d in files.items()},
                                          headers=self._headers, client_timeout=PROBE_TIMEOUT_S)
        except InferenceServerException as exc:
            refusal = exc.message() or str(exc)
            if _status_of(exc) == grpc.StatusCode.UNAVAILABLE or _RESTRICTED in refusal:
                log.warning("cannot probe %s for backend %s: %s", self.info.instance_id, backend, refusal)
                return None
            return not backend_missing(refusal)
        # a probe that loaded (it should not): the backend is there; don't leave it behind
        await self.unload(name)
        return True

    async def unload(self, name: str) -> None:
        try:
            await self._client.unload_model(name, headers=self._headers, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _map_error(exc, self.info.instance_id, f"unloading {name}") from exc

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        try:
            return await self._client.get_inference_statistics(
                name or "", headers=self._headers, as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _map_error(exc, self.info.instance_id, "reading statistics") from exc

    async def model_ready(self, name: str, version: str = "") -> bool:
        try:
            return bool(await self._client.is_model_ready(name, version, headers=self._headers,
                                                          client_timeout=self.timeout_s))
        except InferenceServerException as exc:
            raise _map_error(exc, self.info.instance_id, f"asking whether {name} is ready") from exc

    async def served_models(self, confirm_ready: bool = True) -> list[ServedModel]:
        """Every model version in the statistics of all loaded models (Triton drops a model
        from them once unloaded), each confirmed by its own ready call unless
        ``confirm_ready`` is False. Both are trustworthy on Triton and the worker alike; the
        index is not (Triton lists only its repository directory's models, never those loaded
        with ``file:`` overrides, which is how the control plane loads)."""
        entries = (await self.statistics()).get("model_stats") or []
        rows = [(str(e["name"]), str(e.get("version") or "")) for e in entries]
        if confirm_ready:
            ready = await asyncio.gather(*(self.model_ready(n, v) for n, v in rows))
        else:
            ready = [True] * len(rows)
        return [ServedModel(n, v, reported_memory_bytes(e))
                for (n, v), e, ok in zip(rows, entries, ready, strict=True) if ok]

    async def infer_arrays(
        self, name: str, inputs: dict[str, np.ndarray], output_names: list[str] | None = None,
        timeout_s: float | None = None,
    ) -> InferTiming:
        from kserve.datatypes import numpy_to_v2

        tensors = []
        for in_name, arr in inputs.items():
            t = InferInput(in_name, list(arr.shape), numpy_to_v2(arr.dtype))
            t.set_data_from_numpy(arr)
            tensors.append(t)
        outputs = [InferRequestedOutput(n) for n in output_names] if output_names else None
        started = time.perf_counter()
        try:
            # timeout: Triton's request parameter (us); the worker stops the execution past it
            result = await self._client.infer(
                name, tensors, outputs=outputs, headers=self._headers, client_timeout=self.timeout_s,
                timeout=None if timeout_s is None else max(1, int(timeout_s * 1e6)))
        except InferenceServerException as exc:
            raise _map_error(exc, self.info.instance_id, f"running {name}") from exc
        elapsed = time.perf_counter() - started
        names = output_names or [o.name for o in result.get_response().outputs]
        return InferTiming({n: result.as_numpy(n) for n in names}, elapsed)

    # ---- gateway pass-through ---------------------------------------------------------

    async def infer_raw_grpc(self, request: service_pb2.ModelInferRequest,
                             timeout_s: float | None = None) -> service_pb2.ModelInferResponse:
        """Forward a ModelInferRequest whose model_name is already the instance-level name."""
        try:
            return await self._stub.ModelInfer(request, timeout=timeout_s or self.timeout_s,
                                               metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _map_error(exc, self.info.instance_id, f"running {request.model_name}") from exc

    async def infer_raw_http(self, qualified: str, version: str, body: bytes,
                             headers: Mapping[str, str], timeout_s: float | None = None,
                             exec_timeout_s: float | None = None) -> tuple[int, bytes, dict[str, str]]:
        """POST an uncompressed v2 infer body; returns (status, body, headers) as the
        instance sent them (lower-case header names). ``exec_timeout_s`` bounds the
        execution on the instance (inferplex workers stop it there)."""
        # names are URL-safe by construction (tenants.naming), so no quoting
        path = f"/v2/models/{qualified}" + (f"/versions/{version}" if version else "") + "/infer"
        fwd = {k: v for k in _HTTP_FORWARD if (v := headers.get(k)) is not None}
        if exec_timeout_s is not None:
            fwd[TIMEOUT_HEADER] = f"{exec_timeout_s * 1000:.3f}"
        try:
            status, out, out_headers = await self._hop.post(path, body, fwd, timeout_s or self.timeout_s)
        except HopError as exc:
            raise Unreachable(f"instance {self.info.instance_id} is unreachable while running "
                              f"{qualified}: {exc!r}", retry_after_s=1) from exc
        except TimeoutError as exc:
            raise Unavailable(f"instance {self.info.instance_id} did not answer in time while running "
                              f"{qualified}: {exc!r}", retry_after_s=1) from exc
        if status == 403 and _RESTRICTED.encode() in out:  # never pass the instance's refusal on
            raise _credential_refused(self.info.instance_id, f"running {qualified}",
                                      out.decode("utf-8", "replace"))
        return status, out, out_headers

    async def memory_report(self) -> dict[str, Any] | None:
        """An inferplex worker's ``GET /v2/inferplex/memory`` answer (budget, used, its local
        artifact cache); None from any other server or on failure."""
        try:
            resp = await self._http.get("/v2/inferplex/memory", timeout=2.0)
            if resp.status_code == 200:
                body = resp.json()
                return body if isinstance(body, dict) else None
        except (httpx.TransportError, ValueError):
            return None
        return None

    async def memory_used(self) -> int | None:
        """The embedded worker's own memory report, else a Triton's GPU memory in use from
        its metrics endpoint (when registered with one); None on a CPU-only Triton, whose
        metrics only give the whole machine's memory, which says nothing about its models."""
        try:
            resp = await self._http.get("/v2/inferplex/memory", timeout=2.0)
            if resp.status_code == 200:
                return int(resp.json()["used_bytes"])
            if self.info.metrics_url:
                resp = await self._http.get(self.info.metrics_url, timeout=2.0)
                if resp.status_code == 200:
                    return gpu_memory_used(resp.text)
        except (httpx.TransportError, ValueError, KeyError, TypeError):
            return None
        return None

    async def close(self) -> None:
        await self._http.aclose()
        self._hop.close()
        await self._channel.close()
        await self._client.close()

