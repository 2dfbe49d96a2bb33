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
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def check_request(spec: ModelSpec, request: InferRequest | PendingRequest) -> CheckedRequest:
    """The request's inputs and outputs for this model; a pending request's data is decoded
    once its headers fit the model."""
    output_names, batch_size = check_headers(spec, request)
    decoded = request.decode() if isinstance(request, PendingRequest) else request
    return CheckedRequest({t.name: t.data for t in decoded.inputs}, output_names, batch_size)


def check_headers(spec: ModelSpec, request: InferRequest | PendingRequest) -> tuple[list[str], int]:
    """The output names and batch size, from names, datatypes and shapes alone."""
    model = spec.name
    inputs: set[str] = set()
    matched: list[tuple[Tensor | TensorHeader, TensorSpec]] = []
    # the decoders already refused a name given twice
    for tensor in request.inputs:
        expected = spec.input(tensor.name)
        if expected is None:
            raise InvalidArgument(f"unexpected inference input '{tensor.name}' for model '{model}'")
        if tensor.datatype != expected.datatype:
            raise InvalidArgument(
                f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
                f"'{model}' expects '{expected.datatype}'"
            )
        inputs.add(tensor.name)
        matched.append((tensor, expected))
    if len(inputs) != len(spec.inputs):
        got = [t.name for t in request.inputs]
        missing = [t.name for t in spec.inputs if t.name not in inputs]
        raise InvalidArgument(
            f"expected {len(spec.inputs)} inputs but got {len(inputs)} inputs for model '{model}'. "
            f"Got input(s) {_names_text(got)}, but missing required input(s) {_names_text(missing)}. "
            "Please provide all required input(s)."
        )

    batch_size = 1
    batch_of: str | None = None
    for tensor, expected in matched:
        want = expected.full_shape(spec.max_batch_size)
        shape = list(tensor.shape)
        if len(shape) != len(want) or any(w != -1 and w != g for w, g in zip(want, shape, strict=False)):
            note = (" The model batches: prepend the batch dimension to the input shape"
                    if spec.max_batch_size > 0 else "")
            raise InvalidArgument(
                f"unexpected shape for input '{tensor.name}' for model '{model}'. Expected "
                f"{_shape_text(want)}, got {_shape_text(shape)}.{note}"
            )
        if spec.max_batch_size > 0:
            if batch_of is None:
                batch_size, batch_of = shape[0], tensor.name
            elif shape[0] != batch_size:
                raise InvalidArgument(
                    f"input '{tensor.name}' batch size does not match other inputs for '{model}': "
                    f"{shape[0]} vs {batch_size} for '{batch_of}'"
                )
    if spec.max_batch_size > 0 and not 1 <= batch_size <= spec.max_batch_size:
        raise InvalidArgument(
            f"inference request batch-size must be <= {spec.max_batch_size} for '{model}' "
            f"and at least 1, got {batch_size}"
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
