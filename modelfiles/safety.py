"""Checks that run before a model file reaches a runtime.

Tenant files are untrusted. Nothing here unpickles: a ``.pt`` must be a
TorchScript zip archive (``torch.jit.load`` then reads it with TorchScript's own
restricted loader); a plain pickle or a ``torch.save``'d state_dict is refused
by looking at the bytes only. ONNX external data must stay inside the model's
own folder, or a tenant could make the worker read ``/etc/passwd`` into a tensor.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from kserve.errors import InvalidArgument

_EXPORT_HINT = (
    "export the model as TorchScript with torch.jit.script(model) or torch.jit.trace(model, "
    "example) and save it with torch.jit.save(scripted, 'model.pt')"
)


def archive_kind(names: list[str]) -> Literal["torchscript", "state_dict", "other"]:
    """What a zip archive holds, from its entry names alone (nothing is unpickled):
    TorchScript has ``<root>/constants.pkl`` or ``<root>/code/``; torch.save writes
    ``<root>/data.pkl`` without code."""
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "state_dict"
    return "other"


def check_torchscript(path: Path, model_name: str) -> None:
    """Refuse anything that is not a TorchScript archive, without unpickling it."""
    check_torchscript_bytes(path.read_bytes(), model_name, path.name)


def check_torchscript_bytes(data: bytes, model_name: str, filename: str = "model.pt") -> None:
    """``check_torchscript`` for an archive already in memory (a sandboxed model host
    reads its files before it confines itself)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InvalidArgument(
            f"failed to load '{model_name}': '{filename}' is not a TorchScript archive (it looks "
            f"like a plain pickle or another format, which this worker never unpickles); {_EXPORT_HINT}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise InvalidArgument(f"failed to load '{model_name}': '{filename}' is a corrupt archive: {exc}") from None
    kind = archive_kind(names)
    if kind != "torchscript":
        what = "a torch.save'd state_dict or tensor" if kind == "state_dict" else "not TorchScript"
        raise InvalidArgument(
            f"failed to load '{model_name}': '{filename}' is {what}, not a TorchScript module; "
            f"{_EXPORT_HINT}"
        )


def load_onnx(files: dict[str, bytes], filename: str, model_name: str) -> tuple[Any, bool]:
    """Parse ``files[filename]`` (paths relative to the version folder), refuse external
    data outside that folder or not among ``files``, inline what it references and run
    onnx.checker. Returns (ModelProto, whether external data was inlined). Works on bytes
    only: a model host reads its files before it confines itself."""
    import onnx
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load_from_string(files[filename])
    except Exception as exc:  # DecodeError and friends: the bytes are not a model
        raise InvalidArgument(
            f"failed to load '{model_name}': '{filename}' is not a valid ONNX model ({exc.__class__.__name__}: {exc})"
        ) from None
    base = PurePosixPath(filename).parent
    inlined = False
    for tensor in _get_all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        rel = PurePosixPath(os.path.normpath((base / location).as_posix())) if location else None
        if rel is None or location.startswith("/") or rel.parts[:1] == ("..",):
            raise InvalidArgument(
                f"failed to load '{model_name}': tensor '{tensor.name}' has external data at "
                f"{location!r}, outside the model's folder; external data files must be uploaded "
                "with the model (as file:<version>/<name>) and referenced by a relative path inside it"
            )
        data = files.get(rel.as_posix())
        if data is None:
            raise InvalidArgument(
                f"failed to load '{model_name}': tensor '{tensor.name}' needs external data file "
                f"{location!r}, which was not provided; upload it as file:<version>/{location}"
            )
        offset = int(info.get("offset", 0) or 0)
        length = int(info.get("length", 0) or 0) or len(data) - offset
        tensor.raw_data = data[offset:offset + length]
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
        inlined = True
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidArgument(f"failed to load '{model_name}': ONNX model check failed: {exc}") from None
    return model, inlined
