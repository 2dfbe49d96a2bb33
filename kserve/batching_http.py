"""Cross-request batching over KServe v2 HTTP (JSON with Triton's binary tensor data).

The merged request carries every input as binary data and asks for every output as
binary (``binary_data_output``), under the batch's own id; each caller's answer is
encoded by ``kserve.http_codec.encode_infer_response`` in the form it asked for (JSON
``data`` or binary, per its ``binary_data_output`` and outputs' ``binary_data``), with
its own id and the instance's model name, version and parameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from kserve import http_codec
from kserve.batching import (
    CallerRequest,
    RawTensor,
    caller_request,
    merged_inputs,
    merged_parameters,
    split_outputs,
)
from kserve.errors import InferplexError, Internal
from kserve.jsonbody import DEFAULT_JSON_BOUND, JsonBound
from kserve.tensors import InferResponse, tensor_bytes, tensor_from_values

HEADER_LENGTH = "inference-header-content-length"


class HttpAnswer(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]


def read_http(body: bytes, header_length: int | None,
              json_bound: JsonBound = DEFAULT_JSON_BOUND) -> CallerRequest | None:
    """A v2 HTTP infer request body as a batch member, or None when it cannot be batched
    (forward it alone: the instance answers it with its own error)."""
    try:
        pending = http_codec.parse_infer_request(body, header_length, "", "", json_bound)
    except InferplexError:
        return None
    return caller_request("http", pending)


def merge_http(requests: Sequence[CallerRequest], batch_id: str = "",
               timeout_us: int | None = None) -> tuple[bytes, dict[str, str]]:
    """One v2 request for the whole batch (requests of equal merge_key) and its headers."""
    inputs = merged_inputs(requests)
    params = merged_parameters(requests, timeout_us)
    params["binary_data_output"] = True
    obj: dict[str, Any] = {"id": batch_id} if batch_id else {}
    obj["parameters"] = params
    obj["inputs"] = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape),
         "parameters": {**t.parameters, "binary_data_size": len(t.data)}}
        for t in inputs
    ]
    if requests[0].outputs:  # equal keys: every request asks for the same outputs
        obj["outputs"] = [{"name": o.name, "parameters": {**o.parameters, "binary_data": True}}
                          for o in requests[0].outputs]
    header = json.dumps(obj, separators=(",", ":")).encode()
    body = b"".join([header, *(t.data for t in inputs)])
    return body, {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"}


def split_http(response_body: bytes, response_header_length: int | None,
               requests: Sequence[CallerRequest]) -> list[HttpAnswer]:
    """Each caller's answer to a merged request's 200 response, in the requests' order."""
    obj, outputs = _read_response(response_body, response_header_length)
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise Internal("the instance's answer to a batch has 'parameters' that are not an object")
    answers = []
    for request, tensors in zip(requests, split_outputs(outputs, requests), strict=True):
        resp = InferResponse(str(obj.get("model_name", "")), str(obj.get("model_version", "")),
                             request.id, tensors, dict(params))
        body, hlen = http_codec.encode_infer_response(resp, list(request.outputs),
                                                      request.binary_data_output)
        if hlen is None:
            answers.append(HttpAnswer(200, body, {"content-type": "application/json"}))
        else:
            answers.append(HttpAnswer(200, body, {"content-type": "application/octet-stream",
                                                  HEADER_LENGTH: str(hlen)}))
    return answers


def _read_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], list[RawTensor]]:
    split = len(body) if header_length is None else header_length
    if not 0 <= split <= len(body):
        raise Internal(f"the instance's answer to a batch declares a {split}-byte JSON part "
                       f"in a {len(body)}-byte body")
    try:
        obj = json.loads(body[:split])
        entries = obj["outputs"]
        tail = memoryview(body)[split:]
        outputs = []
        offset = 0
        for entry in entries:
            params = dict(entry.get("parameters") or {})
            size = params.pop("binary_data_size", None)
            name, datatype, shape = entry["name"], entry["datatype"], tuple(entry["shape"])
            if size is not None:
                data: bytes | memoryview = tail[offset:offset + size]
                offset += size
            else:  # an instance that answered JSON although asked for binary
                data = tensor_bytes(tensor_from_values(name, datatype, list(shape), entry["data"],
                                                       params, "output"))
            outputs.append(RawTensor(name, datatype, shape, params, data))
    except (ValueError, KeyError, TypeError, AttributeError, InferplexError) as exc:
        raise Internal(f"the instance's answer to a batch is unreadable: {exc!r}") from exc
    if offset != len(tail):
        raise Internal(f"the instance's answer to a batch has {len(tail)} bytes of binary data "
                       f"but its outputs declare {offset}")
    return obj, outputs
