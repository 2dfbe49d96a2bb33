"""KServe v2 tensor datatypes and their numpy and Triton model-config equivalents.

BF16 maps to ``ml_dtypes.bfloat16`` (a tritonclient dependency), the same numpy
dtype unmodified tritonclient produces from ``as_numpy`` and accepts in
``set_data_from_numpy``; its raw wire form is 2 bytes per element, little-endian.
BYTES maps to numpy ``object`` arrays whose elements are ``bytes``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kserve.errors import InvalidArgument

V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(np.object_),
}

# Wire order is little-endian; numpy's native order on every platform we run on.
_NUMPY_TO_V2: dict[np.dtype, str] = {dt: v2 for v2, dt in V2_TO_NUMPY.items()}

_ELEMENT_SIZE: dict[str, int | None] = {
    v2: (None if v2 == "BYTES" else dt.itemsize) for v2, dt in V2_TO_NUMPY.items()
}

_CONFIG_NAMES: dict[str, str] = {v2: f"TYPE_{v2}" for v2 in V2_TO_NUMPY}
_CONFIG_NAMES["BYTES"] = "TYPE_STRING"
_CONFIG_TO_V2: dict[str, str] = {cfg: v2 for v2, cfg in _CONFIG_NAMES.items()}

SUPPORTED = ", ".join(V2_TO_NUMPY)


def is_v2_datatype(v2: object) -> bool:
    return isinstance(v2, str) and v2 in V2_TO_NUMPY


def numpy_to_v2(dtype: np.dtype) -> str:
    """The v2 datatype for a numpy dtype; ``S`` (fixed bytes) and ``object`` are BYTES."""
    dt = np.dtype(dtype)
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    v2 = _NUMPY_TO_V2.get(dt)  # a big-endian dtype does not match: it is not wire order
    if v2 is None:
        raise InvalidArgument(f"numpy dtype {dt} has no KServe v2 datatype; use one of {SUPPORTED}")
    return v2


def config_type_to_v2(t: str) -> str:
    """``"TYPE_FP32"`` (a model_config DataType name) to ``"FP32"``."""
    v2 = _CONFIG_TO_V2.get(t)
    if v2 is None:
        raise InvalidArgument(
            f"unknown model config data type {t!r}; use one of {', '.join(_CONFIG_TO_V2)}"
        )
    return v2


def v2_to_config_type(v2: str) -> str:
    """``"FP32"`` to ``"TYPE_FP32"``; BYTES is ``TYPE_STRING`` in Triton's model config."""
    cfg = _CONFIG_NAMES.get(v2)
    if cfg is None:
        raise InvalidArgument(f"unknown datatype {v2!r}; use one of {SUPPORTED}")
    return cfg


def element_size(v2: str) -> int | None:
    """Bytes per element on the wire; None for BYTES (variable length)."""
    if v2 not in _ELEMENT_SIZE:
        raise InvalidArgument(f"unknown datatype {v2!r}; use one of {SUPPORTED}")
    return _ELEMENT_SIZE[v2]
