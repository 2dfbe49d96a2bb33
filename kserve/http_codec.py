"""KServe v2 HTTP/REST inference bodies, with Triton's binary tensor data extension.

A body is a JSON object, optionally followed by a binary tail; the JSON part is
``Inference-Header-Content-Length`` bytes long. Each tensor carries either JSON
``data`` or ``parameters.binary_data_size``, and binary tensors take consecutive
slices of the tail in the order they appear in the JSON.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np

from kserve.errors import InvalidArgument
from kserve.jsonbody import DEFAULT_JSON_BOUND, JsonBound
from kserve.tensors import (
    InferRequest,
    InferResponse,
    PendingRequest,
    RequestedOutput,
    Tensor,
    TensorHeader,
    check_header,
    tensor_bytes,
    tensor_from_buffer,
    tensor_from_values,
)

_WIRE_PARAMS = ("binary_data_size",)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _split(body: bytes, header_length: int | None, what: str,
           json_bound: JsonBound = DEFAULT_JSON_BOUND) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        header, tail = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length is {header_length} but the {what} body is "
                f"{len(body)} bytes; it must be the byte length of the JSON part"
            )
        header, tail = body[:header_length], memoryview(body)[header_length:]
    json_bound.check(header, what)
    try:
        obj = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = (
            "; if the body carries binary tensor data, set Inference-Header-Content-Length"
            if header_length is None
            else ""
        )
        raise InvalidArgument(f"failed to parse the {what} JSON buffer: {exc}{hint}") from None  # Triton's words
    if not isinstance(obj, dict):
        raise InvalidArgument(f"the {what} JSON must be an object, got {type(obj).__name__}")
    return obj, tail


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"'parameters' of {where} must be a JSON object")
    return value


def _decode_tensors(
    entries: Any, tail: memoryview, have_header_length: bool, what: str,
    body_bytes: int | None = None,
) -> list[Tensor]:
    return [t.decode() for t in _tensor_headers(entries, tail, have_header_length, what, body_bytes)]


def _tensor_headers(
    entries: Any, tail: memoryview, have_header_length: bool, what: str,
    body_bytes: int | None = None,
) -> list[TensorHeader]:
    """Every check that needs no decoding: names, datatypes, shapes against the body's size,
    binary_data_size against the binary part."""
    key = f"{what}s"
    if not isinstance(entries, list):
        raise InvalidArgument(f"'{key}' must be a list of tensors")
    tensors: list[TensorHeader] = []
    seen: set[str] = set()
    offset = 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidArgument(f"each entry of '{key}' must be a JSON object")
        name = entry.get("name")
        shape = check_header(name, entry.get("datatype"), entry.get("shape"), what, body_bytes)
        datatype = entry["datatype"]
        if name in seen:
            raise InvalidArgument(f"{what} '{name}' appears more than once; give each {what} once")
        seen.add(name)
        params = _params(entry.get("parameters"), f"{what} '{name}'")
        if "shared_memory_region" in params:
            raise InvalidArgument(
                f"{what} '{name}' uses shared memory, which inferplex does not support; "
                "send the tensor in the request body"
            )
        size = params.get("binary_data_size")
        has_data = "data" in entry
        if size is not None:
            if has_data:
                raise InvalidArgument(
                    f"{what} '{name}' has both 'data' and binary_data_size; send one of them"
                )
            if not have_header_length:
                raise InvalidArgument(
                    f"{what} '{name}' has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header giving the JSON length"
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(
                    f"binary_data_size of {what} '{name}' must be a non-negative integer, got {size!r}"
                )
            if offset + size > len(tail):
                raise InvalidArgument(
                    f"{what} '{name}' declares binary_data_size {size} at offset {offset} but "
                    f"only {len(tail) - offset} bytes of binary data remain"
                )
            rest = {k: v for k, v in params.items() if k not in _WIRE_PARAMS}
            decode = partial(tensor_from_buffer, name, datatype, shape,
                             tail[offset : offset + size], rest, what)
            offset += size
        elif has_data:
            decode = partial(tensor_from_values, name, datatype, shape, entry["data"], params, what)
        else:
            raise InvalidArgument(
                f"{what} '{name}' has neither 'data' nor parameters.binary_data_size; "
                "send the tensor values one of these ways"
            )
        tensors.append(TensorHeader(name, datatype, shape, decode))
    if offset != len(tail):
        raise InvalidArgument(
            f"unexpected additional binary data: the body has {len(tail)} bytes after the JSON "
            f"but the {key} declare {offset}; check binary_data_size and "
            "Inference-Header-Content-Length"
        )
    return tensors


def _decode_outputs(entries: Any) -> list[RequestedOutput]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidArgument("'outputs' must be a list of requested outputs")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidArgument("every requested output needs a non-empty string 'name'")
        if name in seen:
            raise InvalidArgument(f"output '{name}' is requested more than once")
        seen.add(name)
        params = dict(_params(entry.get("parameters"), f"output '{name}'"))
        if "shared_memory_region" in params:
            raise InvalidArgument(
                f"output '{name}' asks for shared memory, which inferplex does not support"
            )
        binary = params.pop("binary_data", None)
        if binary is not None and not isinstance(binary, bool):
            raise InvalidArgument(f"binary_data of output '{name}' must be true or false")
        outputs.append(RequestedOutput(name, binary, params))
    return outputs


def decode_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str,
    json_bound: JsonBound = DEFAULT_JSON_BOUND,
) -> InferRequest:
    return parse_infer_request(body, header_length, model_name, model_version, json_bound).decode()


def parse_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str,
    json_bound: JsonBound = DEFAULT_JSON_BOUND,
) -> PendingRequest:
    """The request with its inputs' data not yet decoded (``PendingRequest.decode``)."""
    obj, tail = _split(body, header_length, "request", json_bound)
    request_id = obj.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' must be a string")
    params = _params(obj.get("parameters"), "the request")
    if "inputs" not in obj:
        raise InvalidArgument("the request has no 'inputs'; send a list of input tensors")
    inputs = _tensor_headers(obj["inputs"], tail, header_length is not None, "input", len(body))
    outputs = _decode_outputs(obj.get("outputs"))
    return PendingRequest(model_name, model_version, request_id, params, inputs, outputs)


