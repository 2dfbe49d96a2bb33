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
from pathlib import Path
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


def _all_tensors(model: Any) -> Any:
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def check_onnx(path: Path, model_name: str) -> Any:
    """Parse, refuse escaping external data, run onnx.checker; returns the ModelProto
    (external data not loaded)."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: the bytes are not a model
        raise InvalidArgument(
            f"failed to load '{model_name}': '{path.name}' is not a valid ONNX model ({exc.__class__.__name__}: {exc})"
        ) from None
    folder = path.parent.resolve()
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(folder):
            raise InvalidArgument(
                f"failed to load '{model_name}': tensor '{tensor.name}' has external data at "
                f"{location!r}, outside the model's folder; external data files must be uploaded "
                "with the model (as file:<version>/<name>) and referenced by a relative path inside it"
            )
        if not target.is_file():
            raise InvalidArgument(
                f"failed to load '{model_name}': tensor '{tensor.name}' needs external data file "
                f"{location!r}, which was not provided; upload it as file:<version>/{location}"
            )
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise InvalidArgument(f"failed to load '{model_name}': ONNX model check failed: {exc}") from None
    return model
