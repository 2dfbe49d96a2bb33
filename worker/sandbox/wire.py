"""Frames between the worker and its model hosts: a JSON header and raw tensor bytes.

Nothing here unpickles, and the worker reads every frame from a host as hostile: a
host runs tenant code, so a frame's sizes, datatypes and shapes are checked against
the frame and the caller's limits before anything is allocated for them.

A frame is ``!II`` (header length, payload length), the header (UTF-8 JSON) and the
payload (tensor buffers in header order, each starting at the next multiple of
``TENSOR_ALIGNMENT`` bytes, zeros between). A tensor is described by
``{"name", "datatype" (v2), "shape", "nbytes"}``; BYTES tensors travel as KServe's
binary form (a 4-byte little-endian length before each element). A payload is received
into a buffer that starts aligned too, so every tensor decoded from it is an aligned view:
a model's answer does not depend on the sizes of the inputs before it in the frame
(kserve.alignment.TENSOR_ALIGNMENT says why).
"""

from __future__ import annotations

import json
import math
import socket
import struct
from typing import Any

import numpy as np

from kserve.alignment import TENSOR_ALIGNMENT, aligned_empty
from kserve.datatypes import V2_TO_NUMPY

_PREFIX = struct.Struct("!II")
MAX_HEADER_BYTES = 1 << 20
MAX_RANK = 64


class WireError(Exception):
    """A frame that breaks the format or a limit (from a host: treat the host as broken)."""


class PeerClosed(WireError):
    """The other end closed the connection (a host that died or was stopped)."""


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise PeerClosed("connection closed")
        got += n


def send(sock: socket.socket, header: dict[str, Any], buffers: list[Any] = ()) -> None:  # type: ignore[assignment]
    head = json.dumps(header, separators=(",", ":")).encode()
    views = [memoryview(b).cast("B") for b in buffers]
    total = sum(len(v) for v in views)
    parts = [_PREFIX.pack(len(head), total), head, *[v for v in views if len(v)]]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts and sent:
            parts[0] = memoryview(parts[0])[sent:]


def recv(sock: socket.socket, max_payload: int) -> tuple[dict[str, Any], memoryview]:
    prefix = bytearray(_PREFIX.size)
    _recv_exact(sock, memoryview(prefix))
    hlen, plen = _PREFIX.unpack(prefix)
    if hlen > MAX_HEADER_BYTES or plen > max_payload:
        raise WireError(f"frame of {hlen}+{plen} bytes is over the limit ({max_payload} payload)")
    head = bytearray(hlen)
    _recv_exact(sock, memoryview(head))
    payload = aligned_empty(plen)
    _recv_exact(sock, memoryview(payload))
    try:
        header = json.loads(head)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"unreadable frame header: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("frame header is not an object")
    return header, memoryview(payload)


# ------------------------------------------------------------------ tensors


def _padding(offset: int) -> int:
    return -offset % TENSOR_ALIGNMENT


def encode_tensors(arrays: dict[str, np.ndarray], datatypes: dict[str, str]) -> tuple[list[dict[str, Any]], list[Any]]:
    descs, buffers = [], []
    offset = 0
    for name, array in arrays.items():
        datatype = datatypes[name]
        if datatype == "BYTES":
            raw = _pack_bytes(array)
        else:
            raw = np.ascontiguousarray(array)
            if raw.dtype.byteorder == ">":
                raw = raw.astype(raw.dtype.newbyteorder("<"))
        nbytes = len(raw) if isinstance(raw, bytes) else raw.nbytes
        descs.append({"name": name, "datatype": datatype, "shape": [int(d) for d in array.shape],
                      "nbytes": nbytes})
        if _padding(offset):
            buffers.append(bytes(_padding(offset)))
            offset += _padding(offset)
        buffers.append(raw if isinstance(raw, bytes) else raw.reshape(-1).view(np.uint8))
        offset += nbytes
    return descs, buffers


def decode_tensors(descs: Any, payload: memoryview, expected: dict[str, str]) -> dict[str, np.ndarray]:
    """Tensors of a frame; ``expected`` maps each allowed name to its v2 datatype. Every
    size is checked against the payload before an array is made (views, no copies)."""
    if not isinstance(descs, list):
        raise WireError("tensor list missing")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for desc in descs:
        if not isinstance(desc, dict):
            raise WireError("tensor description is not an object")
        name, datatype, shape, nbytes = (desc.get(k) for k in ("name", "datatype", "shape", "nbytes"))
        if name not in expected or name in out or datatype != expected[name]:
            raise WireError(f"unexpected tensor {name!r} ({datatype!r})")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(isinstance(d, int) and 0 <= d < 2**62 for d in shape)):
            raise WireError(f"tensor {name!r} has a bad shape")
        offset += _padding(offset)
        if not isinstance(nbytes, int) or nbytes < 0 or offset + nbytes > len(payload):
            raise WireError(f"tensor {name!r} runs past the frame")
        count = math.prod(shape)
        raw = payload[offset:offset + nbytes]
        offset += nbytes
        if datatype == "BYTES":
            out[name] = _unpack_bytes(raw, count, name).reshape(shape)
            continue
        dtype = np.dtype(V2_TO_NUMPY[datatype])
        if count * dtype.itemsize != nbytes:
            raise WireError(f"tensor {name!r}: {nbytes} bytes for shape {shape}")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if offset != len(payload):
        raise WireError("frame carries bytes no tensor describes")
    return out


def _pack_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _unpack_bytes(raw: memoryview, count: int, name: str) -> np.ndarray:
    if count > len(raw) // 4:  # every element carries a 4-byte length
        raise WireError(f"tensor {name!r}: {count} BYTES elements in {len(raw)} bytes")
    out = np.empty(count, dtype=np.object_)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise WireError(f"tensor {name!r}: element {i} runs past its data")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise WireError(f"tensor {name!r}: element {i} runs past its data")
        out[i] = bytes(raw[pos:pos + length])
        pos += length
    if pos != len(raw):
        raise WireError(f"tensor {name!r}: bytes left after its elements")
    return out
