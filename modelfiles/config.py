"""Triton model configs: parsing (JSON, pbtxt), platform detection, inference from
an ONNX graph, and the worker's own view of a model's tensors (``ModelSpec``).

The protobuf ``ModelConfig`` that ``tritonclient.grpc`` ships is the source of
truth (it is what ``v2/models/{m}/config`` returns); ``ModelSpec`` is the small,
typed subset the request path checks against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from kserve.datatypes import config_type_to_v2
from kserve.errors import InvalidArgument

log = logging.getLogger(__name__)

ONNX = "onnxruntime_onnx"
TORCHSCRIPT = "pytorch_libtorch"
# Triton's backend names for the same runtimes
_BACKEND_TO_PLATFORM = {"onnxruntime": ONNX, "pytorch": TORCHSCRIPT}
_PLATFORM_TO_BACKEND = {v: k for k, v in _BACKEND_TO_PLATFORM.items()}
DEFAULT_FILENAME = {ONNX: "model.onnx", TORCHSCRIPT: "model.pt"}
# Triton's auto-complete uses default-max-batch-size=4 for models whose inputs all batch.
INFERRED_MAX_BATCH_SIZE = 4


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str  # v2 name, e.g. "FP32", "BYTES"
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable

    def full_shape(self, max_batch_size: int) -> list[int]:
        return [-1, *self.dims] if max_batch_size > 0 else list(self.dims)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


def parse_json(text: str | bytes | dict[str, Any], model_name: str) -> mc.ModelConfig:
    """The repository API's ``config`` parameter (JSON form of model_config.proto)."""
    try:
        if isinstance(text, dict):
            return json_format.ParseDict(text, mc.ModelConfig())
        return json_format.Parse(text, mc.ModelConfig())
    except json_format.ParseError as exc:
        raise InvalidArgument(
            f"failed to load '{model_name}': the 'config' parameter is not a valid JSON model "
            f"configuration (Triton's model_config.proto in JSON form): {exc}"
        ) from None


def parse_pbtxt(text: str, model_name: str) -> mc.ModelConfig:
    """A ``config.pbtxt`` from a model repository directory."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise InvalidArgument(
            f"failed to load '{model_name}': config.pbtxt is not valid protobuf text format: {exc}"
        ) from None


def to_json(config: mc.ModelConfig) -> dict[str, Any]:
    """The config as Triton's HTTP endpoint returns it (proto field names, ints as ints)."""
    data = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return _ints(data)


def _ints(value: Any) -> Any:
    # MessageToDict renders int64 as strings; Triton's HTTP config has numbers.
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def resolve_platform(config: mc.ModelConfig, version_dir: Path | None) -> str:
    """Fill ``platform``/``backend`` consistently; detect from the file when neither is set."""
    platform = config.platform or _BACKEND_TO_PLATFORM.get(config.backend, "")
    if platform not in DEFAULT_FILENAME:
        platform = ""
    if config.platform and config.backend and _BACKEND_TO_PLATFORM.get(config.backend) != config.platform:
        raise InvalidArgument(
            f"failed to load '{config.name}': platform '{config.platform}' and backend "
            f"'{config.backend}' disagree"
        )
    if not platform and (config.platform or config.backend):
        raise InvalidArgument(
            f"failed to load '{config.name}': unsupported platform/backend "
            f"'{config.platform or config.backend}'; this worker runs '{ONNX}' (backend "
            f"'onnxruntime') and '{TORCHSCRIPT}' (backend 'pytorch') models"
        )
    if not platform and version_dir is not None:
        wanted = config.default_model_filename
        for candidate, filename in DEFAULT_FILENAME.items():
            if (wanted and wanted.endswith(Path(filename).suffix)) or (version_dir / filename).exists():
                platform = candidate
                break
    if not platform:
        raise InvalidArgument(
            f"failed to load '{config.name}': cannot tell the model's platform; set "
            f"\"platform\": \"{ONNX}\" or \"{TORCHSCRIPT}\" in its config, or name the file "
            "model.onnx / model.pt"
        )
    config.platform = platform
    config.backend = _PLATFORM_TO_BACKEND[platform]
    if not config.default_model_filename:
        config.default_model_filename = DEFAULT_FILENAME[platform]
    return platform


