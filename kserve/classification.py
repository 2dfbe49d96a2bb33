"""Triton's classification extension: a requested output with the parameter
``classification: N`` is answered as its top N classes per batch row instead of its values.

Each class is a BYTES string ``"<value>:<index>"`` (``":<label>"`` follows where the model
has labels; inferplex models have none), highest value first, ties by lower index; the
value is written as C's ``std::to_string`` writes it (``%f`` for FP32/FP64, decimal for
integers), so the strings are Triton's byte for byte. The answer has shape ``[batch, N]``
for a batching model (the classes of a row are its values flattened) and ``[N]`` for one
that does not batch (the classes are the whole output flattened). Pure: the worker calls
it; the control plane passes the parameter through and merges only requests that ask for
the same classes of the same outputs (kserve.batching's key holds output parameters).

Where inferplex refuses what Triton lets through (a count of 0 over HTTP, more classes
than the output has, an output with nothing to rank), it does so on purpose: those ask
for something the answer cannot be, and Triton's answers to them differ between its two
transports (tests/integration/test_edges_c_classification.py lists each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kserve.errors import InvalidArgument
from kserve.tensors import RequestedOutput

CLASSIFICATION_PARAMETER = "classification"
# the datatypes Triton ranks (TopkClassifications); FP16, BF16, BOOL and BYTES it refuses
CLASSIFIABLE = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64")


def requested_classes(outputs: Sequence[RequestedOutput]) -> dict[str, int]:
    """Each requested output's class count, by name (outputs asked without one are absent)."""
    counts: dict[str, int] = {}
    for out in outputs:
        if CLASSIFICATION_PARAMETER not in out.parameters:
            continue
        value = out.parameters[CLASSIFICATION_PARAMETER]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidArgument(
                f"invalid value for 'classification' parameter of output '{out.name}': {value!r}; it "
                "must be a positive integer, the number of top classes to return (leave the "
                "parameter out to get the output's values)"
            )
        counts[out.name] = value
    return counts


def check_classifiable(name: str, datatype: str, dims: Sequence[int], count: int, batched: bool) -> None:
    """Refuse, before anything runs, classification of an output that cannot give ``count``
    classes: ``dims`` are its dimensions without the batch one (-1: variable, checked
    again on the answer by ``classify``)."""
    if datatype not in CLASSIFIABLE:
        raise InvalidArgument(
            f"class result not available for output due to unsupported type '{datatype}': "  # Triton's words
            f"output '{name}' cannot be ranked; classification takes outputs of type "
            f"{', '.join(CLASSIFIABLE)}"
        )
    if not dims:
        raise InvalidArgument(
            f"output '{name}' has no class dimension (one value per {'batch row' if batched else 'request'}), "
            "so it has no classes to rank; ask for it without 'classification'"
        )
    if all(d >= 0 for d in dims):
        _check_count(name, math.prod(dims), count, batched)


def _check_count(name: str, classes: int, count: int, batched: bool) -> None:
    if count > classes:
        raise InvalidArgument(
            f"'classification' asks for the top {count} classes of output '{name}', but it has "
            f"{classes} per {'batch row' if batched else 'request'}; ask for at most {classes}"
        )


def classify(name: str, values: np.ndarray, count: int, batched: bool) -> np.ndarray:
    """The top ``count`` classes of ``values`` (an output as the model answered it) as
    Triton's strings: a BYTES (object) array of shape [batch, count], or [count]."""
    if batched and values.ndim == 0:
        raise InvalidArgument(f"output '{name}' has no batch dimension, so it has no classes to rank")
    rows = values.reshape(values.shape[0], -1) if batched else values.reshape(1, -1)
    _check_count(name, rows.shape[1], count, batched)
    text = _float_text if values.dtype.kind == "f" else _int_text
    out = np.empty((rows.shape[0], count), dtype=np.object_)
    for r, row in enumerate(rows):
        for k, index in enumerate(_descending(row)[:count]):
            out[r, k] = f"{text(row[index])}:{index}".encode()
    return out if batched else out.reshape(count)


def _descending(row: np.ndarray) -> np.ndarray:
    """Indexes by value, highest first and equal values by lower index: a stable ascending
    sort of the reversed row, read backwards (no negation, which wraps unsigned values)."""
    last = row.size - 1
    return last - np.argsort(row[::-1], kind="stable")[::-1]


def _float_text(value: np.floating) -> str:
    return f"{float(value):f}"  # std::to_string(float|double): C's %f


def _int_text(value: np.integer) -> str:
    return str(int(value))
