"""Bad inference input answers like Triton ({"error": ...}, 400/404, INVALID_ARGUMENT /
NOT_FOUND, Triton's wording) and the worker keeps serving others."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import SESSION_MAX_REQUEST_BYTES
from tests.support import models
from tests.support.worker import WorkerProcess, run_worker


def _post(worker: WorkerProcess, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{worker.http_url}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


GOOD = [_tensor("INPUT0", "INT32", [1, 16], list(range(16))), _tensor("INPUT1", "INT32", [1, 16], [1] * 16)]

CASES = {
    "unknown input name": (
        [GOOD[0], _tensor("INPUTX", "INT32", [1, 16], [1] * 16)], 400,
        "unexpected inference input 'INPUTX' for model 'simple'"),
    "wrong datatype": (
        [GOOD[0], _tensor("INPUT1", "FP32", [1, 16], [1.0] * 16)], 400,
        "inference input 'INPUT1' data-type is 'FP32', but model 'simple' expects 'INT32'"),
    "wrong shape": (
        [GOOD[0], _tensor("INPUT1", "INT32", [1, 8], [1] * 8)], 400,
        "unexpected shape for input 'INPUT1' for model 'simple'. Expected [-1,16], got [1,8]"),
    "missing input": (
        [GOOD[0]], 400,
        "expected 2 inputs but got 1 inputs for model 'simple'"),
    "batch over max_batch_size": (
        [_tensor(n, "INT32", [9, 16], [1] * 144) for n in ("INPUT0", "INPUT1")], 400,
        "batch-size must be <= 8"),
    "data does not match shape": (
        [GOOD[0], _tensor("INPUT1", "INT32", [1, 16], [1] * 15)], 400,
        "unexpected number of elements 15"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_json_request_gets_tritons_error_and_the_worker_keeps_serving(worker: WorkerProcess, case: str) -> None:
    inputs, status, message = CASES[case]
    code, body = _post(worker, "/v2/models/simple/infer", json.dumps({"inputs": inputs}).encode())
    assert code == status
    assert message in body["error"]
    code, body = _post(worker, "/v2/models/simple/infer", json.dumps({"inputs": GOOD}).encode())
    assert code == 200 and body["outputs"][0]["data"] == [i + 1 for i in range(16)]


def test_binary_byte_size_that_does_not_match_the_shape(worker: WorkerProcess) -> None:
    header = json.dumps({"inputs": [
        GOOD[0], {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 60}}]}).encode()
    code, body = _post(worker, "/v2/models/simple/infer", header + b"\0" * 60,
                       {"Inference-Header-Content-Length": str(len(header))})
    assert code == 400 and "unexpected total byte size 60 for input 'INPUT1', expecting 64" in body["error"]


def test_unknown_requested_output(worker: WorkerProcess) -> None:
    code, body = _post(worker, "/v2/models/simple/infer",
                       json.dumps({"inputs": GOOD, "outputs": [{"name": "OUTPUT9"}]}).encode())
    assert code == 400 and "unexpected inference output 'OUTPUT9' for model 'simple'" in body["error"]


def test_unknown_model_and_version_over_http_and_grpc(worker: WorkerProcess) -> None:
    code, body = _post(worker, "/v2/models/nosuch/infer", json.dumps({"inputs": GOOD}).encode())
    assert code == 404 and body["error"] == "Request for unknown model: 'nosuch' is not found"
    code, body = _post(worker, "/v2/models/simple/versions/3/infer", json.dumps({"inputs": GOOD}).encode())
    assert code == 404 and body["error"] == "Request for unknown model: 'simple' version 3 is not found"
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        inputs = models.simple_inputs(grpcclient, np.zeros((1, 16), np.int32))
        with pytest.raises(InferenceServerException, match="Request for unknown model: 'nosuch' is not found") as err:
            client.infer("nosuch", inputs)
        assert err.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException, match="version 3 is not found"):
            client.infer("simple", inputs, model_version="3")
        with pytest.raises(InferenceServerException, match="is not found"):
            client.get_model_metadata("nosuch")


def test_grpc_bad_input_is_invalid_argument(worker: WorkerProcess) -> None:
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        bad = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 16), np.float32))
        good = grpcclient.InferInput("INPUT1", [1, 16], "INT32")
        good.set_data_from_numpy(np.zeros((1, 16), np.int32))
        with pytest.raises(InferenceServerException, match="data-type is 'FP32', but model 'simple' expects 'INT32'") as err:
            client.infer("simple", [bad, good])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_malformed_json_body(worker: WorkerProcess) -> None:
    code, body = _post(worker, "/v2/models/simple/infer", b"{not json")
    assert code == 400 and body["error"]


def _read_answer(sock: socket.socket) -> str:
    """One whole HTTP response: status line, headers and body may arrive in separate segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_http_body_over_the_limit_is_refused_with_413_before_reading_it_all(worker: WorkerProcess) -> None:
    # Declare a body over the limit and send only a little of it: the answer must come anyway.
    with socket.create_connection(("127.0.0.1", worker.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {SESSION_MAX_REQUEST_BYTES + 1}\r\n\r\n".encode() + b"{" * 1000)
        answer = _read_answer(sock)
    assert answer.startswith("HTTP/1.1 413")
    assert "--max-request-bytes" in answer
    # chunked upload (no Content-Length): refused once what arrived passes the limit
    chunk = b"0" * (1 << 20)
    with socket.create_connection(("127.0.0.1", worker.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(SESSION_MAX_REQUEST_BYTES // len(chunk) + 2):
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except OSError:
            pass  # the worker may answer and close before we finish
        answer = _read_answer(sock)
    assert answer.startswith("HTTP/1.1 413")
    # tritonclient sees the message, and the worker still serves
    with httpclient.InferenceServerClient(worker.http_url) as client:
        inputs = models.simple_inputs(httpclient, np.zeros((1, 16), np.int32))
        width = SESSION_MAX_REQUEST_BYTES // 4 + 16
        huge = httpclient.InferInput("INPUT0", [1, width], "INT32")
        huge.set_data_from_numpy(np.zeros((1, width), np.int32))
        with pytest.raises(InferenceServerException, match="over the worker's limit"):
            client.infer("simple", [huge, inputs[1]])
        assert client.infer("simple", inputs).as_numpy("OUTPUT0").shape == (1, 16)


def test_grpc_message_over_the_limit_is_refused(worker: WorkerProcess) -> None:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(worker.grpc_url, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="simple")
        request.raw_input_contents.append(b"\0" * (SESSION_MAX_REQUEST_BYTES + 1))
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live


@pytest.fixture(scope="module")
def small_limits_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """Inference bodies up to 64 KiB, model loads up to 256 KiB: small, so nothing big is allocated."""
    with run_worker(tmp_path_factory.mktemp("limits"), "--demo", "--max-request-bytes", str(SMALL_INFER),
                    "--max-model-bytes", str(SMALL_MODEL)) as w:
        yield w


SMALL_INFER = 64 * 1024
SMALL_MODEL = 256 * 1024


def _padded_simple(name: str, size: int) -> tuple[str, dict[str, bytes]]:
    """The `simple` model plus an unused file that makes the load `size` bytes of files."""
    art = models.simple(name)
    pad = max(size - len(art.data), 0)
    return json.dumps(art.config), {"file:1/model.onnx": art.data, "file:1/padding.bin": b"\0" * pad}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_model_loads_may_exceed_the_inference_limit_up_to_max_model_bytes(
        small_limits_worker: WorkerProcess, transport: str) -> None:
    w = small_limits_worker
    module = grpcclient if transport == "grpc" else httpclient
    url = w.grpc_url if transport == "grpc" else w.http_url
    with module.InferenceServerClient(url) as client:
        # 3x the inference limit: refused as an inference body, fine as a model load
        config, files = _padded_simple(f"big_{transport}", 3 * SMALL_INFER)
        client.load_model(f"big_{transport}", config=config, files=files)
        assert client.is_model_ready(f"big_{transport}")
        config, files = _padded_simple(f"huge_{transport}", SMALL_MODEL + 1024)
        with pytest.raises(InferenceServerException, match="--max-model-bytes") as err:
            client.load_model(f"huge_{transport}", config=config, files=files)
        if transport == "grpc":
            assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert not client.is_model_ready(f"huge_{transport}")
        client.unload_model(f"big_{transport}")


def test_inference_over_max_request_bytes_is_refused_although_loads_may_be_bigger(
        small_limits_worker: WorkerProcess) -> None:
    w = small_limits_worker
    width = SMALL_INFER // 4 + 16  # one INT32 tensor just over the inference limit, under the model limit
    huge = np.zeros((1, width), np.int32)
    with grpcclient.InferenceServerClient(w.grpc_url) as client:
        inputs = [grpcclient.InferInput("INPUT0", [1, width], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(huge)
        inputs[1].set_data_from_numpy(np.zeros((1, 16), np.int32))
        with pytest.raises(InferenceServerException, match="over the worker's limit of 65536 bytes .--max-request-bytes.") as err:
            client.infer("simple", inputs)
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert _infer_ok(client, grpcclient)
    with httpclient.InferenceServerClient(w.http_url) as client:
        inputs = [httpclient.InferInput("INPUT0", [1, width], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(huge)
        inputs[1].set_data_from_numpy(np.zeros((1, 16), np.int32))
        with pytest.raises(InferenceServerException, match="--max-request-bytes"):
            client.infer("simple", inputs)
        assert _infer_ok(client, httpclient)
    code, body = _post(w, "/v2/models/simple/infer", b"{" + b" " * SMALL_INFER + b"}")
    assert code == 413 and "--max-request-bytes" in body["error"]


def _infer_ok(client, module) -> bool:
    inputs = models.simple_inputs(module, np.ones((1, 16), np.int32))
    return client.infer("simple", inputs).as_numpy("OUTPUT0").tolist() == [[2] * 16]
