"""Models are verified programs: what a model file may ask a runtime to do.

A TorchScript archive is a program, not a graph: ``torch.from_file`` reads any file the
process can open, ``torch.save`` writes one, and code in ``__setstate__`` runs inside
``torch.jit.load``. So the whole program is walked (every method, hook and submodule,
calls inlined, every block) and each operation must be on an allowlist of pure tensor
operations (``torchscript_ops.ALLOWED``); anything else is refused with its name.
ONNX graphs are data, but a custom-op domain asks the runtime for code outside the
standard operator set, and a constant-folding node can allocate gigabytes at load
from a few bytes of file: only the standard domains pass, and every tensor whose
static shape is known must fit a bound.

Used at upload (in the confined probe child) and by the worker before it trusts a file.
Pure functions; torch and onnx are imported inside them, so importing this is cheap.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from kserve.errors import InvalidArgument
from modelfiles.torchscript_ops import ALLOWED, REFUSED_WHY

_ONLY_TENSOR_OPS = "models may only use tensor operations"

# A tensor that no single served model should need; a bigger one is a bomb, not a model.
MAX_TENSOR_BYTES = 1 << 30


def tensor_bound(file_bytes: int) -> int:
    """The largest tensor a model file of this size may hold or make: its own size (its
    weights are that big already) or MAX_TENSOR_BYTES, whichever is larger."""
    return max(MAX_TENSOR_BYTES, file_bytes)


# --------------------------------------------------------------------------- TorchScript

# The identifier must appear in the source to define the method (TorchScript has no other
# way to name it), so a plain word search cannot be dodged by spacing or line breaks.
_SETSTATE = re.compile(rb"\b__setstate__\b")


def verify_torchscript_archive(data: bytes, model_name: str) -> None:
    """Before ``torch.jit.load``: refuse what would run during the load itself, where no
    later check can see it. A module's ``__setstate__`` is TorchScript code the loader
    runs while it rebuilds the module; ``torch.classes`` objects run their C++ setstate."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            names = [e.filename for e in entries]
            if len(set(names)) != len(names):
                # zipfile reads the last of two same-named entries, torch's reader the first
                raise InvalidArgument(
                    f"failed to load '{model_name}': the archive holds two entries with the same "
                    "name; save the model again with torch.jit.save"
                )
            for entry in entries:
                if "/code/" not in entry.filename and not entry.filename.endswith(".pkl"):
                    continue
                text = archive.read(entry)
                if entry.filename.endswith(".py") and _SETSTATE.search(text):
                    raise InvalidArgument(
                        f"failed to load '{model_name}': the TorchScript program defines "
                        "__setstate__, code that runs while the model is loaded; models may only "
                        "use tensor operations (remove the @torch.jit.export __setstate__ method)"
                    )
                if b"torch.classes" in text:
                    raise InvalidArgument(
                        f"failed to load '{model_name}': the TorchScript program holds torch.classes "
                        f"objects (native custom classes); {_ONLY_TENSOR_OPS}"
                    )
    except zipfile.BadZipFile as exc:
        raise InvalidArgument(f"failed to load '{model_name}': a corrupt archive: {exc}") from None


def verify_torchscript(module: Any, model_name: str) -> None:
    """Walk the whole program of a loaded ``torch.jit.ScriptModule``; raise InvalidArgument
    naming the first operation, class or call that is not a pure tensor operation."""
    modules = list(module.named_modules())
    tree: dict[str, set[str]] = {}  # module type -> its submodules' attribute names
    for _, sub in modules:
        tree.setdefault(sub._c._type().qualified_name(), set()).update(n for n, _ in sub.named_children())
    for path, sub in modules:
        where = f"{path}." if path else ""
        for method in sub._c._method_names():
            _verify_graph(sub._c._get_method(method).graph, f"{where}{method}", tree, model_name)
        for hook in (*sub._c._get_forward_pre_hooks(), *sub._c._get_forward_hooks()):
            _verify_graph(hook.graph, f"{where}{hook.name} (a forward hook)", tree, model_name)


