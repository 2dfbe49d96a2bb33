"""The upload probe: an uploaded model file parsed, verified and loaded in one confined child.

The control plane never parses a tenant's file in its own process (a 200 MB ONNX file
held its event loop for seconds, and a hostile one could crash it). It runs

    python -m worker.sandbox.probe <file> --name <model> --memory-extra <bytes> --max-tensor-bytes <bytes>

under a time limit. The child reads the file, imports and warms the one runtime the
format needs, then confines itself (no file, socket or process from then on, an
address-space limit) before it parses a byte: the format by content, the verifier
(``modelfiles.verify``), ``onnx.checker``, the graph's inputs and outputs, an ONNX
Runtime session or ``torch.jit.load`` (where a TorchScript ``__setstate__`` would run).
It prints one JSON line:

    {"format": "onnx", "inputs": [{"name", "datatype", "dims"}], "outputs": [...]}
    {"format": "torchscript", "args": [[name, type]], "returns": [type]}
    {"status": "InvalidArgument", "error": "what to fix"}
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from kserve.datatypes import SUPPORTED, config_type_to_v2
from kserve.errors import InferplexError, InvalidArgument, Unavailable
from modelfiles.config import ONNX, TORCHSCRIPT, GraphTensor, onnx_graph_io
from modelfiles.safety import archive_kind
from modelfiles.verify import verify_onnx, verify_torchscript, verify_torchscript_archive
from worker.runtimes import import_runtime
from worker.sandbox.confine import SandboxUnavailable, address_space_bytes, confine

ModelFormat = Literal["onnx", "torchscript"]

UNKNOWN_FORMAT = "unknown model format: upload an ONNX (.onnx) or TorchScript (.pt) file"
NOT_TORCHSCRIPT = (
    "not a TorchScript archive: export with torch.jit.script or torch.jit.trace and save with "
    "torch.jit.save"
)


def sniff_format(data: bytes) -> ModelFormat:
    """TorchScript if the bytes are a TorchScript zip, ONNX candidate otherwise; refuses
    pickles and torch.save archives outright (their bytes are never unpickled)."""
    if not data:
        raise InvalidArgument("empty upload: send the model file's bytes")
    if data[:1] == b"\x80":  # pickle protocol 2+ opcode: plain pickle or legacy torch.save
        raise InvalidArgument(NOT_TORCHSCRIPT)
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise InvalidArgument(f"{UNKNOWN_FORMAT} (a damaged zip archive: {exc})") from None
        kind = archive_kind(names)
        if kind == "torchscript":
            return "torchscript"
        raise InvalidArgument(NOT_TORCHSCRIPT if kind == "state_dict" else UNKNOWN_FORMAT)
    return "onnx"


def inspect_model(data: bytes, *, name: str, max_tensor_bytes: int) -> dict[str, Any]:
    """Everything the probe learns from the file (see the module docstring); raises
    InvalidArgument saying what to fix. Runs confined in the child, plainly in tests."""
    if sniff_format(data) == "onnx":
        return _inspect_onnx(data, name=name, max_tensor_bytes=max_tensor_bytes)
    return _inspect_torchscript(data, name=name)


# --------------------------------------------------------------------------- ONNX


def _inspect_onnx(data: bytes, *, name: str, max_tensor_bytes: int) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InvalidArgument(f"{UNKNOWN_FORMAT} (not parseable as an ONNX model: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise InvalidArgument(f"{UNKNOWN_FORMAT} (no ONNX graph found in the file)")
    for tensor in _stored_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise InvalidArgument(
                f"ONNX tensor {tensor.name!r} uses external data: upload one self-contained file "
                "(save with onnx.save_model(model, path, save_as_external_data=False))"
            )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # checker raises ValidationError, and C++ errors as others
        raise InvalidArgument(f"ONNX checker refused the model: {str(exc).strip()[:500]}") from None
    verify_onnx(model, name, max_tensor_bytes=max_tensor_bytes)
    inputs, outputs = _onnx_io(model.graph)
    if not inputs or not outputs:
        raise InvalidArgument("the ONNX graph needs at least one input and one output")
    del model
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for bad graphs
        raise InvalidArgument(
            f"ONNX Runtime cannot load this model ({_reason(exc)}): export it with an opset and "
            "operators onnxruntime supports"
        ) from None
    del session
    return {"format": "onnx", "inputs": inputs, "outputs": outputs}


def _stored_tensors(model: Any) -> Iterator[Any]:
    """Every tensor the file stores: initializers, sparse parts and node constants, in the
    graph, its subgraphs and its model-local functions."""
    def in_nodes(nodes: Any) -> Iterator[Any]:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                    yield from in_graph(sub)

    def in_graph(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from in_nodes(graph.node)

    yield from in_graph(model.graph)
    for function in model.functions:
        yield from in_nodes(function.node)


def _onnx_io(graph: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's inputs (initializers left out) and outputs, in v2 terms."""
    import onnx

    values = {vi.name: vi for vi in (*graph.input, *graph.output)}

    def spec(t: GraphTensor) -> dict[str, Any]:
        value_type = values[t.name].type
        if not value_type.HasField("tensor_type"):
            raise InvalidArgument(
                f"model tensor {t.name!r} is not a tensor (sequence/map/optional): only tensor "
                "inputs and outputs are served"
            )
        if t.config_type is None:
            elem_type = value_type.tensor_type.elem_type
            type_name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "UNDEFINED"
            raise InvalidArgument(
                f"tensor {t.name!r} has ONNX element type {type_name}, which has no KServe v2 "
                f"datatype; use one of {SUPPORTED}"
            )
        return {"name": t.name, "datatype": config_type_to_v2(t.config_type), "dims": list(t.shape)}

    inputs, outputs = onnx_graph_io(graph)
    return [spec(t) for t in inputs], [spec(t) for t in outputs]


