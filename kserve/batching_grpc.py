"""Cross-request batching over KServe v2 gRPC (``tritonclient.grpc.service_pb2``).

The merged request carries every input in ``raw_input_contents`` (typed contents are
converted when a request is read) under the batch's own id; each caller's answer is
encoded by ``kserve.grpc_codec.encode_infer_response`` (raw outputs, like Triton) with
only the outputs it asked for and its own id.
"""

from __future__ import annotations

from collections.abc import Sequence

from tritonclient.grpc import service_pb2

from kserve import grpc_codec
from kserve.batching import (
    CallerRequest,
    RawTensor,
    caller_request,
    merged_inputs,
    merged_parameters,
    split_outputs,
)
from kserve.errors import InferplexError, Internal
from kserve.tensors import InferResponse


def read_grpc(request: service_pb2.ModelInferRequest) -> CallerRequest | None:
    """A ModelInferRequest as a batch member, or None when it cannot be batched (forward
    it alone: the instance answers it with its own error)."""
    try:
        pending = grpc_codec.parse_infer_request(request)
    except InferplexError:
        return None
    return caller_request("grpc", pending)


def merge_grpc(requests: Sequence[CallerRequest], batch_id: str = "",
               timeout_us: int | None = None) -> service_pb2.ModelInferRequest:
    """One ModelInferRequest for the whole batch (requests of equal merge_key)."""
    inputs = merged_inputs(requests)
    first = requests[0]
    msg = service_pb2.ModelInferRequest(model_name=first.model_name,
                                        model_version=first.model_version, id=batch_id)
    grpc_codec.params_to_proto(merged_parameters(requests, timeout_us), msg.parameters)
    for t in inputs:
        entry = msg.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        grpc_codec.params_to_proto(t.parameters, entry.parameters)
    msg.raw_input_contents.extend([bytes(t.data) for t in inputs])
    for o in first.outputs:  # equal keys: every request asks for the same outputs
        grpc_codec.params_to_proto(o.parameters, msg.outputs.add(name=o.name).parameters)
    return msg


def split_grpc(response: service_pb2.ModelInferResponse,
               requests: Sequence[CallerRequest]) -> list[service_pb2.ModelInferResponse]:
    """Each caller's answer to a merged request's response, in the requests' order."""
    raw = response.raw_output_contents
    if len(raw) != len(response.outputs):
        raise Internal(f"the instance's answer to a batch has {len(response.outputs)} outputs but "
                       f"{len(raw)} raw_output_contents; batches need raw outputs, one per output")
    outputs = [
        RawTensor(o.name, o.datatype, tuple(o.shape), grpc_codec.proto_params_to_dict(o.parameters),
                  memoryview(raw[i]))  # one copy out of the message; the cuts are views
        for i, o in enumerate(response.outputs)
    ]
    params = grpc_codec.proto_params_to_dict(response.parameters)
    return [
        grpc_codec.encode_infer_response(InferResponse(
            response.model_name, response.model_version, request.id, tensors, dict(params)))
        for request, tensors in zip(requests, split_outputs(outputs, requests), strict=True)
    ]