def _verify_graph(graph: Any, where: str, tree: dict[str, set[str]], model_name: str) -> None:
    import torch

    inlined = graph.copy()
    torch._C._jit_pass_inline(inlined)  # every resolvable function and method call, expanded
    for value in inlined.inputs():
        _check_type(value.type(), where, tree, model_name)
    for node in _nodes(inlined.block()):
        kind = node.kind()
        for value in node.outputs():
            _check_type(value.type(), where, tree, model_name)
        if kind in ALLOWED:
            continue
        if kind == "prim::CallMethod":
            _check_call_method(node, where, tree, model_name)
            continue
        raise InvalidArgument(_refusal(kind, where, model_name))


def _nodes(block: Any) -> Iterator[Any]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():  # prim::If branches, prim::Loop bodies
            yield from _nodes(inner)


def _check_call_method(node: Any, where: str, tree: dict[str, set[str]], model_name: str) -> None:
    """A call left after inlining goes through an interface. On a module interface read
    from a submodule attribute (or a ModuleList index) the callee is a module of this tree,
    whose every method is walked anyway; any other receiver (a class interface, whose
    implementation could be a class no check saw) cannot be verified."""
    import torch

    receiver = next(iter(node.inputs()))
    producer = receiver.node()
    if producer.kind() in ("prim::GetAttr", "prim::ModuleContainerIndex"):
        owner = next(iter(producer.inputs())).type()
        children = tree.get(owner.qualified_name()) if isinstance(owner, torch.ClassType) else None
        if children is not None and (producer.kind() == "prim::ModuleContainerIndex"
                                     or producer.s("name") in children):
            return
    raise InvalidArgument(
        f"failed to load '{model_name}': the TorchScript program calls method "
        f"{node.s('name')!r} on {receiver.type().annotation_str} in {where}, which cannot be "
        f"verified; {_ONLY_TENSOR_OPS} and their own submodules"
    )


def _check_type(t: Any, where: str, tree: dict[str, set[str]], model_name: str) -> None:
    import torch

    if isinstance(t, torch.ClassType) and t.qualified_name() not in tree:
        name = t.qualified_name()
        what = "a native custom class" if ".torch.classes." in name else "a TorchScript class"
        raise InvalidArgument(
            f"failed to load '{model_name}': the TorchScript program uses {name.removeprefix('__torch__.')}, "
            f"{what}, in {where}; {_ONLY_TENSOR_OPS} and modules (make it an nn.Module or plain "
            "tensors)"
        )
    for inner in t.containedTypes():
        _check_type(inner, where, tree, model_name)


def _refusal(kind: str, where: str, model_name: str) -> str:
    why = REFUSED_WHY.get(kind)
    namespace = kind.partition("::")[0]
    if why is None and namespace not in ("aten", "prim"):
        why = f"is a custom or non-tensor operator (namespace {namespace})"
    elif why is None:
        why = "is not among the tensor operations a served model may use"
    return (f"failed to load '{model_name}': the TorchScript program calls {kind} (in {where}), "
            f"which {why}; {_ONLY_TENSOR_OPS}")


# --------------------------------------------------------------------------- ONNX

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
# ONNX Runtime's own operator domains: a model-local function there could be shadowed by
# (or shadow) one of the runtime's contrib kernels, so a call into them is never a function
_RUNTIME_DOMAINS = ("com.microsoft",)


