"""How the load driver talks v2: unmodified tritonclient asyncio clients, or raw httpx.

A transport prepares a request once (tensors encoded ahead of its send time) and then
sends it; the answer comes back as ``(status, message)``: ``"200"`` or an HTTP error
status, or a gRPC code as tritonclient names it. Anything that is not an answer from
the server (refused connection, reset) is raised.

Only loopback targets are allowed: a load generator pointed at someone else's
address is an attack, not a benchmark.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from kserve.errors import InvalidArgument

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_MESSAGE_CHARS = 200


class ClientKind(enum.Enum):
    """Which client sends a stream's requests."""

    HTTP = "http"  # tritonclient.http.aio, binary tensors
    GRPC = "grpc"  # tritonclient.grpc.aio
    # raw httpx POSTs of the body tritonclient.http would send; httpx costs far more CPU per
    # request (one pinned core: late past ~400 req/s, where tritonclient keeps 2,000 on time)
    HTTPX = "httpx"
    # aiohttp POSTs of the single input tensor's raw bytes (float32, C order) to the URL's path,
    # ``{model}`` replaced by the model's name there and in header values: the peers benchmark's
    # client for systems that do not speak v2 (TorchServe's /predictions/{model}, a Ray Serve app)
    BYTES = "bytes"


def loopback_address(url: str) -> str:
    """``host:port`` of a loopback URL (``127.0.0.1:8000``, ``http://localhost:8000``,
    ``[::1]:8001``); anything else is refused with what is allowed."""
    text = url if "://" in url else f"http://{url}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidArgument(f"cannot read the address {url!r}: {exc}; write it as 127.0.0.1:8000") from None
    if parts.scheme != "http":
        raise InvalidArgument(f"address {url!r}: only plain http:// (or no scheme) on loopback is supported")
    if host not in LOOPBACK_HOSTS:
        raise InvalidArgument(f"refusing to send load to {url!r}: only loopback targets "
                              f"({', '.join(sorted(LOOPBACK_HOSTS))}) are allowed")
    if port is None:
        raise InvalidArgument(f"address {url!r} has no port: write it as {host}:8000")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Transport(Protocol):
    def prepare(self, model: str, inputs: Mapping[str, np.ndarray], headers: Mapping[str, str],
                outputs: Sequence[str] | None) -> Any: ...

    async def send(self, prepared: Any) -> tuple[str, str]: ...

    async def close(self) -> None: ...


def _message(text: object) -> str:
    return str(text)[:_MESSAGE_CHARS]


def _http_inputs(module: Any, inputs: Mapping[str, np.ndarray]) -> list[Any]:
    out = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=True)
        out.append(tensor)
    return out


def _answer(exc: InferenceServerException) -> tuple[str, str]:
    """A tritonclient exception that is an answer from the server, or re-raise it."""
    status = exc.status()
    if status is None:
        raise exc
    message = exc.message() or ""
    # gRPC reports a refused connection as UNAVAILABLE, the same code as an infeasible request
    if status == "StatusCode.UNAVAILABLE" and ("failed to connect" in message.lower()
                                               or "connection refused" in message.lower()):
        raise ConnectionError(message)
    return status, _message(message)


class TritonHttp:
    """tritonclient.http.aio with a pool as large as the driver's bound: a smaller pool would
    queue requests inside aiohttp, hiding closed-loop waiting inside an open-loop driver."""

    def __init__(self, address: str, max_in_flight: int, timeout_s: float) -> None:
        self._client = httpaio.InferenceServerClient(address, conn_limit=max_in_flight, conn_timeout=timeout_s)

    def prepare(self, model: str, inputs: Mapping[str, np.ndarray], headers: Mapping[str, str],
                outputs: Sequence[str] | None) -> Any:
        outs = None if outputs is None else [httpaio.InferRequestedOutput(o, binary_data=True) for o in outputs]
        return model, _http_inputs(httpaio, inputs), outs, dict(headers)

    async def send(self, prepared: Any) -> tuple[str, str]:
        model, inputs, outputs, headers = prepared
        try:  # tritonclient adds its own entries to the headers dict it is given
            await self._client.infer(model, inputs, outputs=outputs, headers=dict(headers))
        except InferenceServerException as exc:
            return _answer(exc)
        return "200", ""

    async def close(self) -> None:
        await self._client.close()


