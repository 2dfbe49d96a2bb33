"""KServe v2 gRPC inference messages (``tritonclient.grpc.service_pb2``) to and from
the transport-neutral types. Responses always use ``raw_output_contents``, like Triton."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from tritonclient.grpc import service_pb2

from kserve.errors import InvalidArgument
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

# Which InferTensorContents field carries each datatype; FP16 and BF16 have none.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_INT64_MAX = (1 << 63) - 1


def proto_params_to_dict(params: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` to plain python values."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(p, which)
    return out


def params_to_proto(params: dict[str, Any], target_map: Any) -> None:
    """Fill a ``map<string, InferParameter>`` from python values (bool, int, float, str)."""
    for key, value in params.items():
        p = target_map[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                p.uint64_param = value
            else:
                p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        elif isinstance(value, str):
            p.string_param = value
        else:
            del target_map[key]
            raise InvalidArgument(
                f"parameter '{key}' has unsupported type {type(value).__name__}; "
                "use bool, int, float or string"
            )


def _typed_contents(
    name: str, datatype: str, shape: list[int], contents: Any, params: dict[str, Any], what: str
) -> Tensor:
    field = _CONTENTS_FIELD.get(datatype)
    present = [f.name for f, _ in contents.ListFields()]
    if field is None:
        if present or math.prod(shape) != 0:
            raise InvalidArgument(
                f"{what} '{name}' has datatype {datatype}, which has no typed contents field; "
                "send it in raw_input_contents"
            )
    wrong = [f for f in present if f != field]
    if wrong:
        raise InvalidArgument(
            f"{what} '{name}' has datatype {datatype} but sends {', '.join(wrong)}; "
            f"use {field} or raw_input_contents"
        )
    repeated = getattr(contents, field) if field else []
    count = math.prod(shape)
    if len(repeated) != count:  # before copying the values out of the message
        raise InvalidArgument(
            f"unexpected number of elements {len(repeated)} in {field} for {what} '{name}', "
            f"expecting {count} (shape {shape})"
        )
    values = list(repeated)
    return tensor_from_values(
        name, datatype, shape, values, params, what, source=field or "contents"
    )


def _raw_tensor(
    raw: Any, i: int, name: str, datatype: str, shape: list[int], params: dict[str, Any], what: str
) -> Tensor:
    return tensor_from_buffer(name, datatype, shape, raw[i], params, what)  # raw[i] copies


def _decode_tensors(
    entries: Any, raw: Any, what: str, raw_field: str, message_bytes: int | None = None
) -> list[Tensor]:
    return [t.decode() for t in _tensor_headers(entries, raw, what, raw_field, message_bytes)]


def _tensor_headers(
    entries: Any, raw: Any, what: str, raw_field: str, message_bytes: int | None = None
) -> list[TensorHeader]:
    """Every check that needs no decoding: names, datatypes, shapes against the message's size."""
    if len(raw) and len(raw) != len(entries):
        raise InvalidArgument(
            f"{raw_field} has {len(raw)} entries but the message has {len(entries)} {what}s; "
            f"when {raw_field} is used, give one entry per {what}, in order"
        )
    tensors: list[TensorHeader] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.name
        shape = check_header(name, entry.datatype, list(entry.shape), what, message_bytes)
        if name in seen:
            raise InvalidArgument(f"{what} '{name}' appears more than once; give each {what} once")
        seen.add(name)
        params = proto_params_to_dict(entry.parameters)
        if "shared_memory_region" in params:
            raise InvalidArgument(
                f"{what} '{name}' uses shared memory, which inferplex does not support; "
                "send the tensor in the request"
            )
        if len(raw):
            if entry.HasField("contents") and entry.contents.ListFields():
                raise InvalidArgument(
                    f"{what} '{name}' has both typed contents and {raw_field}; send one of them"
                )
            decode = partial(_raw_tensor, raw, i, name, entry.datatype, shape, params, what)
        else:
            decode = partial(_typed_contents, name, entry.datatype, shape, entry.contents, params, what)
        tensors.append(TensorHeader(name, entry.datatype, shape, decode))
    return tensors


def decode_infer_request(req: service_pb2.ModelInferRequest) -> InferRequest:
    return parse_infer_request(req).decode()


def parse_infer_request(req: service_pb2.ModelInferRequest) -> PendingRequest:
    """The request with its inputs' data not yet decoded (``PendingRequest.decode``)."""
    inputs = _tensor_headers(
        req.inputs, req.raw_input_contents, "input", "raw_input_contents", req.ByteSize()
    )
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for o in req.outputs:
        if not o.name:
            raise InvalidArgument("every requested output needs a non-empty 'name'")
        if o.name in seen:
            raise InvalidArgument(f"output '{o.name}' is requested more than once")
        seen.add(o.name)
        params = proto_params_to_dict(o.parameters)
        binary = params.pop("binary_data", None)  # meaningless over gRPC; kept out of the way
        outputs.append(
            RequestedOutput(o.name, binary if isinstance(binary, bool) else None, params)
        )
    return PendingRequest(
        req.model_name,
        req.model_version,
        req.id,
        proto_params_to_dict(req.parameters),
        inputs,
        outputs,
    )


def _fill_tensor(msg: Any, t: Tensor) -> None:
    msg.name = t.name
    msg.datatype = t.datatype
    msg.shape.extend(t.shape)
    params_to_proto(
        {k: v for k, v in t.parameters.items() if k != "binary_data_size"}, msg.parameters
    )


def encode_infer_response(resp: InferResponse) -> service_pb2.ModelInferResponse:
    msg = service_pb2.ModelInferResponse(
        model_name=resp.model_name, model_version=resp.model_version, id=resp.id
    )
    params_to_proto(resp.parameters, msg.parameters)
    raws = []
    for t in resp.outputs:
        _fill_tensor(msg.outputs.add(), t)
        raws.append(tensor_bytes(t))
    msg.raw_output_contents.extend(raws)
    return msg


__all__ = [
    "decode_infer_request",
    "encode_infer_response",
    "parse_infer_request",
    "params_to_proto",
    "proto_params_to_dict",
]
