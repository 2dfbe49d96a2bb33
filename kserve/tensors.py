"""Transport-neutral inference request/response types and the tensor checks both
transports share (shape, element count, byte size, BYTES serialization).

Conventions:
- ``Tensor.data`` always has ``data.shape == tuple(tensor.shape)``.
- Tensors decoded from binary wire data are zero-copy, read-only views into the
  request body (``np.frombuffer``); copy before writing into them. They start wherever
  the body put them: runtimes take inputs through ``kserve.alignment.aligned``.
- BYTES tensors are numpy ``object`` arrays of ``bytes``; the wire form is a
  4-byte little-endian length before each element, like tritonclient's
  ``serialize_byte_tensor``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kserve.datatypes import SUPPORTED, V2_TO_NUMPY, element_size, is_v2_datatype
from kserve.errors import InvalidArgument

_U32 = struct.Struct("<I")


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    binary_data: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


# Triton's request timeout parameter (microseconds). inferplex instances stop an execution
# past it (with the transport's deadline and their own --max-exec-time, whichever is first).
TIMEOUT_PARAMETER = "timeout"
# HTTP has no deadline of its own: the control plane sends the time left in this header
TIMEOUT_HEADER = "inferplex-timeout-ms"
# Response parameter of inferplex instances: compute_input + compute_infer + compute_output ns
# of the batch that served the request, the same numbers the statistics extension adds up.
# Triton sends none.
COMPUTE_NS_PARAMETER = "inferplex_compute_ns"


@dataclass
class _RequestFields:
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]

    @property
    def binary_data_output(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


@dataclass
class InferRequest(_RequestFields):
    inputs: list[Tensor]
    # [] means "all outputs"; request-level parameter binary_data_output applies to all.
    outputs: list[RequestedOutput]


@dataclass
class TensorHeader:
    """An input as its header says, checked against the body (shape, byte size); its data
    is decoded (and checked against the shape) only when ``decode`` is called."""

    name: str
    datatype: str
    shape: list[int]
    decode: Callable[[], Tensor]


@dataclass
class PendingRequest(_RequestFields):
    """A request whose inputs are still headers: a server checks them against its model
    before decoding their data, which can take many times the body (BYTES: an object per
    element)."""

    inputs: list[TensorHeader]
    outputs: list[RequestedOutput]

    def decode(self) -> InferRequest:
        return InferRequest(self.model_name, self.model_version, self.id, self.parameters,
                            [t.decode() for t in self.inputs], self.outputs)


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)


# numpy's own limit (NPY_MAXDIMS): no array of more dimensions can exist
MAX_DIMS = 64
# No tensor any server holds has more elements. It bounds what a zero-element shape may
# declare in its other dimensions: numpy refuses sizes past int64 with a ValueError.
MAX_SHAPE_ELEMENTS = 2**40


def check_header(
    name: Any, datatype: Any, shape: Any, what: str = "input", max_elements: int | None = None
) -> list[int]:
    """Validate a tensor's name, datatype and shape; return the shape as a list of ints.

    ``max_elements`` is the byte size of the whole request: every element takes at least
    one byte of it (a BYTES element four), so a shape with more elements is refused here,
    before anything is allocated for it."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"every {what} needs a non-empty string 'name'")
    if datatype is None:
        raise InvalidArgument(f"{what} '{name}' has no 'datatype'; give one of {SUPPORTED}")
    if not is_v2_datatype(datatype):  # Triton's words first, then what to send instead
        raise InvalidArgument(f"invalid datatype for {what} {name}: {datatype!r}; use one of {SUPPORTED}")
    if isinstance(shape, (list, tuple)) and len(shape) > MAX_DIMS:
        raise InvalidArgument(
            f"{what} '{name}' has {len(shape)} dimensions in its shape; at most {MAX_DIMS} "
            "are allowed"
        )
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidArgument(f"{what} '{name}' needs 'shape' as a list of integers, got {shape!r}")
    dims = list(shape)
    if any(d < 0 for d in dims):
        raise InvalidArgument(
            f"{what} '{name}' has a negative dimension in shape {dims}; "
            "every dimension must be >= 0 (no -1 wildcards in a request)"
        )
    if math.prod(d for d in dims if d) > MAX_SHAPE_ELEMENTS:
        raise InvalidArgument(
            f"{what} '{name}' has shape {dims}, too large for any tensor: its non-zero "
            f"dimensions must multiply to at most {MAX_SHAPE_ELEMENTS} (2**40) elements"
        )
    count = math.prod(dims)
    if max_elements is not None and count > max_elements:
        raise InvalidArgument(
            f"{what} '{name}' has shape {dims}, which is {count} elements, but the whole request "
            f"is {max_elements} bytes and every element takes at least one byte; send a shape "
            "that matches the data"
        )
    return dims


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def tensor_from_buffer(
    name: str,
    datatype: str,
    shape: list[int],
    buf: bytes | memoryview,
    parameters: dict[str, Any],
    what: str = "input",
) -> Tensor:
    """A tensor from its raw wire bytes; zero-copy for fixed-size datatypes."""
    count = element_count(shape)
    if datatype == "BYTES":
        data = deserialize_bytes(buf, count, name, what)
    else:
        size = element_size(datatype)
        assert size is not None
        expected = count * size
        if len(buf) != expected:
            raise InvalidArgument(
                f"unexpected total byte size {len(buf)} for {what} '{name}', expecting {expected}"
                f" ({datatype} shape {shape}: {count} elements of {size} bytes)"
            )
        data = np.frombuffer(buf, dtype=V2_TO_NUMPY[datatype])
    return Tensor(name, datatype, shape, data.reshape(shape), parameters)


