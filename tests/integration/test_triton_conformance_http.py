"""Differential conformance over HTTP: the same request to real Triton and to ``inferplex
worker``, serving the same ``simple`` / ``simple_string``, compared field by field.

Triton's answer is the reference; every difference the worker keeps on purpose is in an
allowlist below with its reason."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.support.conformance import assert_same_error_words, pair_exchange
from tests.support.procs import LoopbackServer

Servers = dict[str, LoopbackServer]
A = list(range(16))
B = [3] * 16


def _tensor(name: str, data: list[Any], shape: list[int] | None = None, datatype: str = "INT32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [1, 16], "data": data}


GOOD = {"inputs": [_tensor("INPUT0", A), _tensor("INPUT1", B)]}
STRINGS = {"inputs": [_tensor("INPUT0", [str(v) for v in A], datatype="BYTES"),
                      _tensor("INPUT1", [str(v) for v in B], datatype="BYTES")]}

# Deliberate differences in what Triton and the worker say about themselves.
SERVER_IDENTITY = ("name", "version", "extensions")  # inferplex-worker 0.1.0, and only the
# extensions it implements (Triton lists sequence, shared memory, trace, ... which it has)
MODEL_PLATFORM = ("platform",)  # same model, two forms: "python" on Triton, "onnxruntime_onnx" here


def _without(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


# ----------------------------------------------------------------------------- successes

SUCCESS_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "health live": ("GET", "/v2/health/live", {}),
    "health ready": ("GET", "/v2/health/ready", {}),
    "model ready": ("GET", "/v2/models/simple/ready", {}),
    "model version ready": ("GET", "/v2/models/simple/versions/1/ready", {}),
    "infer JSON": ("POST", "/v2/models/simple/infer", {"json_body": GOOD}),
    "infer JSON BYTES": ("POST", "/v2/models/simple_string/infer", {"json_body": STRINGS}),
    "infer on a version": ("POST", "/v2/models/simple/versions/1/infer", {"json_body": GOOD}),
    "request id echoed": ("POST", "/v2/models/simple/infer", {"json_body": GOOD | {"id": "req-42"}}),
    "requested output only": ("POST", "/v2/models/simple/infer",
                              {"json_body": GOOD | {"outputs": [{"name": "OUTPUT1"}]}}),
    "binary_data on one output": ("POST", "/v2/models/simple/infer", {"json_body": GOOD | {"outputs": [
        {"name": "OUTPUT0", "parameters": {"binary_data": False}},
        {"name": "OUTPUT1", "parameters": {"binary_data": True}}]}}),
    "binary_data_output for all": ("POST", "/v2/models/simple_string/infer",
                                   {"json_body": STRINGS | {"parameters": {"binary_data_output": True}}}),
    "gzip request, deflate answer": ("POST", "/v2/models/simple/infer", {
        "content": gzip.compress(b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,16],"data":'
                                 + str(A).encode() + b'},{"name":"INPUT1","datatype":"INT32","shape":[1,16],'
                                 b'"data":' + str(B).encode() + b'}]}'),
        "headers": {"Content-Encoding": "gzip", "Accept-Encoding": "deflate"}}),
    "deflate request, gzip answer": ("POST", "/v2/models/simple/infer", {
        "content": zlib.compress(b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,16],"data":'
                                 + str(A).encode() + b'},{"name":"INPUT1","datatype":"INT32","shape":[1,16],'
                                 b'"data":' + str(B).encode() + b'}]}'),
        "headers": {"Content-Encoding": "deflate", "Accept-Encoding": "gzip"}}),
}


@pytest.mark.parametrize("case", list(SUCCESS_CASES))
def test_success_answers_match_tritons(triton_and_worker: Servers, case: str) -> None:
    method, path, kwargs = SUCCESS_CASES[case]
    triton, worker = pair_exchange(triton_and_worker, method, path, **kwargs)
    assert triton.status == 200, triton
    # an empty health answer: Triton says text/plain, the worker application/json; no
    # client reads the type of an empty body (allowed: only where the body is empty)
    if triton.body is not None:
        assert worker.content_type == triton.content_type
    assert (worker.status, worker.content_encoding, worker.body, worker.binary) == \
        (triton.status, triton.content_encoding, triton.body, triton.binary)


def test_server_metadata_matches_but_for_identity(triton_and_worker: Servers) -> None:
    triton, worker = pair_exchange(triton_and_worker, "GET", "/v2")
    assert worker.status == triton.status == 200
    assert _without(worker.body, SERVER_IDENTITY) == _without(triton.body, SERVER_IDENTITY)
    # every extension the worker claims, Triton has under the same name
    assert set(worker.body["extensions"]) <= set(triton.body["extensions"])


@pytest.mark.parametrize("path", ["/v2/models/simple", "/v2/models/simple/versions/1", "/v2/models/simple_string"])
def test_model_metadata_matches_but_for_platform(triton_and_worker: Servers, path: str) -> None:
    triton, worker = pair_exchange(triton_and_worker, "GET", path)
    assert worker.status == triton.status == 200
    assert _without(worker.body, MODEL_PLATFORM) == _without(triton.body, MODEL_PLATFORM)


# What clients read from a config (tritonclient users, perf_analyzer, the control plane).
# Triton also fills in every default of the schema; the worker returns what the model's
# config says (plus the backend): a reader of a field below sees the same.
CONFIG_FIELDS = ("name", "max_batch_size")
TENSOR_FIELDS = ("name", "data_type", "dims")


@pytest.mark.parametrize("model", ["simple", "simple_string"])
def test_model_config_fields_clients_read_match(triton_and_worker: Servers, model: str) -> None:
    triton, worker = pair_exchange(triton_and_worker, "GET", f"/v2/models/{model}/config")
    assert worker.status == triton.status == 200

    def read(config: dict[str, Any]) -> dict[str, Any]:
        return {**{k: config.get(k) for k in CONFIG_FIELDS},
                **{io: [{f: t.get(f) for f in TENSOR_FIELDS} for t in config[io]] for io in ("input", "output")},
                "dynamic_batching": config.get("dynamic_batching")}

    assert read(worker.body) == read(triton.body)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer_with_binary_flags_per_output(triton_and_worker: Servers, binary: bool) -> None:
    a = np.arange(48, dtype=np.int32).reshape(3, 16)
    b = np.full((3, 16), 7, dtype=np.int32)
    answers = {}
    for name, server in triton_and_worker.items():
        inputs = [httpclient.InferInput(n, [3, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for inp, x in zip(inputs, (a, b), strict=True):
            inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=not binary)]
        with httpclient.InferenceServerClient(server.http_url) as client:
            result = client.infer("simple", inputs, outputs=outputs, request_id="tc-1")
        response = result.get_response()
        response.pop("parameters", None)  # the worker's compute time (WORKER_ONLY_PARAMETERS)
        answers[name] = (response, result.as_numpy("OUTPUT0").tolist(), result.as_numpy("OUTPUT1").tolist())
    assert answers["worker"] == answers["triton"]
    assert answers["triton"][1] == (a + b).tolist()


# ----------------------------------------------------------------------------- errors

def _infer(body: dict[str, Any], model: str = "simple") -> tuple[str, str, dict[str, Any]]:
    return ("POST", f"/v2/models/{model}/infer", {"json_body": body})


# Errors where the worker answers Triton's status with Triton's words (and may add what to fix).
SAME_ERRORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "unknown model metadata": ("GET", "/v2/models/nope", {}),
    "unknown version metadata": ("GET", "/v2/models/simple/versions/2", {}),
    "unknown model config": ("GET", "/v2/models/nope/config", {}),
    "unknown model ready": ("GET", "/v2/models/nope/ready", {}),
    "unknown version ready": ("GET", "/v2/models/simple/versions/4/ready", {}),
    "unknown model stats": ("GET", "/v2/models/nope/stats", {}),
    "unknown version stats": ("GET", "/v2/models/simple/versions/4/stats", {}),
    "unknown model infer": ("POST", "/v2/models/nope/infer", {"json_body": GOOD}),
    "unknown version infer": ("POST", "/v2/models/simple/versions/3/infer", {"json_body": GOOD}),
    "unknown input": _infer({"inputs": [_tensor("INPUTX", A), _tensor("INPUT1", B)]}),
    "unknown output": _infer(GOOD | {"outputs": [{"name": "OUTPUTX"}]}),
    "wrong datatype": _infer({"inputs": [_tensor("INPUT0", A, datatype="FP32"), _tensor("INPUT1", B)]}),
    "wrong datatype, with an id": _infer({"id": "r1", "inputs": [_tensor("INPUT0", A), _tensor("INPUT1", B, datatype="FP32")]}),
    "wrong shape": _infer({"inputs": [_tensor("INPUT0", A[:15], [1, 15]), _tensor("INPUT1", B)]}),
    "no batch dimension": _infer({"inputs": [_tensor("INPUT0", A[:4], [4]), _tensor("INPUT1", B[:4], [4])]}),
    "no batch dimension, read as batch 16": _infer({"inputs": [_tensor("INPUT0", A, [16]), _tensor("INPUT1", B, [16])]}),
    "batch sizes differ": _infer({"inputs": [_tensor("INPUT0", A), _tensor("INPUT1", B * 2, [2, 16])]}),
    "batch sizes differ, inputs swapped": _infer({"inputs": [_tensor("INPUT1", A), _tensor("INPUT0", B * 2, [2, 16])]}),
    "shapes wrong, inputs swapped": _infer({"inputs": [_tensor("INPUT1", A[:4], [1, 4]), _tensor("INPUT0", B[:4], [1, 4])]}),
    "missing input": _infer({"inputs": [_tensor("INPUT0", A)]}),
    "no inputs": _infer({"inputs": []}),
    "batch too large": _infer({"inputs": [_tensor(n, list(range(144)), [9, 16]) for n in ("INPUT0", "INPUT1")]}),
    "BYTES for INT32": _infer({"inputs": [_tensor("INPUT0", [str(v) for v in A], datatype="BYTES"),
                                          _tensor("INPUT1", B)]}),
    "invalid datatype": _infer({"inputs": [_tensor("INPUT0", A), _tensor("INPUT1", B, datatype="BOGUS")]}),
}


@pytest.mark.parametrize("case", list(SAME_ERRORS))
def test_client_errors_get_tritons_status_and_words(triton_and_worker: Servers, case: str) -> None:
    method, path, kwargs = SAME_ERRORS[case]
    triton, worker = pair_exchange(triton_and_worker, method, path, **kwargs)
    assert triton.status >= 400, triton
    assert worker.status == triton.status, (triton, worker)
    assert_same_error_words(triton.error, worker.error)


# Triton answers 500 for a body its JSON reader cannot take, with that reader's words
# ("Unable to parse 'data': ..."). Deliberate: the worker answers 400 — the client's
# request is wrong, and a 5xx tells clients and the gateway to retry a request that cannot
# succeed — naming the same field, with what to send instead.
JSON_STRUCTURE_ERRORS: dict[str, tuple[tuple[str, str, dict[str, Any]], str]] = {
    "not JSON": (("POST", "/v2/models/simple/infer", {"content": b"{not json"}),
                 "failed to parse the request JSON buffer"),
    "no inputs key": (_infer({}), "'inputs'"),
    "no datatype": (_infer({"inputs": [_tensor("INPUT0", A), {"name": "INPUT1", "shape": [1, 16], "data": B}]}),
                    "'datatype'"),
    "strings as INT32 data": (_infer({"inputs": [_tensor("INPUT0", A), _tensor("INPUT1", ["x"] * 16)]}), "'data'"),
    "fewer data than the shape": (_infer({"inputs": [_tensor("INPUT0", A[:15]), _tensor("INPUT1", B)]}), "'data'"),
}


@pytest.mark.parametrize("case", list(JSON_STRUCTURE_ERRORS))
def test_malformed_json_is_a_client_error_naming_what_triton_names(triton_and_worker: Servers, case: str) -> None:
    (method, path, kwargs), named = JSON_STRUCTURE_ERRORS[case]
    triton, worker = pair_exchange(triton_and_worker, method, path, **kwargs)
    assert triton.status == 500 and named in triton.error, triton
    assert worker.status == 400 and named in worker.error, worker


# Other deliberate differences, each with its reason: both refuse, the worker with 400 and
# its own words. The tests only hold both to refusing.
DELIBERATE_ERRORS: dict[str, tuple[tuple[str, str, dict[str, Any]], str]] = {
    # Triton: "input 'INPUT0' already exists in request"; the worker's decoder refuses it
    # before the request exists, saying to give each input once
    "input given twice": (_infer({"inputs": [_tensor("INPUT0", A), _tensor("INPUT0", B)]}), "input 'INPUT0'"),
    # Triton: "unexpected size for input 'INPUT1', expecting 64 additional bytes"; the
    # worker says the Inference-Header-Content-Length header is what is missing
    "binary size without the header": (_infer({"inputs": [_tensor("INPUT0", A), {
        "name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}]}),
        "'INPUT1'"),
    # Triton does not check the gzip stream and fails later on the raw bytes ("Raw request
    # must only have 1 input"); the worker says the body is not gzip
    "not gzip": (("POST", "/v2/models/simple/infer", {"content": b"garbage", "headers": {"Content-Encoding": "gzip"}}),
                 ""),
    # Triton: 501 "Unsupported compression type"; the worker: 400 naming the encodings it takes
    "unsupported encoding": (("POST", "/v2/models/simple/infer",
                              {"content": b"{}", "headers": {"Content-Encoding": "br"}}), ""),
}


@pytest.mark.parametrize("case", list(DELIBERATE_ERRORS))
def test_deliberately_different_errors_are_still_refusals(triton_and_worker: Servers, case: str) -> None:
    (method, path, kwargs), common = DELIBERATE_ERRORS[case]
    triton, worker = pair_exchange(triton_and_worker, method, path, **kwargs)
    assert triton.status >= 400 and worker.status == 400, (triton, worker)
    assert common in triton.error and common in worker.error, (triton, worker)
    # the worker's answer still works afterwards
    assert pair_exchange(triton_and_worker, "POST", "/v2/models/simple/infer", json_body=GOOD)[1].status == 200