class TritonGrpc:
    """tritonclient.grpc.aio over one channel (HTTP/2 multiplexes every call on it). No gRPC
    deadline is set: the service reads a client's deadline as a tighter SLO, and the driver's
    own timeout cancels the call (the service sees the caller leave)."""

    def __init__(self, address: str, max_in_flight: int, timeout_s: float) -> None:
        self._client = grpcaio.InferenceServerClient(address)

    def prepare(self, model: str, inputs: Mapping[str, np.ndarray], headers: Mapping[str, str],
                outputs: Sequence[str] | None) -> Any:
        tensors = []
        for name, array in inputs.items():
            tensor = grpcaio.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        outs = None if outputs is None else [grpcaio.InferRequestedOutput(o) for o in outputs]
        return model, tensors, outs, dict(headers)

    async def send(self, prepared: Any) -> tuple[str, str]:
        model, inputs, outputs, headers = prepared
        try:
            await self._client.infer(model, inputs, outputs=outputs, headers=headers)
        except InferenceServerException as exc:
            return _answer(exc)
        return "StatusCode.OK", ""

    async def close(self) -> None:
        await self._client.close()


class RawHttpx:
    """httpx POSTs of exactly the body tritonclient.http builds (binary tensor extension)."""

    def __init__(self, address: str, max_in_flight: int, timeout_s: float) -> None:
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        self._client = httpx.AsyncClient(base_url=f"http://{address}", limits=limits,
                                         timeout=httpx.Timeout(timeout_s, pool=timeout_s))

    def prepare(self, model: str, inputs: Mapping[str, np.ndarray], headers: Mapping[str, str],
                outputs: Sequence[str] | None) -> Any:
        outs = None if outputs is None else [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs]
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            _http_inputs(httpclient, inputs), outputs=outs)
        sent_headers = dict(headers)
        if json_size is not None:
            sent_headers["Inference-Header-Content-Length"] = str(json_size)
        return f"/v2/models/{model}/infer", body, sent_headers

    async def send(self, prepared: Any) -> tuple[str, str]:
        path, body, headers = prepared
        response = await self._client.post(path, content=body, headers=headers)
        if response.status_code == 200:
            return "200", ""
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        return str(response.status_code), _message(message)

    async def close(self) -> None:
        await self._client.aclose()


class RawBytes:
    """aiohttp POSTs of one tensor's bytes to ``path`` (``{model}`` filled in per request):
    aiohttp, as tritonclient.http.aio uses, keeps a pinned core's ceiling near tritonclient's."""

    def __init__(self, address: str, max_in_flight: int, timeout_s: float, path: str = "/") -> None:
        self._base = f"http://{address}"
        self._path = path or "/"
        self._limit, self._timeout_s = max_in_flight, timeout_s
        self._session: Any = None

    def prepare(self, model: str, inputs: Mapping[str, np.ndarray], headers: Mapping[str, str],
                outputs: Sequence[str] | None) -> Any:
        if len(inputs) != 1:
            raise InvalidArgument(f"a raw-bytes request carries one tensor; {model!r} was given {len(inputs)}")
        body = np.ascontiguousarray(next(iter(inputs.values())), dtype="<f4").tobytes()
        sent = {k: v.replace("{model}", model) for k, v in headers.items()}
        sent.setdefault("content-type", "application/octet-stream")
        return self._base + self._path.replace("{model}", model), body, sent

    async def send(self, prepared: Any) -> tuple[str, str]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        url, body, headers = prepared
        async with self._session.post(url, data=body, headers=headers) as response:
            text = await response.read()
            if response.status == 200:
                return "200", ""
            return str(response.status), _message(text.decode(errors="replace"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


_TRANSPORTS: dict[ClientKind, type[TritonHttp] | type[TritonGrpc] | type[RawHttpx]] = {
    ClientKind.HTTP: TritonHttp, ClientKind.GRPC: TritonGrpc, ClientKind.HTTPX: RawHttpx}


def open_transport(protocol: ClientKind, url: str, max_in_flight: int, timeout_s: float) -> Transport:
    """A client for one target; the address is checked to be loopback here too. A BYTES
    client posts to the URL's path (``127.0.0.1:8080/predictions/{model}``)."""
    address = loopback_address(url)
    if protocol is ClientKind.BYTES:
        return RawBytes(address, max_in_flight, timeout_s, urlsplit(url if "://" in url else f"http://{url}").path)
    return _TRANSPORTS[protocol](address, max_in_flight, timeout_s)