def tensor_from_values(
    name: str,
    datatype: str,
    shape: list[int],
    values: Any,
    parameters: dict[str, Any],
    what: str = "input",
    source: str = "'data'",
) -> Tensor:
    """A tensor from explicit values: JSON ``data`` (possibly nested lists, row-major)
    or gRPC typed contents. Rejects values that would change meaning when cast."""
    count = element_count(shape)
    given = _leaf_count(values)
    if given is not None and given != count:
        raise _count_mismatch(given, count, shape, name, what, source)
    if datatype == "BYTES":
        data = _bytes_from_values(name, values, what, source)
    else:
        data = _numbers_from_values(name, datatype, values, what, source)
    if data.size != count:
        raise _count_mismatch(data.size, count, shape, name, what, source)
    return Tensor(name, datatype, shape, data.reshape(shape), parameters)


def _count_mismatch(
    given: int, count: int, shape: list[int], name: str, what: str, source: str
) -> InvalidArgument:
    return InvalidArgument(
        f"unexpected number of elements {given} in {source} for {what} '{name}', "
        f"expecting {count} (shape {shape})"
    )


def _leaf_count(values: Any) -> int | None:
    """How many values a (nested, row-major) list holds, read from the lengths of its
    lists alone so a mismatch is refused before any conversion; None when the lists are
    ragged or mixed, which the conversion refuses with its own message."""
    if not isinstance(values, (list, tuple)):
        return None
    level: list[Any] = [values]
    while True:
        if len({len(lst) for lst in level}) > 1:
            return None
        firsts = [lst[0] for lst in level if lst]
        if not firsts or not isinstance(firsts[0], (list, tuple)):
            return sum(len(lst) for lst in level)
        level = [item for lst in level for item in lst]
        if not all(isinstance(item, (list, tuple)) for item in level):
            return None


def _numbers_from_values(
    name: str, datatype: str, values: Any, what: str, source: str
) -> np.ndarray:
    dtype = V2_TO_NUMPY[datatype]
    try:
        raw = np.asarray(values)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InvalidArgument(
            f"{source} for {what} '{name}' is not a rectangular list of numbers: {exc}"
        ) from None
    raw = raw.reshape(-1)
    if raw.size == 0:
        return raw.astype(dtype)
    kind = raw.dtype.kind
    if datatype == "UINT64" and kind in "fO":
        # numpy infers float64 for ints >= 2**63 mixed with small ones; retry exactly.
        raw = _exact_uint64(values, raw, name, what, source)
        kind = raw.dtype.kind
    if datatype == "BOOL":
        ok = kind == "b"
        want = "true/false values"
    elif dtype.kind in "iu":
        ok = kind in "iub"
        want = "integers"
    else:
        ok = kind in "iubf"
        want = "numbers"
    if not ok:
        raise InvalidArgument(
            f"{source} for {what} '{name}' must hold {want} for datatype {datatype}, "
            f"got {_describe_kind(raw)}"
        )
    if dtype.kind in "iu" and kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = raw.min(), raw.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise InvalidArgument(
                f"value {bad} in {source} for {what} '{name}' is out of range for {datatype} "
                f"[{info.min}, {info.max}]"
            )
    return raw.astype(dtype, copy=False)


