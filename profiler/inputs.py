"""A model's inputs as profiling sees them: specs from its config, the sizes to measure
it at, and synthetic inputs of those shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kserve.datatypes import V2_TO_NUMPY
from kserve.errors import InvalidArgument
from profiler.profile import request_elements

DYNAMIC_SIZES = (1, 8, 32, 128)
"""Values every dynamic (-1) dimension takes when profiling: a sequence of one token up
to a typical sentence-embedding request's 128."""
MAX_PROFILE_ELEMENTS = 1 << 18
"""At most this many input elements in one profiling execution above the dynamic dims'
smallest (1 MiB of FP32): it runs on an instance that may serve tenants meanwhile, and a
point that large is reached by the curve's conservative extrapolation instead."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int, ...]  # without the batch dimension; dynamic dims already set to 1
    dynamic: tuple[int, ...] = ()  # indices into dims of those the config leaves -1

    def shape(self, batch: int, batched: bool, size: int = 1) -> tuple[int, ...]:
        """The input's shape for ``batch`` rows with every dynamic dim at ``size``."""
        dims = tuple(size if i in self.dynamic else d for i, d in enumerate(self.dims))
        return ((batch,) if batched else ()) + dims


def has_dynamic_dims(specs: list[InputSpec]) -> bool:
    return any(s.dynamic for s in specs)


def execution_elements(specs: list[InputSpec], batch: int, batched: bool, size: int = 1) -> int:
    """Input elements of one execution (``profile.request_elements``), as the gateway
    counts a request's."""
    return request_elements(s.shape(batch, batched, size) for s in specs)


def dynamic_sizes(specs: list[InputSpec], batch: int, batched: bool,
                  sizes: Sequence[int] = DYNAMIC_SIZES,
                  max_elements: int = MAX_PROFILE_ELEMENTS) -> list[int]:
    """Values of the dynamic dims to profile ``batch`` at: 1 always (what profiling
    measured before sizes, and what ``ClassProfile.exec`` holds), the others of ``sizes``
    while one execution stays within ``max_elements``; [1] without dynamic dims."""
    if not has_dynamic_dims(specs):
        return [1]
    return [1] + sorted(v for v in set(sizes)
                        if v > 1 and execution_elements(specs, batch, batched, v) <= max_elements)


def input_specs(config: dict[str, Any]) -> list[InputSpec]:
    """The model's inputs from a Triton model config (JSON form)."""
    inputs = config.get("input")
    if not inputs:
        raise InvalidArgument("model config has no 'input' list; profiling needs each input's "
                              "name, data_type and dims")
    specs = []
    for i, inp in enumerate(inputs):
        name = inp.get("name")
        # a model-config data type, with or without the TYPE_ prefix; STRING is BYTES
        raw_type = str(inp.get("data_type", "")).removeprefix("TYPE_")
        dtype = V2_TO_NUMPY.get("BYTES" if raw_type == "STRING" else raw_type)
        if not name or dtype is None:
            known = ["TYPE_" + t for t in V2_TO_NUMPY if t != "BYTES"] + ["TYPE_STRING"]
            raise InvalidArgument(
                f"model config input {i} needs a 'name' and a 'data_type' among "
                f"{', '.join(known)}; got {inp!r}")
        try:
            raw_dims = [int(d) for d in inp.get("dims", [])]
        except (TypeError, ValueError):
            raise InvalidArgument(f"model config input {name!r} has non-integer dims "
                                  f"{inp.get('dims')!r}") from None
        dims = tuple(max(1, d) for d in raw_dims)  # dynamic (-1) → 1
        specs.append(InputSpec(name=name, dtype=dtype, dims=dims,
                               dynamic=tuple(i for i, d in enumerate(raw_dims) if d < 0)))
    return specs


def max_batch_size(config: dict[str, Any]) -> int:
    return int(config.get("max_batch_size", 0) or 0)


def default_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch`` (included even if not a power of two)."""
    if max_batch <= 1:
        return [1]
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def synthetic_inputs(specs: list[InputSpec], batch: int, batched: bool,
                     rng: np.random.Generator, *, exercise: bool = False,
                     size: int = 1) -> dict[str, np.ndarray]:
    """Inputs of the right dtype and shape, every dynamic dim at ``size``. Integers are zeros because they are
    often indices (embeddings), where random values could be out of range; with
    ``exercise`` they are large random values instead (up to EXERCISE_INT_MAX), the
    inputs a hostile tenant would send to make a graph loop or allocate (a Loop's trip
    count, a shape) — a model that merely rejects them is fine, one that runs past its
    time limit on them is not."""
    out: dict[str, np.ndarray] = {}
    for s in specs:
        shape = s.shape(batch, batched, size)
        if s.dtype == np.object_:
            arr = np.full(shape, b"inferplex" * (64 if exercise else 1), dtype=np.object_)
        elif s.dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(s.dtype)
        elif exercise and s.dtype.kind == "b":
            arr = np.ones(shape, dtype=s.dtype)
        elif exercise:
            high = min(int(np.iinfo(s.dtype).max), EXERCISE_INT_MAX)
            arr = rng.integers(high // 2, high, size=shape, endpoint=True).astype(s.dtype)
        else:
            arr = np.zeros(shape, dtype=s.dtype)
        out[s.name] = arr
    return out


EXERCISE_INT_MAX = 1 << 24
