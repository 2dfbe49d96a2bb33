"""Model file validation before an upload is accepted.

This process never parses a tenant's file: one confined child (``worker.sandbox.probe``,
time and memory limited, no files, sockets or processes once it has read the upload)
decides the format by content, verifies the program (``modelfiles.verify``), runs
``onnx.checker``, loads the model in its runtime and reports what it found. Here the
report is merged with what the tenant declared. A hostile file (a native crash, a
memory bomb, a hang, a parse that takes seconds) costs a child, not the control plane
and the other tenants' requests it serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, field_validator

from kserve.datatypes import SUPPORTED, is_v2_datatype
from kserve.errors import InvalidArgument, Unavailable
from modelfiles.config import TensorSpec as ConfigTensor
from modelfiles.config import parse_tenant_config
from modelfiles.verify import tensor_bound

log = logging.getLogger(__name__)

ModelFormat = Literal["onnx", "torchscript"]
Platform = Literal["onnxruntime_onnx", "pytorch_libtorch"]

PLATFORM: dict[ModelFormat, tuple[Platform, str]] = {
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "torchscript": ("pytorch_libtorch", "model.pt"),
}

# Used when the tenant gives no max_batch_size and every ONNX tensor has a dynamic
# first dimension (Triton's own autocomplete does the same, with 4: inferplex batches
# across requests itself, where a larger batch pays off more often).
DEFAULT_MAX_BATCH_SIZE = 8
MAX_BATCH_SIZE_RULE = (
    f"Default when not given (neither max_batch_size nor a config's): {DEFAULT_MAX_BATCH_SIZE} for an ONNX "
    "model whose inputs and outputs all have a dynamic first dimension (that dimension is the batch), "
    "0 (no batching) when any has a fixed one; 0 for TorchScript, whose file states no shapes: give "
    "max_batch_size=N to batch it (its dims then leave out the batch dimension)."
)

_SPEC_EXAMPLE = '[{"name": "INPUT__0", "datatype": "FP32", "dims": [64]}]'


class TensorSpec(BaseModel):
    """One input or output as a tenant declares it and the instances see it (v2 datatype;
    ``dims`` without the batch dimension when max_batch_size > 0; -1 = any size)."""

    name: str
    datatype: str
    dims: list[int]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or len(v) > 128:
            raise ValueError("tensor name must be 1-128 characters")
        return v

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, v: str) -> str:
        if not is_v2_datatype(v):
            raise ValueError(f"unknown datatype {v!r}; use one of {SUPPORTED}")
        return v

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if any(d < -1 for d in v):
            raise ValueError(f"dims {v}: each dimension is a size >= 0, or -1 for any size")
        return v


@dataclass(frozen=True, slots=True)
class ValidatedModel:
    format: ModelFormat
    platform: Platform
    filename: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


# --------------------------------------------------------------------------- ONNX


def _strip_batch(specs: list[TensorSpec], max_batch_size: int | None) -> tuple[int, list[TensorSpec]]:
    """Triton's convention: with max_batch_size > 0 the first (dynamic) dimension is the
    batch and is left out of the config's dims."""
    batchable = all(s.dims and s.dims[0] == -1 for s in specs)
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable else 0
    if max_batch_size > 0:
        for s in specs:
            if not s.dims or s.dims[0] != -1:
                raise InvalidArgument(
                    f"max_batch_size={max_batch_size} needs a dynamic first (batch) dimension on every "
                    f"input and output, but {s.name!r} has shape {s.dims}: send max_batch_size=0"
                )
        specs = [TensorSpec(name=s.name, datatype=s.datatype, dims=s.dims[1:]) for s in specs]
    return max_batch_size, specs


def _merge(kind: str, found: list[TensorSpec], declared: list[TensorSpec] | None) -> list[TensorSpec]:
    """The declared specs if they match the file (names, datatypes, compatible dims), with
    each -1 filled in from whichever side knows the size."""
    if declared is None:
        return found
    by_name = {s.name: s for s in found}
    declared_names = [s.name for s in declared]
    if sorted(declared_names) != sorted(by_name):
        raise InvalidArgument(
            f"declared {kind} {declared_names} do not match the model file's {kind} {list(by_name)}: "
            f"declare exactly the file's {kind} (or leave {kind} out to infer them)"
        )
    merged = []
    for d in declared:
        f = by_name[d.name]
        if d.datatype != f.datatype:
            raise InvalidArgument(
                f"{kind[:-1]} {d.name!r}: declared datatype {d.datatype} but the model file has "
                f"{f.datatype}"
            )
        if len(d.dims) != len(f.dims) or any(a != b and -1 not in (a, b) for a, b in zip(d.dims, f.dims, strict=True)):
            raise InvalidArgument(
                f"{kind[:-1]} {d.name!r}: declared dims {d.dims} are incompatible with the model "
                f"file's {f.dims} (without the batch dimension when max_batch_size > 0)"
            )
        merged.append(TensorSpec(name=d.name, datatype=d.datatype,
                                 dims=[b if a == -1 else a for a, b in zip(d.dims, f.dims, strict=True)]))
    return merged


