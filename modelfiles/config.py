"""Triton model configs: parsing (JSON, pbtxt), platform detection, inference from
an ONNX graph, and the worker's own view of a model's tensors (``ModelSpec``).

The protobuf ``ModelConfig`` that ``tritonclient.grpc`` ships is the source of
truth (it is what ``v2/models/{m}/config`` returns); ``ModelSpec`` is the small,
typed subset the request path checks against.
"""

from __future__ import annotations

import json
import logging
import re
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

    return ModelSpec(
        name=name,
        platform=config.platform,
        max_batch_size=int(config.max_batch_size),
        inputs=_tensor_specs(config.input, "input", f"failed to load '{name}': "),
        outputs=_tensor_specs(config.output, "output", f"failed to load '{name}': "),
    )


def _tensor_specs(items: Any, kind: str, prefix: str, *, known_types: bool = False) -> tuple[TensorSpec, ...]:
    """The typed view of a config's inputs or outputs, checked; errors start with ``prefix``.
    ``known_types``: a data_type number DataType has no name for is refused (a tenant's
    config) rather than carried as its number (an open proto3 enum: a worker's config)."""
    seen: set[str] = set()
    out = []
    for t in items:
        if not t.name:
            raise InvalidArgument(f"{prefix}every {kind} needs a name")
        if t.name in seen:
            raise InvalidArgument(f"{prefix}{kind} '{t.name}' is listed twice")
        seen.add(t.name)
        known = t.data_type in mc.DataType.values()
        if t.data_type == mc.TYPE_INVALID or (known_types and not known):
            raise InvalidArgument(f"{prefix}{kind} '{t.name}' needs a data_type such as TYPE_FP32")
        if any(d < -1 for d in t.dims):
            raise InvalidArgument(f"{prefix}{kind} '{t.name}' has dims {list(t.dims)}; "
                                  "each dim must be -1 (variable) or >= 0")
        datatype = config_type_to_v2(mc.DataType.Name(t.data_type) if known else str(t.data_type))
        out.append(TensorSpec(t.name, datatype, tuple(int(d) for d in t.dims)))
    return tuple(out)


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


# --------------------------------------------------------------------------- a tenant's config

# What a tenant's config may set: the model's I/O and batch size. Everything else in
# model_config.proto (instance groups, dynamic batching, optimisation, ...) is the
# operator's, or the control plane's (it batches across requests itself).
TENANT_CONFIG_FIELDS = ("name", "platform", "backend", "max_batch_size", "input", "output")
TENANT_TENSOR_FIELDS = ("name", "data_type", "dims")
# a config is a few tensors; a bigger one is a mistake (or an attempt on the parser)
MAX_TENANT_CONFIG_CHARS = 64 * 1024
_STRINGS_AND_COMMENTS = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|#[^\n]*')
_MAX_BATCH_FIELD = re.compile(r"(?<![\w.])max_batch_size\s*:")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """The subset of a Triton model config a tenant gives with an upload. ``max_batch_size``
    is None when the config leaves it out (the upload's default rule applies); ``inputs``
    or ``outputs`` are None when the config lists none (inferred from an ONNX file)."""

    name: str
    platform: str  # "" when the config names neither platform nor backend
    max_batch_size: int | None
    inputs: tuple[TensorSpec, ...] | None
    outputs: tuple[TensorSpec, ...] | None


