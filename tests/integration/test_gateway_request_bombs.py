"""Request bombs at ``inferplex up``'s gateway and REST API, as a real process: each is a 400 /
INVALID_ARGUMENT (never a 500), the gateway keeps serving, and a connection that never
finishes its headers is closed."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2_grpc

from tests.integration.cp_harness import ControlPlane, auth, grpc_infer, http_infer, running_up
from tests.support import models
from tests.support.hostile_requests import (
    BOMB_DATA,
    BOMB_SHAPE,
    DEEP,
    binary_body,
    deep_json_body,
    grpc_raw_request,
    peak_rss_bytes,
    seconds_until_closed,
)

HEADER_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("bombs")
    with running_up(root / "data", root / "up.log", workers=1,
                    env={"INFERPLEX_PROFILE_ON_UPLOAD": "false",
                         "INFERPLEX_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}) as cp:
        yield cp


@pytest.fixture(scope="module")
def key(cp: ControlPlane) -> str:
    key = cp.create_tenant("acme")
    assert cp.upload(key, "mlp", models.mlp_onnx().data).status_code == 201
    cp.wait_model_status(key, "mlp", "ready")
    return key


def _still_serves(cp: ControlPlane, key: str) -> bool:
    x = np.ones((1, 64), np.float32)
    return http_infer(cp, key, "mlp", x).shape == (1, 10) and grpc_infer(cp, key, "mlp", x).shape == (1, 10)


@pytest.mark.parametrize(("body", "fix"), [
    (binary_body("INPUT0", "BYTES", BOMB_SHAPE, BOMB_DATA), "100000000 elements"),
    (binary_body("INPUT0", "FP32", [1] * 65, b"\0" * 4), "at most 64"),
    (binary_body("INPUT0", "FP32", [0, 2**70], b""), "too large for any tensor"),
    ((deep_json_body("INPUT0"), {}), "levels deep"),
    # the gateway parses these itself: the batch size of a binary request, a priority to drop
    ((b'{"inputs":' + b"[" * DEEP + b"]" * DEEP + b"}",
      {"Inference-Header-Content-Length": str(2 * DEEP + 11)}), "levels deep"),
    ((b'{"parameters":{"priority":' + b"[" * DEEP + b"]" * DEEP + b"}}", {}), "levels deep"),
])
def test_http_bomb_is_a_400_and_the_gateway_keeps_serving(
        cp: ControlPlane, key: str, body: tuple[bytes, dict[str, str]], fix: str) -> None:
    content, headers = body
    r = httpx.post(f"{cp.url}/v2/models/mlp/infer", content=content, headers={**auth(key), **headers},
                   timeout=30)
    assert r.status_code == 400 and fix in r.json()["error"], r.text
    assert _still_serves(cp, key)


@pytest.mark.parametrize(("datatype", "shape", "raw", "fix"), [
    ("BYTES", BOMB_SHAPE, BOMB_DATA, "100000000 elements"),
    ("FP32", [1] * 65, b"\0" * 4, "at most 64"),
    ("FP32", [0, 2**40, 2**40], b"", "too large for any tensor"),
])
def test_grpc_bomb_is_invalid_argument(cp: ControlPlane, key: str, datatype: str, shape: list[int],
                                       raw: bytes, fix: str) -> None:
    with grpc.insecure_channel(cp.grpc_url) as channel, pytest.raises(grpc.RpcError) as err:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            grpc_raw_request("mlp", "INPUT0", datatype, shape, raw),
            metadata=[("authorization", f"Bearer {key}")], timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fix in err.value.details()
    assert _still_serves(cp, key)


def test_deep_rest_body_is_a_400_in_the_error_form(cp: ControlPlane, key: str) -> None:
    with cp.admin() as c:
        r = c.post("/admin/tenants", content=b'{"name":' + b"[" * DEEP + b"]" * DEEP + b"}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nests" in r.json()["error"], r.text
    assert _still_serves(cp, key)


def test_gateway_closes_a_connection_that_never_finishes_its_headers(cp: ControlPlane, key: str) -> None:
    took, answer = seconds_until_closed(cp.http_port, b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n",
                                        timeout_s=10.0)
    assert HEADER_TIMEOUT_S / 2 <= took < 5.0  # the server starts its clock on connecting
    assert answer.startswith(b"HTTP/1.1 408")
    assert _still_serves(cp, key)


def test_up_gives_its_workers_the_header_timeout(cp: ControlPlane, key: str) -> None:
    # INFERPLEX_HEADER_TIMEOUT_S reaches up's workers too (their own default is 10 s)
    worker_ports = [int(i["http_url"].rsplit(":", 1)[1]) for i in cp.instances()]
    assert worker_ports
    for port in worker_ports:
        took, answer = seconds_until_closed(port, b"GET /v2/health/li", timeout_s=10.0)
        assert HEADER_TIMEOUT_S / 2 <= took < 5.0 and answer.startswith(b"HTTP/1.1 408")
    assert _still_serves(cp, key)


def test_rest_body_over_its_bound_is_a_413_before_the_body_is_sent(cp: ControlPlane, key: str) -> None:
    # headers only: the answer comes without waiting for the gigabyte they announce
    sent = (b"POST /admin/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{")
    took, answer = seconds_until_closed(cp.http_port, sent, timeout_s=10.0)
    assert answer.startswith(b"HTTP/1.1 413") and b"INFERPLEX_MAX_REST_BODY_BYTES" in answer, answer
    assert took < 5.0
    assert _still_serves(cp, key)


@pytest.mark.parametrize("form", ["JSON body with a priority", "JSON header of a binary request"])
def test_json_over_its_value_bound_is_a_413_before_the_gateway_parses_it(
        cp: ControlPlane, key: str, form: str) -> None:
    # 12 MB of `[],` (under the 64 MiB body limit) parses to ~270 MB: the gateway parses the
    # first form to drop the priority, the second to read the batch size
    bomb = b"[" + b"[]," * 4_000_000 + b"[]]"
    if form.startswith("JSON body"):
        content, headers = b'{"parameters":{"priority":' + bomb + b'},"inputs":[]}', {}
    else:
        content = b'{"inputs":[{"name":"INPUT0","shape":[1,64],"x":' + bomb + b"}]}"
        headers = {"Inference-Header-Content-Length": str(len(content))}
    before = peak_rss_bytes(cp.proc.popen.pid)
    r = httpx.post(f"{cp.url}/v2/models/mlp/infer", content=content, headers={**auth(key), **headers},
                   timeout=30)
    assert r.status_code == 413 and "INFERPLEX_MAX_JSON_VALUES" in r.json()["error"], r.text
    assert peak_rss_bytes(cp.proc.popen.pid) - before < 120 * 2**20
    assert _still_serves(cp, key)


def _worker_pids(cp: ControlPlane) -> list[int]:
    """up's worker processes (its children running `worker`)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == cp.proc.popen.pid and b"worker" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