def check_onnx(found_in: list[TensorSpec], found_out: list[TensorSpec], *,
               inputs: list[TensorSpec] | None, outputs: list[TensorSpec] | None,
               max_batch_size: int | None) -> ValidatedModel:
    """The ONNX graph's inputs and outputs (as the probe found them) merged with the
    tenant's declarations and batch size."""
    n_in = len(found_in)
    mbs, stripped = _strip_batch(found_in + found_out, max_batch_size)
    platform, filename = PLATFORM["onnx"]
    return ValidatedModel(
        format="onnx", platform=platform, filename=filename, max_batch_size=mbs,
        inputs=_merge("inputs", stripped[:n_in], inputs),
        outputs=_merge("outputs", stripped[n_in:], outputs),
    )


# --------------------------------------------------------------------------- TorchScript


@dataclass(frozen=True, slots=True)
class TorchScriptSignature:
    args: list[tuple[str, str]]
    returns: list[str]

    def output_count(self) -> int | None:
        """Tensor outputs forward returns, when its return type says so."""
        if len(self.returns) != 1:
            return None
        ret = self.returns[0]
        if ret == "Tensor":
            return 1
        if ret.startswith("Tuple[") and ret.endswith("]"):
            items = [t.strip() for t in ret[len("Tuple["):-1].split(",")]
            return len(items) if all(t == "Tensor" for t in items) else None
        return None


def check_torchscript(sig: TorchScriptSignature, *, inputs: list[TensorSpec] | None,
                      outputs: list[TensorSpec] | None, max_batch_size: int | None) -> ValidatedModel:
    """TorchScript carries no datatypes or shapes, so the tenant declares them; the counts
    must match forward's signature."""
    if inputs is None or outputs is None:
        missing = " and ".join(k for k, v in (("inputs", inputs), ("outputs", outputs)) if v is None)
        raise InvalidArgument(
            f"TorchScript models need declared {missing} (datatypes and shapes cannot be read from "
            f"the file): send e.g. inputs={_SPEC_EXAMPLE} and outputs likewise; forward takes "
            f"{[name for name, _ in sig.args]}"
        )
    non_tensor = [f"{n}: {t}" for n, t in sig.args if t != "Tensor"]
    if non_tensor:
        raise InvalidArgument(
            f"forward takes non-tensor arguments {non_tensor}: only Tensor arguments can be served"
        )
    if len(inputs) != len(sig.args):
        raise InvalidArgument(
            f"declared {len(inputs)} inputs but forward takes {len(sig.args)} tensors "
            f"{[name for name, _ in sig.args]}: declare one input per argument, in order"
        )
    n_out = sig.output_count()
    if n_out is not None and len(outputs) != n_out:
        raise InvalidArgument(
            f"declared {len(outputs)} outputs but forward returns {sig.returns[0]}: declare {n_out}"
        )
    for kind, specs in (("inputs", inputs), ("outputs", outputs)):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"duplicate names in declared {kind}: {names}")
    platform, filename = PLATFORM["torchscript"]
    return ValidatedModel(format="torchscript", platform=platform, filename=filename,
                          max_batch_size=max_batch_size or 0, inputs=list(inputs), outputs=list(outputs))


# Triton's model config holds max_batch_size as an int32; a bigger value is accepted here
# but refused by every instance at load time
MAX_BATCH_SIZE_LIMIT = 2**31 - 1


# --------------------------------------------------------------------------- the probe

PROBE_TIMEOUT_S = 60.0


def probe_memory_extra(size: int) -> int:
    """Address space the probe may map beyond its runtime's own: the file, its parsed
    form and the runtime's copy, several times over, and room for the checks."""
    return (1 << 30) + 6 * size