def _json_values(tensor: Tensor) -> list[Any] | None:
    """Row-major JSON values, or None when the tensor can only travel as binary."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
        except UnicodeDecodeError:
            return None
    if tensor.datatype == "BF16":
        return flat.astype(np.float32).tolist()
    return flat.tolist()


def _encode_tensors(
    tensors: list[Tensor], binary_of: dict[str, bool], default_binary: bool
) -> tuple[list[dict[str, Any]], list[bytes]]:
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for t in tensors:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        params = {k: v for k, v in t.parameters.items() if k not in _WIRE_PARAMS}
        values = None if binary_of.get(t.name, default_binary) else _json_values(t)
        if values is None:
            raw = tensor_bytes(t)
            params["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = values
        if params:
            entry["parameters"] = params
        entries.append(entry)
    return entries, chunks


def _body(obj: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, int | None]:
    header = _dumps(obj)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def encode_infer_response(
    resp: InferResponse, outputs: list[RequestedOutput], default_binary: bool = False
) -> tuple[bytes, int | None]:
    """Body and JSON header length (None without a binary part). An output goes binary
    if its RequestedOutput says so, else per ``default_binary`` (the request-level
    binary_data_output); BYTES that are not UTF-8 always go binary."""
    binary_of = {o.name: o.binary_data for o in outputs if o.binary_data is not None}
    entries, chunks = _encode_tensors(resp.outputs, binary_of, default_binary)
    obj: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version}
    if resp.id:
        obj["id"] = resp.id
    if resp.parameters:
        obj["parameters"] = resp.parameters
    obj["outputs"] = entries
    return _body(obj, chunks)


def encode_error(message: str) -> bytes:
    return _dumps({"error": message})