BYTES_ELEMENTS = 10_000_000  # 60 MB of 2-byte BYTES elements: ~430 MB of objects decoded


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_bytes_data_for_an_fp32_input_is_refused_before_it_is_decoded(
        cp: ControlPlane, key: str, transport: str) -> None:
    raw = (struct.pack("<I", 2) + b"ab") * BYTES_ELEMENTS
    (worker,) = _worker_pids(cp)
    before = peak_rss_bytes(worker)
    fix = "inference input 'INPUT0' data-type is 'BYTES', but model 'mlp' expects 'FP32'"
    if transport == "http":
        content, headers = binary_body("INPUT0", "BYTES", [1, BYTES_ELEMENTS], raw)
        r = httpx.post(f"{cp.url}/v2/models/mlp/infer", content=content, headers={**auth(key), **headers},
                       timeout=60)
        assert r.status_code == 400 and fix in r.json()["error"], r.text
    else:
        with grpc.insecure_channel(cp.grpc_url, options=[("grpc.max_send_message_length", -1)]) as channel, \
                pytest.raises(grpc.RpcError) as err:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                grpc_raw_request("mlp", "INPUT0", "BYTES", [1, BYTES_ELEMENTS], raw),
                metadata=[("authorization", f"Bearer {key}")], timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fix in err.value.details()
    # the body itself (read, then joined) but none of the objects it would decode to
    assert peak_rss_bytes(worker) - before < 200 * 2**20
    assert _still_serves(cp, key)