# --------------------------------------------------------------------------- TorchScript


def _inspect_torchscript(data: bytes, *, name: str) -> dict[str, Any]:
    import torch

    verify_torchscript_archive(data, name)
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise InvalidArgument(
            f"torch.jit.load could not load the file ({_reason(exc)}): {NOT_TORCHSCRIPT}"
        ) from None
    verify_torchscript(module, name)
    schema = module.forward.schema
    return {"format": "torchscript",
            "args": [[a.name, str(a.type)] for a in schema.arguments[1:]],
            "returns": [str(r.type) for r in schema.returns]}


def _reason(exc: BaseException) -> str:
    """The line of a runtime's error that says what went wrong: the last one, unless the
    message ends in a TorchScript source excerpt, which follows its one-line reason."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    line = (lines[0] if "<--- HERE" in lines[-1] else lines[-1]) if lines else ""
    return f"{exc.__class__.__name__}: {line}"[:500]


# --------------------------------------------------------------------------- the child


def _prepare(fmt: ModelFormat) -> None:
    """Import and initialise the runtime the format needs while files can still be
    opened: a confined process cannot load a shared library or a module."""
    if fmt == "onnx":
        import onnx.checker  # noqa: F401
        import onnx.shape_inference  # noqa: F401

        import_runtime(ONNX)
    else:
        import torch

        torch.set_num_threads(1)
        torch.ones(2, 2) @ torch.ones(2, 2)  # first-use initialisation (cpuinfo, allocator)
        import_runtime(TORCHSCRIPT)


def _confine(memory_extra: int) -> None:
    try:
        confine(address_space_bytes() + memory_extra)
    except SandboxUnavailable as exc:  # fail closed: an unconfined check is no check
        raise Unavailable(f"this server cannot check uploaded models in a sandbox ({exc}); "
                          "tell the operator") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.sandbox.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--name", default="model", help="the model's name, for messages")
    parser.add_argument("--memory-extra", type=int, required=True,
                        help="address space the check may map beyond the runtime's own, in bytes")
    parser.add_argument("--max-tensor-bytes", type=int, required=True,
                        help="the largest tensor the model may hold or make, in bytes")
    args = parser.parse_args(argv)
    data = args.path.read_bytes()
    try:
        fmt = sniff_format(data)
        _prepare(fmt)
        _confine(args.memory_extra)
        report = inspect_model(data, name=args.name, max_tensor_bytes=args.max_tensor_bytes)
    except InferplexError as exc:
        report = {"status": type(exc).__name__, "error": exc.message}
    except MemoryError:
        report = {"status": "InvalidArgument",
                  "error": "loading the model needs more memory than an upload check may use: "
                           "upload a smaller model"}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
