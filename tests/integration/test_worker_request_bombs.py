"""Request bombs against a real worker process: each is a 400 / INVALID_ARGUMENT that says
what to fix, the worker's memory does not grow by what the request only declares, and it
keeps serving; connections that never finish their headers are closed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2_grpc

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
from tests.support.worker import WorkerProcess, run_worker

# the BYTES bomb alone used to take 763 MB, four at once 2.3 GB
RSS_GROWTH_LIMIT = 100 * 2**20


def _post(worker: WorkerProcess, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://{worker.http_url}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def _serves(worker: WorkerProcess) -> bool:
    with httpclient.InferenceServerClient(worker.http_url) as client:
        inputs = models.simple_inputs(httpclient, np.ones((1, 16), np.int32))
        return client.infer("simple", inputs).as_numpy("OUTPUT0").tolist() == [[2] * 16]


BOMBS = {
    "BYTES [1, 100000000] with 5 bytes": (binary_body("INPUT0", "BYTES", BOMB_SHAPE, BOMB_DATA),
                                          "100000000 elements"),
    "INT32 [1, 100000000] with 5 bytes": (binary_body("INPUT0", "INT32", BOMB_SHAPE, b"\0" * 5),
                                          "100000000 elements"),
    "rank 65": (binary_body("INPUT0", "INT32", [1] * 65, b"\0" * 4), "at most 64"),
    "[0, 2**70]": (binary_body("INPUT0", "INT32", [0, 2**70], b""), "too large for any tensor"),
    "negative dimension": (binary_body("INPUT0", "INT32", [-1, 16], b"\0" * 64), "negative dimension"),
    "JSON data shorter than its shape": (
        (json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1] * 8},
                                {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]}).encode(),
         {}), "elements 8 in 'data' for input 'INPUT0', expecting 16"),
    "50,000-deep JSON data": ((deep_json_body("INPUT0"), {}), "levels deep"),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_http_bomb_is_a_400_before_memory_is_spent(worker: WorkerProcess, bomb: str) -> None:
    (body, headers), fix = BOMBS[bomb]
    before = peak_rss_bytes(worker.proc.popen.pid)
    code, error = _post(worker, "/v2/models/simple/infer", body, headers)
    assert code == 400 and fix in error, error
    assert peak_rss_bytes(worker.proc.popen.pid) - before < RSS_GROWTH_LIMIT
    assert _serves(worker)


def test_deep_json_repository_body_is_a_400(worker: WorkerProcess) -> None:
    code, error = _post(worker, "/v2/repository/models/simple/load",
                        b'{"parameters":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}")
    assert code == 400 and "levels deep" in error
    assert _serves(worker)


@pytest.mark.parametrize(("datatype", "shape", "raw", "fix"), [
    ("BYTES", BOMB_SHAPE, BOMB_DATA, "100000000 elements"),
    ("INT32", [1] * 65, b"\0" * 4, "at most 64"),
    ("INT32", [0, 2**40, 2**40], b"", "too large for any tensor"),
    ("INT32", [-1, 16], b"\0" * 64, "negative dimension"),
])
def test_grpc_bombs_at_once_are_invalid_argument_before_memory_is_spent(
        worker: WorkerProcess, datatype: str, shape: list[int], raw: bytes, fix: str) -> None:
    request = grpc_raw_request("simple", "INPUT0", datatype, shape, raw)
    before = peak_rss_bytes(worker.proc.popen.pid)
    with grpc.insecure_channel(worker.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def one(_: int) -> grpc.RpcError:
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, timeout=30)
            return err.value

        with ThreadPoolExecutor(4) as pool:
            errors = list(pool.map(one, range(4)))
    for err in errors:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fix in err.details(), err.details()
    assert peak_rss_bytes(worker.proc.popen.pid) - before < RSS_GROWTH_LIMIT
    assert _serves(worker)


HEADER_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def impatient_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with run_worker(tmp_path_factory.mktemp("slowloris"), "--demo", "--header-timeout",
                    str(HEADER_TIMEOUT_S), "--max-header-bytes", "4KiB") as w:
        yield w


@pytest.mark.parametrize("sent", [b"", b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\n",
                                  b"GET /v2/health/li"])
def test_connection_that_never_finishes_its_headers_is_closed(impatient_worker: WorkerProcess,
                                                              sent: bytes) -> None:
    took, answer = seconds_until_closed(impatient_worker.http_port, sent, timeout_s=10.0)
    assert HEADER_TIMEOUT_S / 2 <= took < 5.0  # the server starts its clock on connecting
    assert answer.startswith(b"HTTP/1.1 408") and b"request headers did not arrive" in answer
    assert _serves(impatient_worker)


def test_headers_over_the_limit_are_431(impatient_worker: WorkerProcess) -> None:
    sent = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8192
    _, answer = seconds_until_closed(impatient_worker.http_port, sent, timeout_s=10.0)
    assert answer.startswith(b"HTTP/1.1 431") and b"over 4096 bytes" in answer, answer
    assert _serves(impatient_worker)


def test_json_with_more_values_than_its_bound_is_a_413_before_it_is_parsed(worker: WorkerProcess) -> None:
    # 3.9 MB of `[[]],` parses to ~120 MB of lists
    body = (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,16],"data":['
            + b"[[]]," * 780_000 + b"[[]]]}]}")
    before = peak_rss_bytes(worker.proc.popen.pid)
    code, error = _post(worker, "/v2/models/simple/infer", body)
    assert code == 413 and "values" in error and "--max-json-values" in error, error
    assert peak_rss_bytes(worker.proc.popen.pid) - before < RSS_GROWTH_LIMIT
    assert _serves(worker)
