"""Checks an inference request against the model it names, in Triton's words
(clients and tests match on them). Pure: no I/O, unit-tested directly. The worker checks
every request it runs; the control plane checks a request's headers on arrival, before
admission or batching (a request the model cannot take is refused with the instance's
own words, never queued).

Names, datatypes and shapes are checked before any input's data is decoded: a request
the model cannot take costs no more than its body, however its data would decode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kserve.errors import InvalidArgument
from kserve.tensors import InferRequest, PendingRequest, Tensor, TensorHeader
from modelfiles.config import ModelSpec, TensorSpec


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    inputs: dict[str, np.ndarray]
    output_names: list[str]
    batch_size: int


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _names_text(names: list[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"  # Triton's spacing: ['A','B']


# Triton's advice after a shape error of a batching model (clients see it verbatim)
BATCH_DIM_NOTE = (
    " NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
    "prepended to each input shape. If you want to specify the full shape including the batch dim in "
    "your input dims config, try setting max_batch_size to zero. See the model configuration docs for "
    "more info on max_batch_size."
)


def request_error(request: InferRequest | PendingRequest, message: str) -> InvalidArgument:
    """An error of the checks Triton's core makes on a request: it names the request's id."""
    return InvalidArgument(f"[request id: {request.id or '<id_unknown>'}] {message}")


def check_request(spec: ModelSpec, request: InferRequest | PendingRequest) -> CheckedRequest:
    """The request's inputs and outputs for this model; a pending request's data is decoded
    once its headers fit the model."""
    output_names, batch_size = check_headers(spec, request)
    decoded = request.decode() if isinstance(request, PendingRequest) else request
    return CheckedRequest({t.name: t.data for t in decoded.inputs}, output_names, batch_size)


def check_headers(spec: ModelSpec, request: InferRequest | PendingRequest) -> tuple[list[str], int]:
    """The output names and batch size, from names, datatypes and shapes alone, checked in
    Triton's order (names, datatypes, inputs present, batch size, shapes): the first error a
    request hits is the one Triton would report."""
    model = spec.name
    inputs: set[str] = set()
    matched: list[tuple[Tensor | TensorHeader, TensorSpec]] = []
    # the decoders already refused a name given twice
    for tensor in request.inputs:
        expected = spec.input(tensor.name)
        if expected is None:
            raise InvalidArgument(f"unexpected inference input '{tensor.name}' for model '{model}'")
        if tensor.datatype != expected.datatype:
            raise request_error(
                request, f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
                f"'{model}' expects '{expected.datatype}'"
            )
        inputs.add(tensor.name)
        matched.append((tensor, expected))
    if len(inputs) != len(spec.inputs):
        got = [t.name for t in request.inputs]
        missing = [t.name for t in spec.inputs if t.name not in inputs]
        raise request_error(
            request, f"expected {len(spec.inputs)} inputs but got {len(inputs)} inputs for model '{model}'. "
            f"Got input(s) {_names_text(got)}, but missing required input(s) {_names_text(missing)}. "
            "Please provide all required input(s)."
        )
    # Triton visits the inputs in reverse of the request's order (its map's iteration): of
    # two bad inputs, the one it names is the last given
    matched.reverse()
    batch_size = _batch_size(spec, request, matched)
    for tensor, expected in matched:
        want = expected.full_shape(spec.max_batch_size)
        shape = list(tensor.shape)
        if len(shape) != len(want) or any(w != -1 and w != g for w, g in zip(want, shape, strict=False)):
            note = BATCH_DIM_NOTE if spec.max_batch_size > 0 else ""
            raise request_error(
                request, f"unexpected shape for input '{tensor.name}' for model '{model}'. Expected "
                f"{_shape_text(want)}, got {_shape_text(shape)}.{note}"
            )
    if request.outputs:
        names = []
        for out in request.outputs:
            if spec.output(out.name) is None:
                raise InvalidArgument(f"unexpected inference output '{out.name}' for model '{model}'")
            names.append(out.name)
    else:
        names = [t.name for t in spec.outputs]
    return names, batch_size


def _batch_size(spec: ModelSpec, request: InferRequest | PendingRequest,
                matched: list[tuple[Tensor | TensorHeader, TensorSpec]]) -> int:
    """The batch every input's first dimension gives (1 for a model that does not batch)."""
    if spec.max_batch_size <= 0:
        return 1
    batch_size: int | None = None
    batch_of = ""
    for tensor, _ in matched:
        if not tensor.shape:
            raise request_error(request, f"input '{tensor.name}' has no shape but model requires "
                                         f"batch dimension for '{spec.name}'")
        if batch_size is None:
            batch_size, batch_of = tensor.shape[0], tensor.name
        elif tensor.shape[0] != batch_size:
            raise request_error(
                request, f"input '{tensor.name}' batch size does not match other inputs for '{spec.name}': "
                f"{tensor.shape[0]} vs {batch_size} for '{batch_of}'"
            )
    if batch_size is None:  # a model without inputs
        return 1
    if not 1 <= batch_size <= spec.max_batch_size:
        raise request_error(
            request, f"inference request batch-size must be <= {spec.max_batch_size} for '{spec.name}' "
            f"and at least 1, got {batch_size}"
        )
    return batch_size
