"""Model file validation before an upload is accepted.

The format is decided by content, never by file name. ONNX files are parsed,
checked with ``onnx.checker`` and their inputs/outputs inferred; TorchScript
archives are loaded with ``torch.jit.load`` in a child process (time and memory
limited) so a hostile file cannot take the control plane down. Nothing here
unpickles: a plain pickle or a ``torch.save``'d state_dict is refused by looking
at its bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from pydantic import BaseModel, field_validator

from kserve.datatypes import SUPPORTED, config_type_to_v2, is_v2_datatype
from kserve.errors import InvalidArgument
from worker.config import GraphTensor, onnx_graph_io
from worker.runtimes.safety import archive_kind

log = logging.getLogger(__name__)

ModelFormat = Literal["onnx", "torchscript"]
Platform = Literal["onnxruntime_onnx", "pytorch_libtorch"]

PLATFORM: dict[ModelFormat, tuple[Platform, str]] = {
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "torchscript": ("pytorch_libtorch", "model.pt"),
}

# Used when the tenant gives no max_batch_size and every ONNX tensor has a dynamic
# first dimension (Triton's own autocomplete does the same, with 4).
DEFAULT_MAX_BATCH_SIZE = 8

UNKNOWN_FORMAT = "unknown model format: upload an ONNX (.onnx) or TorchScript (.pt) file"
NOT_TORCHSCRIPT = (
    "not a TorchScript archive: export with torch.jit.script or torch.jit.trace and save with "
    "torch.jit.save"
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


# --------------------------------------------------------------------------- format by content


def sniff_format(path: Path) -> ModelFormat:
    """TorchScript if the file is a TorchScript zip, ONNX candidate otherwise; refuses
    pickles and torch.save archives outright (their bytes are never unpickled)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise InvalidArgument("empty upload: send the model file's bytes")
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode: plain pickle or legacy torch.save
        raise InvalidArgument(NOT_TORCHSCRIPT)
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise InvalidArgument(f"{UNKNOWN_FORMAT} (a damaged zip archive: {exc})") from None
        kind = archive_kind(names)
        if kind == "torchscript":
            return "torchscript"
        raise InvalidArgument(NOT_TORCHSCRIPT if kind == "state_dict" else UNKNOWN_FORMAT)
    return "onnx"


# --------------------------------------------------------------------------- ONNX


def _graph_tensors(graph: onnx.GraphProto):  # -> Iterator[onnx.TensorProto]
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def _onnx_specs(graph: onnx.GraphProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers left out) and outputs, in v2 terms."""
    values = {vi.name: vi for vi in (*graph.input, *graph.output)}

    def spec(t: GraphTensor) -> TensorSpec:
        value_type = values[t.name].type
        if not value_type.HasField("tensor_type"):
            raise InvalidArgument(
                f"model tensor {t.name!r} is not a tensor (sequence/map/optional): only tensor "
                "inputs and outputs are served"
            )
        if t.config_type is None:
            elem_type = value_type.tensor_type.elem_type
            name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "UNDEFINED"
            raise InvalidArgument(
                f"tensor {t.name!r} has ONNX element type {name}, which has no KServe v2 datatype; "
                f"use one of {SUPPORTED}"
            )
        return TensorSpec(name=t.name, datatype=config_type_to_v2(t.config_type), dims=list(t.shape))

    inputs, outputs = onnx_graph_io(graph)
    return [spec(t) for t in inputs], [spec(t) for t in outputs]


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check one self-contained ONNX file, or raise InvalidArgument saying why."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InvalidArgument(f"{UNKNOWN_FORMAT} (not parseable as an ONNX model: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise InvalidArgument(f"{UNKNOWN_FORMAT} (no ONNX graph found in the file)")
    for tensor in _graph_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise InvalidArgument(
                f"ONNX tensor {tensor.name!r} uses external data: upload one self-contained file "
                "(save with onnx.save_model(model, path, save_as_external_data=False))"
            )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # checker raises ValidationError, and C++ errors as others
        raise InvalidArgument(f"ONNX checker refused the model: {str(exc).strip()[:500]}") from None
    return model


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


def validate_onnx(path: Path, *, inputs: list[TensorSpec] | None, outputs: list[TensorSpec] | None,
                  max_batch_size: int | None) -> ValidatedModel:
    """Synchronous and CPU-bound: callers run it off the event loop."""
    model = load_onnx(path)
    found_in, found_out = _onnx_specs(model.graph)
    if not found_in or not found_out:
        raise InvalidArgument("the ONNX graph needs at least one input and one output")
    n_in = len(found_in)
    mbs, stripped = _strip_batch(found_in + found_out, max_batch_size)
    platform, filename = PLATFORM["onnx"]
    return ValidatedModel(
        format="onnx", platform=platform, filename=filename, max_batch_size=mbs,
        inputs=_merge("inputs", stripped[:n_in], inputs),
        outputs=_merge("outputs", stripped[n_in:], outputs),
    )


# --------------------------------------------------------------------------- TorchScript

# Runs in a child: loads the archive (never unpickles Python objects: TorchScript's
# loader only rebuilds tensors and compiled code) and reports forward's signature.
_TORCHSCRIPT_PROBE = r"""
import json, resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import torch
m = torch.jit.load(sys.argv[1], map_location="cpu")
schema = m.forward.schema
args = [(a.name, str(a.type)) for a in schema.arguments[1:]]
ret = [str(r.type) for r in schema.returns]
print(json.dumps({"args": args, "returns": ret}))
"""


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


async def _probe_in_child(script: str, path: Path, *, what: str, timeout_s: float, limit: int) -> str:
    """Run ``script`` on the file in a child process with a time and address-space limit, so
    a hostile file (a native crash, a memory bomb, a hang) costs a child, not the control
    plane. Returns the child's last stdout line; raises InvalidArgument with its last error."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(path), str(limit),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise InvalidArgument(f"loading the {what} took over {timeout_s:.0f}s: upload a smaller model") from None
    finally:
        if proc.returncode is None:  # cancelled: never leave the child behind
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        lines = [ln for ln in err.decode(errors="replace").strip().splitlines() if ln.strip()]
        detail = lines[-1][:500] if lines else f"exit status {proc.returncode}"
        log.info("%s probe refused %s: %s", what, path.name, detail)
        raise _ProbeFailed(detail)
    return out.decode().strip().splitlines()[-1]


