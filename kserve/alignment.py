"""Where a runtime's input tensors start in memory, and copies that start where they should.

A tensor decoded from the wire is a view wherever it lay in the body or frame
(kserve.tensors); the model hosts' frames are laid out aligned (worker.sandbox.wire) and
the runtimes take every input through ``aligned``, so a model's answer does not depend on
the sizes or order of the other inputs, or on the transport that carried them.
"""

from __future__ import annotations

import numpy as np

# Where a runtime's inputs start. ONNX Runtime's vectorised reductions (Eigen's) sum from
# the first address aligned to their vector width, element by element before it, and not
# vectorised at all on data that is not aligned to its element: the same values at two
# addresses give two sums, different in their last bits. 64 bytes is every vector width
# (AVX-512's included), so an input at a multiple of it is summed the same way wherever
# it came from.
TENSOR_ALIGNMENT = 64


def aligned_empty(nbytes: int, alignment: int = TENSOR_ALIGNMENT) -> np.ndarray:
    """``nbytes`` uninitialised bytes (a uint8 array) starting at a multiple of ``alignment``."""
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes]


def is_aligned(array: np.ndarray, alignment: int = TENSOR_ALIGNMENT) -> bool:
    return array.flags.c_contiguous and array.ctypes.data % alignment == 0


def aligned(array: np.ndarray, writable: bool = False, alignment: int = TENSOR_ALIGNMENT) -> np.ndarray:
    """``array`` itself when it is C-contiguous and starts at a multiple of ``alignment``
    (and is writable, when asked), else a copy that is. BYTES (object) arrays hold
    pointers, not values, and are returned as they are."""
    if array.dtype.hasobject or (is_aligned(array, alignment) and (array.flags.writeable or not writable)):
        return array
    out = aligned_empty(array.nbytes, alignment).view(array.dtype).reshape(array.shape)
    np.copyto(out, array)
    return out