def spec_of(config: mc.ModelConfig) -> ModelSpec:
    """Check the I/O section of a complete config and return the typed view."""
    name = config.name
    if config.max_batch_size < 0:
        raise InvalidArgument(f"failed to load '{name}': max_batch_size must be >= 0")
    if not config.input or not config.output:
        raise InvalidArgument(
            f"failed to load '{name}': the config must list the model's 'input' and 'output' "
            "tensors (name, data_type, dims)"
        )

    def tensors(items: Any, kind: str) -> tuple[TensorSpec, ...]:
        seen: set[str] = set()
        out = []
        for t in items:
            if not t.name:
                raise InvalidArgument(f"failed to load '{name}': every {kind} needs a name")
            if t.name in seen:
                raise InvalidArgument(f"failed to load '{name}': {kind} '{t.name}' is listed twice")
            seen.add(t.name)
            if t.data_type == mc.TYPE_INVALID:
                raise InvalidArgument(f"failed to load '{name}': {kind} '{t.name}' needs a data_type")
            if any(d < -1 for d in t.dims):
                raise InvalidArgument(
                    f"failed to load '{name}': {kind} '{t.name}' has dims {list(t.dims)}; "
                    "each dim must be -1 (variable) or >= 0"
                )
            # an open proto3 enum: a config may carry a number DataType has no name for
            known = t.data_type in mc.DataType.values()
            datatype = config_type_to_v2(mc.DataType.Name(t.data_type) if known else str(t.data_type))
            out.append(TensorSpec(t.name, datatype, tuple(int(d) for d in t.dims)))
        return tuple(out)

    return ModelSpec(
        name=name,
        platform=config.platform,
        max_batch_size=int(config.max_batch_size),
        inputs=tensors(config.input, "input"),
        outputs=tensors(config.output, "output"),
    )


# ONNX TensorProto element type -> Triton config type name
_ONNX_TO_CONFIG = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
    6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
    11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16",
}


@dataclass(frozen=True, slots=True)
class GraphTensor:
    name: str
    config_type: str | None  # None: a type Triton cannot express
    shape: tuple[int, ...]  # -1 for symbolic / unknown dims


def onnx_graph_io(graph: Any) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """Inputs (excluding initializers, which old IR versions also list) and outputs."""
    initializers = {t.name for t in graph.initializer}

    def describe(vi: Any) -> GraphTensor:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        return GraphTensor(vi.name, _ONNX_TO_CONFIG.get(tt.elem_type), dims)

    inputs = [describe(vi) for vi in graph.input if vi.name not in initializers]
    return inputs, [describe(vi) for vi in graph.output]


def complete_from_onnx(config: mc.ModelConfig, graph: Any) -> None:
    """Triton-style auto-complete: fill missing I/O from the graph, then check that the
    config agrees with the graph (names and datatypes), so mistakes fail at load time."""
    inputs, outputs = onnx_graph_io(graph)
    name = config.name
    if not config.input and not config.output:
        batching = bool(inputs) and all(t.shape and t.shape[0] == -1 for t in inputs + outputs)
        if config.max_batch_size == 0 and batching:
            config.max_batch_size = INFERRED_MAX_BATCH_SIZE
        strip = 1 if config.max_batch_size > 0 else 0
        for section, tensors in ((config.input, inputs), (config.output, outputs)):
            for t in tensors:
                if t.config_type is None:
                    raise InvalidArgument(
                        f"failed to load '{name}': tensor '{t.name}' has an element type Triton "
                        "cannot express; give the model a config"
                    )
                entry = section.add(name=t.name, data_type=mc.DataType.Value(t.config_type))
                entry.dims.extend(t.shape[strip:])
                if not entry.dims and strip:
                    entry.dims.append(1)  # Triton reshapes a batch-only tensor to [1]
        log.info("inferred config for '%s' from its ONNX graph: max_batch_size=%d, %d inputs, %d outputs",
                 name, config.max_batch_size, len(inputs), len(outputs))
        return
    by_name = {t.name: t for t in inputs}
    out_by_name = {t.name: t for t in outputs}
    for kind, section, graph_tensors in (("input", config.input, by_name), ("output", config.output, out_by_name)):
        for t in section:
            found = graph_tensors.get(t.name)
            if found is None:
                raise InvalidArgument(
                    f"failed to load '{name}': unexpected {kind} '{t.name}' in the model "
                    f"configuration; the ONNX model has {kind}s {sorted(graph_tensors)}"
                )
            want = mc.DataType.Name(t.data_type)
            if found.config_type is not None and found.config_type != want:
                raise InvalidArgument(
                    f"failed to load '{name}': configuration expects datatype {want} for {kind} "
                    f"'{t.name}', model provides {found.config_type}"
                )
    missing = sorted(set(by_name) - {t.name for t in config.input})
    if missing:
        raise InvalidArgument(
            f"failed to load '{name}': the ONNX model has inputs {missing} that the "
            "configuration does not list"
        )