class _ProbeFailed(Exception):
    pass


async def probe_torchscript(path: Path, *, timeout_s: float = 60.0) -> TorchScriptSignature:
    """``torch.jit.load`` the file in a child process with a time and address-space limit."""
    size = os.stat(path).st_size  # one metadata call; not worth a thread
    # torch alone maps ~0.7 GB of address space; the archive's tensors come on top
    limit = max(4 << 30, (2 << 30) + 6 * size)
    try:
        line = await _probe_in_child(_TORCHSCRIPT_PROBE, path, what="TorchScript archive",
                                     timeout_s=timeout_s, limit=limit)
    except _ProbeFailed as exc:
        raise InvalidArgument(f"torch.jit.load could not load the file ({exc}): {NOT_TORCHSCRIPT}") from None
    data = json.loads(line)
    return TorchScriptSignature(args=[(a, t) for a, t in data["args"]], returns=data["returns"])


_ONNXRUNTIME_PROBE = r"""
import resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
print("ok")
"""


async def probe_onnxruntime(path: Path, *, timeout_s: float = 60.0) -> None:
    """Build an ONNX Runtime session from the file in a child process: a graph that passes
    onnx.checker can still be refused (or crash) in the runtime, and that must happen here,
    before the model is accepted, never on a worker serving other tenants."""
    size = os.stat(path).st_size
    limit = max(3 << 30, (2 << 30) + 6 * size)
    try:
        await _probe_in_child(_ONNXRUNTIME_PROBE, path, what="ONNX model", timeout_s=timeout_s, limit=limit)
    except _ProbeFailed as exc:
        raise InvalidArgument(
            f"ONNX Runtime cannot load this model ({exc}): export it with an opset and operators "
            "onnxruntime supports"
        ) from None


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


async def validate_model(path: Path, *, inputs: list[TensorSpec] | None, outputs: list[TensorSpec] | None,
                         max_batch_size: int | None) -> ValidatedModel:
    """Everything an upload must pass before it is stored; raises InvalidArgument saying what to fix."""
    if max_batch_size is not None and not 0 <= max_batch_size <= MAX_BATCH_SIZE_LIMIT:
        raise InvalidArgument(f"max_batch_size must be between 0 and {MAX_BATCH_SIZE_LIMIT}, got {max_batch_size}")
    fmt = await asyncio.to_thread(sniff_format, path)
    if fmt == "onnx":
        validated = await asyncio.to_thread(
            validate_onnx, path, inputs=inputs, outputs=outputs, max_batch_size=max_batch_size
        )
        await probe_onnxruntime(path)
        return validated
    sig = await probe_torchscript(path)
    return check_torchscript(sig, inputs=inputs, outputs=outputs, max_batch_size=max_batch_size)