def verify_onnx(model: Any, model_name: str, *, max_tensor_bytes: int) -> None:
    """Standard domains only (model-local functions are walked like the graph), and no
    tensor of known size over ``max_tensor_bytes``: initializers and constants as stored,
    and every node output whose static shape shape inference (with data propagation) knows."""
    functions = {(f.domain, f.name) for f in model.functions
                 if not f.domain.startswith(_RUNTIME_DOMAINS)}
    for function in model.functions:
        _verify_nodes(function.node, f"function {function.name!r}", functions, model_name)
    _verify_nodes(model.graph.node, "the graph", functions, model_name)
    for tensor, where in _stored_tensors(model.graph):
        size = _tensor_bytes(tensor.data_type, tensor.dims)
        if size > max_tensor_bytes:
            raise InvalidArgument(
                f"failed to load '{model_name}': {where} {tensor.name!r} has shape {list(tensor.dims)} "
                f"({_size(size)}), over the {_size(max_tensor_bytes)} one tensor may hold"
            )
    _verify_static_sizes(model, model_name, max_tensor_bytes)


def _verify_nodes(nodes: Any, where: str, functions: set[tuple[str, str]], model_name: str) -> None:
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in functions:
            who = f"node {node.name!r} in {where}" if node.name else where
            raise InvalidArgument(
                f"failed to load '{model_name}': {who} uses operator {node.op_type} of the custom domain {node.domain!r}; models may only use "
                "the standard ONNX operators (domains 'ai.onnx' and 'ai.onnx.ml')"
            )
        for attr in node.attribute:
            for graph in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _verify_nodes(graph.node, f"a subgraph of {node.op_type} {node.name!r}", functions,
                              model_name)


def _stored_tensors(graph: Any) -> Iterator[tuple[Any, str]]:
    """Tensors the file itself defines, at their dense size (a sparse initializer is
    densified at load: its dims, not its few stored values, are what it costs)."""
    for tensor in graph.initializer:
        yield tensor, "initializer"
    for sparse in graph.sparse_initializer:
        yield _dense(sparse), "sparse initializer"
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t, f"constant of node {node.name or node.op_type!r}"
            if attr.HasField("sparse_tensor"):
                yield _dense(attr.sparse_tensor), f"sparse constant of node {node.name or node.op_type!r}"
            for tensor in attr.tensors:
                yield tensor, f"constant of node {node.name or node.op_type!r}"
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _stored_tensors(sub)


def _dense(sparse: Any) -> Any:
    from onnx import TensorProto

    return TensorProto(name=sparse.values.name, data_type=sparse.values.data_type, dims=sparse.dims)


def _verify_static_sizes(model: Any, model_name: str, max_tensor_bytes: int) -> None:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                     data_prop=True)
    except Exception as exc:  # InferenceError and C++ errors: the graph does not hold together
        raise InvalidArgument(
            f"failed to load '{model_name}': ONNX shape inference failed: {str(exc).strip()[:300]}"
        ) from None
    for graph in _graphs(inferred.graph):
        producers = {out: node for node in graph.node for out in node.output}
        for value in (*graph.value_info, *graph.output):
            if not value.type.HasField("tensor_type"):
                continue
            tensor_type = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
            if not tensor_type.HasField("shape") or None in dims:
                continue
            size = _tensor_bytes(tensor_type.elem_type, dims)
            if size > max_tensor_bytes:
                node = producers.get(value.name)
                by = f"{node.op_type} node {node.name or value.name!r}" if node else f"tensor {value.name!r}"
                raise InvalidArgument(
                    f"failed to load '{model_name}': {by} makes a tensor of shape {dims} "
                    f"({_size(size)}), over the {_size(max_tensor_bytes)} one tensor may hold; a "
                    "model must not allocate more than that in one tensor"
                )


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _graphs(sub)


# std::string's size in ONNX Runtime: a string tensor costs at least this per element
_STRING_BYTES = 32


def _tensor_bytes(elem_type: int, dims: Any) -> int:
    from onnx import TensorProto, helper

    count = math.prod(max(int(d), 0) for d in dims)
    if elem_type == TensorProto.STRING:
        return count * _STRING_BYTES
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, ValueError, TypeError):  # UNDEFINED and types numpy cannot name
        itemsize = 1
    bits = {TensorProto.INT4: 4, TensorProto.UINT4: 4}.get(elem_type)
    return (count * bits + 7) // 8 if bits else count * itemsize


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
