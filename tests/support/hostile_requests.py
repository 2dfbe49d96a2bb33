"""Hostile requests for the worker and the gateway: shape and BYTES bombs, deep JSON, and
slowloris connections, with a way to see when the server closes one."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

from tritonclient.grpc import service_pb2

# the 60-byte request: BYTES [1, 100000000] with 5 bytes of data took 763 MB
BOMB_SHAPE = [1, 100_000_000]
BOMB_DATA = struct.pack("<I", 1) + b"a"
DEEP = 50_000


def binary_body(name: str, datatype: str, shape: list[int], data: bytes,
                **top: object) -> tuple[bytes, dict[str, str]]:
    """A v2 HTTP infer body with one binary input, and its headers."""
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}], **top}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


def deep_json_body(name: str) -> bytes:
    """An infer body whose one input's ``data`` nests DEEP levels."""
    return (b'{"inputs":[{"name":"' + name.encode() + b'","datatype":"FP32","shape":[1],"data":'
            + b"[" * DEEP + b"]" * DEEP + b"}]}")


def grpc_raw_request(model: str, name: str, datatype: str, shape: list[int],
                     raw: bytes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, inputs=[
        service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)])
    request.raw_input_contents.append(raw)
    return request


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM) so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def seconds_until_closed(port: int, sent: bytes, timeout_s: float) -> tuple[float, bytes]:
    """Connect, send ``sent`` (a request that never finishes its headers), then read until
    the server closes the connection; the seconds that took and what the server sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        start = time.monotonic()
        if sent:
            sock.sendall(sent)
        answer = b""
        while chunk := sock.recv(65536):  # raises TimeoutError past timeout_s
            answer += chunk
        return time.monotonic() - start, answer