def parse_tenant_config(text: str) -> TenantConfig:
    """A tenant's ``config.pbtxt`` text, or its JSON form (as Triton's repository load takes
    it), read strictly: only ``TENANT_CONFIG_FIELDS`` at the top and ``TENANT_TENSOR_FIELDS``
    in each input and output; InvalidArgument saying what to fix otherwise."""
    if len(text) > MAX_TENANT_CONFIG_CHARS:
        raise InvalidArgument(f"config is over {MAX_TENANT_CONFIG_CHARS} characters: give only the "
                              f"model's {', '.join(TENANT_CONFIG_FIELDS)}")
    stripped = text.strip()
    if not stripped:
        raise InvalidArgument("config is empty: give a config.pbtxt or its JSON form, or leave config out")
    config = mc.ModelConfig()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"config looks like JSON but is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidArgument("config in JSON form must be an object")
        _refuse_unknown(data)
        try:
            json_format.ParseDict(data, config)
        except json_format.ParseError as exc:
            raise InvalidArgument(f"config is not a valid model configuration in JSON form: "
                                  f"{_proto_message(str(exc))}") from None
        has_max_batch = "max_batch_size" in data
    else:
        try:
            text_format.Parse(text, config)  # line numbers as the tenant wrote them
        except text_format.ParseError as exc:
            raise InvalidArgument(f"config is not valid config.pbtxt text (protobuf text format): "
                                  f"{_proto_message(str(exc))}") from None
        _refuse_unknown(json_format.MessageToDict(config, preserving_proto_field_name=True))
        has_max_batch = _MAX_BATCH_FIELD.search(_STRINGS_AND_COMMENTS.sub(" ", stripped)) is not None
    if config.max_batch_size < 0:
        raise InvalidArgument(f"config: max_batch_size must be >= 0, got {config.max_batch_size}")
    platform = config.platform or _BACKEND_TO_PLATFORM.get(config.backend, "")
    if config.platform and config.backend and _BACKEND_TO_PLATFORM.get(config.backend) != config.platform:
        raise InvalidArgument(f"config: platform '{config.platform}' and backend '{config.backend}' disagree")
    if (config.platform or config.backend) and platform not in DEFAULT_FILENAME:
        raise InvalidArgument(
            f"config: unsupported platform/backend '{config.platform or config.backend}'; models are "
            f"'{ONNX}' (backend 'onnxruntime') or '{TORCHSCRIPT}' (backend 'pytorch'), or leave it out")

    return TenantConfig(
        name=config.name, platform=platform,
        max_batch_size=int(config.max_batch_size) if has_max_batch else None,
        inputs=_tensor_specs(config.input, "input", "config: ", known_types=True) or None,
        outputs=_tensor_specs(config.output, "output", "config: ", known_types=True) or None,
    )


def _refuse_unknown(data: dict[str, Any]) -> None:
    """Fields of model_config.proto (or none at all) that a tenant's config may not set."""
    extra = sorted(set(data) - set(TENANT_CONFIG_FIELDS))
    if extra:
        raise InvalidArgument(
            f"config field{'s' if len(extra) > 1 else ''} {', '.join(repr(e) for e in extra)} cannot be "
            f"set by an upload: a config gives {', '.join(TENANT_CONFIG_FIELDS)} (instances, batching "
            "and the rest are the service's)")
    for kind in ("input", "output"):
        items = data.get(kind) or []
        if not isinstance(items, list):
            continue  # json_format names the type error
        for t in items:
            if not isinstance(t, dict):
                continue
            extra = sorted(set(t) - set(TENANT_TENSOR_FIELDS))
            if extra:
                raise InvalidArgument(
                    f"config {kind} {t.get('name', '')!r}: field{'s' if len(extra) > 1 else ''} "
                    f"{', '.join(repr(e) for e in extra)} cannot be set by an upload: an {kind} gives "
                    f"{', '.join(TENANT_TENSOR_FIELDS)}")


_NO_FIELD = re.compile(r'Message type "inference\.(\w+)" has no field named "([^"]*)"')
_WHERE = {"ModelConfig": ("the config", TENANT_CONFIG_FIELDS), "ModelInput": ("an input", TENANT_TENSOR_FIELDS),
          "ModelOutput": ("an output", TENANT_TENSOR_FIELDS)}


def _proto_message(message: str) -> str:
    """protobuf's parse error in the words of the config the tenant wrote."""
    found = _NO_FIELD.search(message)
    if found:
        where, fields = _WHERE.get(found.group(1), (found.group(1), ()))
        known = f" ({where} gives {', '.join(fields)})" if fields else ""
        return f"{message[:found.start()]}unknown field {found.group(2)!r} in {where}{known}"
    return message.replace('"inference.ModelConfig"', "the config").replace("inference.", "")
