"""Cross-request batching, the transport-neutral part: one caller's request read for
merging (``CallerRequest``), when two may share a batch (``merge_key``), how many rows
each brings (``rows``), and how a merged answer's outputs go back to each caller by rows.

A batch is one inference: the callers' inputs concatenated along dim 0 by their raw wire
bytes (JSON ``data`` and gRPC typed contents are converted to raw when a request is read),
one request to the instance asking for binary outputs, and every output split back by
rows. ``kserve.batching_http`` and ``kserve.batching_grpc`` do the wire forms; each
caller's answer is encoded by the codec the instance itself uses, so it is what the
instance would have answered that caller alone.

Reading a request refuses nothing: one that cannot be read cleanly (malformed JSON, an
input without a batch dimension, inputs whose rows disagree, data that does not fill its
shape, a request of a sequence) is not batchable, and ``read_http``/``read_grpc`` answer
None so that the gateway forwards it alone and the instance answers it with its own
error. Keys compare requests of one model version (one queue); whether a model batches at
all (``max_batch_size``) and how many rows fit are the scheduler's to decide.
Everything here is pure.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kserve.datatypes import element_size
from kserve.errors import InferplexError, Internal
from kserve.tensors import (
    TIMEOUT_PARAMETER,
    PendingRequest,
    RequestedOutput,
    Tensor,
    tensor_bytes,
    tensor_from_buffer,
)

# Triton's sequence batching: the requests of one sequence run in order, one at a time,
# on the model's state; such a request is never merged with others
SEQUENCE_PARAMETER = "sequence_id"

# Request parameters that change only the answer's form or when and in what order the work
# runs, never what the model computes: requests differing in them still share a batch.
# The gateway sets the batch's own timeout (its earliest deadline) and strips priority.
FORM_PARAMETERS = frozenset({"binary_data_output", TIMEOUT_PARAMETER, "priority"})

_U32 = struct.Struct("<I")

MergeKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class RawTensor:
    """A tensor in its raw wire form (binary tail slice, gRPC raw contents)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, Any]  # without binary_data_size: that is the wire's, not the tensor's
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class CallerRequest:
    """One caller's inference request, read once on arrival, ready to merge and to be
    answered from a merged result."""

    transport: str  # "http" or "grpc": a key never equals one of the other transport
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    inputs: tuple[RawTensor, ...]
    outputs: tuple[RequestedOutput, ...]  # () asks for all outputs
    binary_data_output: bool
    rows: int
    key: MergeKey


def merge_key(request: CallerRequest) -> MergeKey:
    """Equal keys: the requests may share a batch. They have the same inputs by name with
    the same datatypes, non-batch dims and parameters, the same requested outputs with the
    same parameters (binary_data aside: that is the answer's form), and the same request
    parameters (FORM_PARAMETERS aside)."""
    return request.key


def rows(request: CallerRequest) -> int:
    """The request's batch-dimension size: dim 0 of its inputs (they agree, or it was not
    read as batchable)."""
    return request.rows


def _frozen(value: Any) -> str:
    # JSON text, so that 1, 1.0 and true stay three different values (as tuples they are equal)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def caller_request(transport: str, pending: PendingRequest) -> CallerRequest | None:
    """A parsed request as a batch member, its inputs' data decoded (which checks it
    against its shape) and kept raw; None when it cannot be batched."""
    if pending.parameters.get(SEQUENCE_PARAMETER) not in (None, 0, ""):
        return None
    inputs: list[RawTensor] = []
    try:
        for header in pending.inputs:
            tensor = header.decode()
            inputs.append(RawTensor(tensor.name, tensor.datatype, tuple(tensor.shape),
                                    dict(tensor.parameters), tensor_bytes(tensor)))
    except InferplexError:
        return None
    if not inputs or any(not t.shape for t in inputs):
        return None
    count = inputs[0].shape[0]
    if count < 1 or any(t.shape[0] != count for t in inputs):
        return None
    outputs = tuple(pending.outputs)
    key = (
        transport,
        _frozen({k: v for k, v in pending.parameters.items() if k not in FORM_PARAMETERS}),
        tuple(sorted((t.name, t.datatype, t.shape[1:], _frozen(t.parameters)) for t in inputs)),
        tuple(sorted((o.name, _frozen(o.parameters)) for o in outputs)) if outputs else None,
    )
    return CallerRequest(transport, pending.model_name, pending.model_version, pending.id,
                         dict(pending.parameters), tuple(inputs), outputs,
                         pending.binary_data_output, count, key)


# ---- merging -------------------------------------------------------------------------


