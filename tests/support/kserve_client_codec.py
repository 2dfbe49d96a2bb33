"""The client side of the KServe v2 codecs, for tests only: encode a request the way
a v2 client sends it and parse a server's response, over HTTP and over gRPC, with
the same tensor helpers the server side (``kserve.http_codec``, ``kserve.grpc_codec``)
uses. Production code only decodes requests and encodes responses."""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from kserve import grpc_codec, http_codec
from kserve.datatypes import numpy_to_v2
from kserve.errors import Internal, InvalidArgument
from kserve.tensors import InferRequest, InferResponse, Tensor, tensor_bytes


def tensor(name: str, array: np.ndarray, parameters: dict[str, Any] | None = None) -> Tensor:
    """A tensor of ``array`` with the v2 datatype of its dtype (``S``/``U`` become BYTES)."""
    datatype = numpy_to_v2(array.dtype)
    if datatype == "BYTES" and array.dtype.kind != "O":
        array = array.astype(np.object_)
    return Tensor(name, datatype, list(array.shape), array, dict(parameters or {}))


# ---------------------------------------------------------------- HTTP


def http_encode_infer_request(req: InferRequest, binary: bool = True) -> tuple[bytes, int | None]:
    """Body and header length for sending ``req`` to a v2 server."""
    entries, chunks = http_codec._encode_tensors(req.inputs, {}, binary)
    obj: dict[str, Any] = {}
    if req.id:
        obj["id"] = req.id
    if req.parameters:
        obj["parameters"] = req.parameters
    obj["inputs"] = entries
    if req.outputs:
        outs = []
        for o in req.outputs:
            params = dict(o.parameters)
            if o.binary_data is not None:
                params["binary_data"] = o.binary_data
            outs.append({"name": o.name, "parameters": params} if params else {"name": o.name})
        obj["outputs"] = outs
    return http_codec._body(obj, chunks)


def http_decode_infer_response(body: bytes, header_length: int | None) -> InferResponse:
    """Parse a v2 server's response; a malformed one is the server's fault (Internal)."""
    try:
        obj, tail = http_codec._split(body, header_length, "response")
        if "error" in obj and "outputs" not in obj:
            raise Internal(f"inference server answered with an error: {obj['error']}")
        outputs = http_codec._decode_tensors(obj.get("outputs", []), tail, header_length is not None, "output")
        return InferResponse(
            str(obj.get("model_name", "")),
            str(obj.get("model_version", "")),
            str(obj.get("id", "")),
            outputs,
            http_codec._params(obj.get("parameters"), "the response"),
        )
    except InvalidArgument as exc:
        raise Internal(f"inference server sent a malformed response: {exc.message}") from None


# ---------------------------------------------------------------- gRPC


def grpc_encode_infer_request(req: InferRequest) -> service_pb2.ModelInferRequest:
    msg = service_pb2.ModelInferRequest(
        model_name=req.model_name, model_version=req.model_version, id=req.id
    )
    grpc_codec.params_to_proto(req.parameters, msg.parameters)
    raws = []
    for t in req.inputs:
        grpc_codec._fill_tensor(msg.inputs.add(), t)
        raws.append(tensor_bytes(t))
    msg.raw_input_contents.extend(raws)
    for o in req.outputs:
        out = msg.outputs.add()
        out.name = o.name
        grpc_codec.params_to_proto(o.parameters, out.parameters)
    return msg


def grpc_decode_infer_response(resp: service_pb2.ModelInferResponse) -> InferResponse:
    """Parse a v2 server's response; a malformed one is the server's fault (Internal)."""
    try:
        outputs = grpc_codec._decode_tensors(
            resp.outputs, resp.raw_output_contents, "output", "raw_output_contents"
        )
    except InvalidArgument as exc:
        raise Internal(f"inference server sent a malformed response: {exc.message}") from None
    return InferResponse(
        resp.model_name, resp.model_version, resp.id, outputs,
        grpc_codec.proto_params_to_dict(resp.parameters),
    )