def _exact_uint64(values: Any, raw: np.ndarray, name: str, what: str, source: str) -> np.ndarray:
    try:
        items = np.asarray(values, dtype=np.object_).reshape(-1).tolist()
    except ValueError:
        return raw
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return raw
    try:
        return np.array(items, dtype=np.uint64)
    except OverflowError:
        raise InvalidArgument(
            f"a value in {source} for {what} '{name}' is out of range for UINT64 "
            f"[0, {np.iinfo(np.uint64).max}]"
        ) from None


def _describe_kind(arr: np.ndarray) -> str:
    if arr.dtype.kind == "O":
        return "mixed or nested values that are not all numbers"
    return {"U": "strings", "f": "floating-point numbers", "b": "booleans"}.get(
        arr.dtype.kind, str(arr.dtype)
    )


def _bytes_from_values(name: str, values: Any, what: str, source: str) -> np.ndarray:
    flat: list[bytes] = []
    stack = [iter(values if isinstance(values, (list, tuple)) else [values])]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, (list, tuple)):
            stack.append(iter(item))
        elif isinstance(item, str):
            flat.append(item.encode("utf-8"))
        elif isinstance(item, bytes):
            flat.append(item)
        else:
            raise InvalidArgument(
                f"{source} for BYTES {what} '{name}' must hold strings, got {item!r}"
            )
    out = np.empty(len(flat), dtype=np.object_)
    out[:] = flat
    return out


_END = object()


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor to its wire form: per element, a 4-byte LE length then the bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, bytes):
            b = item
        elif isinstance(item, str):
            b = item.encode("utf-8")
        elif isinstance(item, (bytearray, memoryview, np.bytes_)):
            b = bytes(item)
        else:
            b = str(item).encode("utf-8")  # tritonclient does the same for non-bytes objects
        parts.append(_U32.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(
    buf: bytes | memoryview, count: int, name: str, what: str = "input"
) -> np.ndarray:
    """Parse ``count`` length-prefixed elements that must fill ``buf`` exactly."""
    mv = memoryview(buf)
    total = len(mv)
    if count > total // _U32.size:
        # checked before the object array exists: it costs 8 bytes per declared element
        raise InvalidArgument(
            f"BYTES {what} '{name}' declares {count} elements but its {total} bytes of data "
            f"can hold at most {total // _U32.size} (each element is a 4-byte little-endian "
            "length followed by that many bytes); send a shape that matches the data"
        )
    out = np.empty(count, dtype=np.object_)
    off = 0
    for i in range(count):
        if off + 4 > total:
            raise InvalidArgument(
                f"BYTES {what} '{name}' holds only {i} of {count} elements: its data ends "
                "before the next 4-byte length prefix (each element is a 4-byte "
                "little-endian length followed by that many bytes)"
            )
        (length,) = _U32.unpack_from(mv, off)
        off += 4
        if off + length > total:
            raise InvalidArgument(
                f"BYTES {what} '{name}' element {i} declares {length} bytes but only "
                f"{total - off} remain in its data; check the 4-byte little-endian length prefixes"
            )
        out[i] = bytes(mv[off : off + length])
        off += length
    if off != total:
        raise InvalidArgument(
            f"BYTES {what} '{name}' has {total - off} bytes left after its {count} elements "
            f"(shape says {count}); the shape and the serialized data disagree"
        )
    return out


def tensor_bytes(tensor: Tensor) -> bytes:
    """The raw wire form of a tensor (binary HTTP tail, gRPC raw contents)."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    data = tensor.data
    want = V2_TO_NUMPY.get(tensor.datatype)
    if want is None:
        raise InvalidArgument(f"tensor '{tensor.name}' has unknown datatype {tensor.datatype!r}")
    if data.dtype != want:
        data = data.astype(want)
    return data.tobytes(order="C")