async def probe_model(path: Path, *, name: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Run ``python -m worker.sandbox.probe`` on the file and return its report (see there);
    raises the child's error, or InvalidArgument when it died, hung or ran out of memory.
    A probe killed by a signal is run once more: the CI machine saw the probe of a valid model
    die by SIGSEGV now and then under load; a model that crashes it twice is refused."""
    try:
        return await _probe_once(path, name=name, timeout_s=timeout_s)
    except _ProbeCrashed:
        log.warning("the probe for %r died by a signal; running it once more", name)
    try:
        return await _probe_once(path, name=name, timeout_s=timeout_s)
    except _ProbeCrashed as exc:
        raise exc.refusal from None


class _ProbeCrashed(Exception):
    def __init__(self, refusal: InvalidArgument) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


async def _probe_once(path: Path, *, name: str, timeout_s: float) -> dict[str, Any]:
    size = os.stat(path).st_size  # one metadata call; not worth a thread
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.sandbox.probe", str(path), "--name", name,
        "--memory-extra", str(probe_memory_extra(size)), "--max-tensor-bytes", str(tensor_bound(size)),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        raise InvalidArgument(f"checking the model took over {timeout_s:.0f}s: upload a smaller model") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave the child behind
            proc.kill()
            await proc.wait()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        errors = [ln for ln in err.decode(errors="replace").strip().splitlines() if ln.strip()]
        detail = errors[-1][:500] if errors else f"exit status {proc.returncode}"
        log.warning("model probe for %r failed: %s", name, detail)
        refusal = InvalidArgument(
            "the model file could not be checked (its check stopped: it may need more memory than "
            "an upload may use, or crash the runtime): upload a valid ONNX or TorchScript model"
        )
        if proc.returncode is not None and proc.returncode < 0:  # killed by a signal
            raise _ProbeCrashed(refusal)
        raise refusal
    report: dict[str, Any] = json.loads(lines[-1])
    if "error" in report:
        error = Unavailable if report.get("status") == "Unavailable" else InvalidArgument
        raise error(report["error"])
    return report


@dataclass(frozen=True, slots=True)
class DeclaredConfig:
    """What a tenant's Triton model config (``config=``) declares, as upload options."""

    name: str
    platform: str  # "" when not stated
    max_batch_size: int | None
    inputs: list[TensorSpec] | None
    outputs: list[TensorSpec] | None


def declared_config(text: str) -> DeclaredConfig:
    """Read a tenant's ``config.pbtxt`` text or its JSON form (``modelfiles.config``'s strict
    subset); InvalidArgument saying what to fix."""
    config = parse_tenant_config(text)

    def specs(items: tuple[ConfigTensor, ...] | None) -> list[TensorSpec] | None:
        if items is None:
            return None
        return [TensorSpec(name=t.name, datatype=t.datatype, dims=list(t.dims)) for t in items]

    return DeclaredConfig(config.name, config.platform, config.max_batch_size, specs(config.inputs),
                          specs(config.outputs))


async def validate_model(path: Path, *, inputs: list[TensorSpec] | None, outputs: list[TensorSpec] | None,
                         max_batch_size: int | None, name: str = "model",
                         platform: str = "") -> ValidatedModel:
    """Everything an upload must pass before it is stored; raises InvalidArgument saying what
    to fix. ``name`` is the tenant's name for the model, for the messages; ``platform``, when
    given (a tenant's config), must be the file's."""
    if max_batch_size is not None and not 0 <= max_batch_size <= MAX_BATCH_SIZE_LIMIT:
        raise InvalidArgument(f"max_batch_size must be between 0 and {MAX_BATCH_SIZE_LIMIT}, got {max_batch_size}")
    report = await probe_model(path, name=name)
    found = PLATFORM[report["format"]][0]
    if platform and platform != found:
        raise InvalidArgument(f"the config says platform '{platform}' but the file is a {report['format']} "
                              f"model ('{found}'): fix the config's platform/backend, or leave it out")
    if report["format"] == "onnx":
        found_in = [TensorSpec(**t) for t in report["inputs"]]
        found_out = [TensorSpec(**t) for t in report["outputs"]]
        return check_onnx(found_in, found_out, inputs=inputs, outputs=outputs, max_batch_size=max_batch_size)
    sig = TorchScriptSignature(args=[(a, t) for a, t in report["args"]], returns=report["returns"])
    return check_torchscript(sig, inputs=inputs, outputs=outputs, max_batch_size=max_batch_size)