def check_mergeable(requests: Sequence[CallerRequest]) -> None:
    if not requests:
        raise Internal("a batch needs at least one request")
    key = requests[0].key
    if any(r.key != key for r in requests[1:]):
        raise Internal("requests with different merge keys were put in one batch; only requests "
                       "with equal merge_key may be merged")


def merged_inputs(requests: Sequence[CallerRequest]) -> list[RawTensor]:
    """The batch's inputs, in the first request's order: each input's data concatenated
    along dim 0 in the requests' order."""
    check_mergeable(requests)
    total = sum(r.rows for r in requests)
    by_name = [{t.name: t for t in r.inputs} for r in requests]
    merged = []
    for first in requests[0].inputs:
        data = b"".join([inputs[first.name].data for inputs in by_name])
        merged.append(RawTensor(first.name, first.datatype, (total, *first.shape[1:]),
                                first.parameters, data))
    return merged


def merged_parameters(requests: Sequence[CallerRequest], timeout_us: int | None) -> dict[str, Any]:
    """The batch's request parameters: those that change results (equal across the batch)
    and the batch's own timeout (microseconds) when given."""
    params = {k: v for k, v in requests[0].parameters.items() if k not in FORM_PARAMETERS}
    if timeout_us is not None:
        params[TIMEOUT_PARAMETER] = timeout_us
    return params


# ---- splitting -----------------------------------------------------------------------


def split_outputs(outputs: Sequence[RawTensor],
                  requests: Sequence[CallerRequest]) -> list[list[Tensor]]:
    """Each caller's outputs, cut by rows from the batch's: the ones it asked for in its
    order (all, in the answer's order, when it asked none). Raises Internal when the answer
    does not hold the rows and outputs the callers need."""
    cuts = [0]
    for r in requests:
        cuts.append(cuts[-1] + r.rows)
    by_name = {o.name: o for o in outputs}
    bounds = {o.name: _byte_bounds(o, cuts) for o in outputs}
    answers: list[list[Tensor]] = []
    for i, request in enumerate(requests):
        names = [o.name for o in request.outputs] or [o.name for o in outputs]
        tensors = []
        for name in names:
            out = by_name.get(name)
            if out is None:
                raise Internal(f"the instance's answer to a batch has no output '{name}', which "
                               "a request in it asked for")
            lo, hi = bounds[name][i], bounds[name][i + 1]
            shape = [request.rows, *out.shape[1:]]
            try:
                tensors.append(tensor_from_buffer(name, out.datatype, shape, out.data[lo:hi],
                                                  dict(out.parameters), "output"))
            except InferplexError as exc:
                raise Internal(f"the instance's answer to a batch is unreadable: {exc}") from exc
        answers.append(tensors)
    return answers


def _byte_bounds(out: RawTensor, cuts: list[int]) -> list[int]:
    """The byte offset in ``out.data`` of each row in ``cuts`` (ascending, from 0 to all rows)."""
    total = cuts[-1]
    if not out.shape or out.shape[0] != total:
        got = out.shape[0] if out.shape else "no"
        raise Internal(f"the instance answered output '{out.name}' of a batch with {got} rows "
                       f"(shape {list(out.shape)}) but the batch's requests sent {total}; "
                       "a batched model's outputs must keep the batch dimension")
    per_row = math.prod(out.shape[1:])
    size = element_size(out.datatype)
    if size is not None:
        row_bytes = per_row * size
        if len(out.data) != total * row_bytes:
            raise Internal(f"the instance answered output '{out.name}' of a batch with "
                           f"{len(out.data)} bytes, but {out.datatype} shape {list(out.shape)} "
                           f"takes {total * row_bytes}")
        return [c * row_bytes for c in cuts]
    return _bytes_row_bounds(out, per_row, cuts)


def _bytes_row_bounds(out: RawTensor, per_row: int, cuts: list[int]) -> list[int]:
    """Row bounds of a BYTES tensor by walking its 4-byte little-endian length prefixes."""
    data = out.data
    end = len(data)
    bounds = [0]
    off = 0
    row = 0
    for cut in cuts[1:]:
        for _ in range((cut - row) * per_row):
            if off + 4 > end:
                raise Internal(f"BYTES output '{out.name}' of a batch ends inside row {row} of "
                               f"{cuts[-1]}: its length prefixes and its shape disagree")
            (length,) = _U32.unpack_from(data, off)
            off += 4 + length
        if off > end:
            raise Internal(f"BYTES output '{out.name}' of a batch declares more bytes than it "
                           "holds: its length prefixes and its shape disagree")
        row = cut
        bounds.append(off)
    if off != end:
        raise Internal(f"BYTES output '{out.name}' of a batch has {end - off} bytes after its "
                       f"{cuts[-1]} rows: its length prefixes and its shape disagree")
    return bounds
