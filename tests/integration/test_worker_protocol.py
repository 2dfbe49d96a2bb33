"""The worker's KServe v2 surface through unmodified tritonclient (HTTP, gRPC, asyncio)."""

from __future__ import annotations

import gzip
import json
import urllib.request
import zlib

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

from tests.support.models import DATATYPES, mlp_reference, simple_inputs
from tests.support.worker import WorkerProcess

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


def test_health_and_server_metadata_over_http_and_grpc(worker: WorkerProcess) -> None:
    with httpclient.InferenceServerClient(worker.http_url) as http:
        assert http.is_server_live() and http.is_server_ready()
        meta = http.get_server_metadata()
    assert meta["name"] == "inferplex-worker"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])
    with grpcclient.InferenceServerClient(worker.grpc_url) as grpc:
        assert grpc.is_server_live() and grpc.is_server_ready()
        assert grpc.get_server_metadata().name == "inferplex-worker"
        assert list(grpc.get_server_metadata().extensions) == meta["extensions"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_simple_example_over_http_like_tritons_client(worker: WorkerProcess, binary: bool) -> None:
    with httpclient.InferenceServerClient(worker.http_url) as client:
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary)]
        result = client.infer("simple", simple_inputs(httpclient, A, B, binary), outputs=outputs, request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) is binary


def test_binary_data_per_output_mixes_json_and_binary(worker: WorkerProcess) -> None:
    with httpclient.InferenceServerClient(worker.http_url) as client:
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
        result = client.infer("simple", simple_inputs(httpclient, A, B), outputs=outputs)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert by_name["OUTPUT0"]["data"] == (A + B).reshape(-1).tolist()
    assert by_name["OUTPUT1"]["parameters"]["binary_data_size"] == 64
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_requested_output_subset_returns_only_that_output(worker: WorkerProcess) -> None:
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        result = client.infer("simple", simple_inputs(grpcclient, A, B),
                              outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_simple_example_over_grpc_echoes_request_id(worker: WorkerProcess) -> None:
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        result = client.infer("simple", simple_inputs(grpcclient, A, B), request_id="grpc-1")
    assert result.get_response().id == "grpc-1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


@pytest.mark.parametrize(("request_alg", "response_alg"), [("gzip", "gzip"), ("deflate", "deflate"),
                                                           ("gzip", None), (None, "deflate")])
def test_http_compression_both_directions(worker: WorkerProcess, request_alg: str | None,
                                          response_alg: str | None) -> None:
    with httpclient.InferenceServerClient(worker.http_url) as client:
        result = client.infer("simple", simple_inputs(httpclient, A, B),
                              request_compression_algorithm=request_alg,
                              response_compression_algorithm=response_alg)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_http_response_is_really_compressed_when_asked(worker: WorkerProcess) -> None:
    body = json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.reshape(-1).tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.reshape(-1).tolist()}]}).encode()
    req = urllib.request.Request(f"http://{worker.http_url}/v2/models/simple/infer", data=gzip.compress(body),
                                 headers={"Content-Encoding": "gzip", "Accept-Encoding": "deflate"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "deflate"
        answer = json.loads(zlib.decompress(r.read()))
    assert answer["outputs"][0]["data"] == (A + B).reshape(-1).tolist()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_grpc_compression(worker: WorkerProcess, algorithm: str) -> None:
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        result = client.infer("simple", simple_inputs(grpcclient, A, B), compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


async def test_asyncio_clients_http_and_grpc(worker: WorkerProcess) -> None:
    client = httpaio.InferenceServerClient(worker.http_url)
    try:
        assert await client.is_model_ready("simple")
        result = await client.infer("simple", simple_inputs(httpaio, A, B))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
        assert (await client.get_model_metadata("simple"))["inputs"][0]["shape"] == [-1, 16]
    finally:
        await client.close()
    gclient = grpcaio.InferenceServerClient(worker.grpc_url)
    try:
        assert await gclient.is_server_ready()
        result = await gclient.infer("simple", simple_inputs(grpcaio, A, B))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
        config = await gclient.get_model_config("simple", as_json=True)
        assert config["config"]["max_batch_size"] == 8
    finally:
        await gclient.close()


def test_model_metadata_ready_and_config(worker: WorkerProcess) -> None:
    with httpclient.InferenceServerClient(worker.http_url) as client:
        meta = client.get_model_metadata("simple")
        assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
            ("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])]
        assert client.is_model_ready("simple") and client.is_model_ready("simple", "1")
        assert not client.is_model_ready("simple", "2") and not client.is_model_ready("nope")
        config = client.get_model_config("simple")
    assert config["max_batch_size"] == 8
    assert config["input"][0] == {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]}
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        assert client.get_model_config("simple").config.input[1].name == "INPUT1"
        assert client.get_model_metadata("simple", "1").outputs[0].name == "OUTPUT0"


def _sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    dtype = DATATYPES[datatype][2]
    if datatype == "BYTES":
        values = [b"hello", b"", "\u00fc\u00f1\u00ee".encode(), b"x" * 40, b"a b", b"0"]
        return np.array(values[: int(np.prod(shape))], dtype=np.object_).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if datatype in ("FP16", "FP32", "FP64", "BF16"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    data = rng.integers(0, 100, shape).astype(dtype)
    data.flat[0], data.flat[-1] = info.max, info.min  # extremes survive the round trip
    return data


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("transport", ["http-binary", "http-json", "grpc"])
def test_every_datatype_round_trips(worker: WorkerProcess, datatype: str, transport: str) -> None:
    if datatype == "BF16" and transport == "http-json":
        pytest.skip("tritonclient only sends BF16 as binary over HTTP")
    model = worker.ensure_model(f"identity_{datatype.lower()}")
    data = _sample(datatype, (2, 3))
    if transport == "grpc":
        with grpcclient.InferenceServerClient(worker.grpc_url) as client:
            inp = grpcclient.InferInput("INPUT0", list(data.shape), datatype)
            inp.set_data_from_numpy(data)
            out = client.infer(model, [inp]).as_numpy("OUTPUT0")
    else:
        binary = transport == "http-binary"
        with httpclient.InferenceServerClient(worker.http_url) as client:
            inp = httpclient.InferInput("INPUT0", list(data.shape), datatype)
            inp.set_data_from_numpy(data, binary_data=binary)
            requested = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
            out = client.infer(model, [inp], outputs=requested).as_numpy("OUTPUT0")
    assert out.shape == data.shape
    if datatype == "BYTES":
        assert [bytes(x) if not isinstance(x, str) else x.encode() for x in out.reshape(-1)] == list(data.reshape(-1))
    elif datatype == "BF16":
        assert out.dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(out.astype(np.float32), data.astype(np.float32))
    else:
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data)


def test_torchscript_and_onnx_mlp_agree_with_reference(worker: WorkerProcess) -> None:
    worker.ensure_model("mlp")
    worker.ensure_model("mlp_pt")
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        onnx_in = grpcclient.InferInput("INPUT0", [5, 64], "FP32")
        onnx_in.set_data_from_numpy(x)
        onnx_out = client.infer("mlp", [onnx_in]).as_numpy("OUTPUT0")
        pt_in = grpcclient.InferInput("INPUT__0", [5, 64], "FP32")
        pt_in.set_data_from_numpy(x)
        pt_out = client.infer("mlp_pt", [pt_in]).as_numpy("OUTPUT__0")
    np.testing.assert_allclose(onnx_out, mlp_reference(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pt_out, mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_cnn_batch_of_eight(worker: WorkerProcess) -> None:
    worker.ensure_model("cnn")
    x = np.random.default_rng(4).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with httpclient.InferenceServerClient(worker.http_url) as client:
        inp = httpclient.InferInput("INPUT0", [8, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("cnn", [inp]).as_numpy("OUTPUT0")
    assert out.shape == (8, 10) and np.isfinite(out).all()
    # rows are independent: the first image alone gives the same logits
    with httpclient.InferenceServerClient(worker.http_url) as client:
        one = httpclient.InferInput("INPUT0", [1, 3, 32, 32], "FP32")
        one.set_data_from_numpy(x[:1])
        np.testing.assert_allclose(client.infer("cnn", [one]).as_numpy("OUTPUT0")[0], out[0], rtol=1e-4, atol=1e-5)


def _compute_ns_of_batch(stats: dict, batch: int) -> int:
    [entry] = stats["model_stats"]
    rows = [r for r in entry.get("batch_stats", []) if int(r["batch_size"]) == batch]
    return sum(int(r[k]["ns"]) for r in rows for k in ("compute_input", "compute_infer", "compute_output"))


def test_each_response_reports_its_compute_time_in_band_over_http_and_grpc(worker: WorkerProcess) -> None:
    """``inferplex_compute_ns``: exactly what the execution adds to the statistics, and
    unmodified tritonclient still parses the response around it."""
    worker.ensure_model("cnn")
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    reported: list[int] = []
    with httpclient.InferenceServerClient(worker.http_url) as http, \
            grpcclient.InferenceServerClient(worker.grpc_url) as grpc:
        before = _compute_ns_of_batch(http.get_inference_statistics("cnn"), 2)
        for binary in (True, False):
            inp = httpclient.InferInput("INPUT0", [2, 3, 32, 32], "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
            result = http.infer("cnn", [inp], outputs=out)
            assert result.as_numpy("OUTPUT0").shape == (2, 10)
            reported.append(result.get_response()["parameters"]["inferplex_compute_ns"])
        g_inp = grpcclient.InferInput("INPUT0", [2, 3, 32, 32], "FP32")
        g_inp.set_data_from_numpy(x)
        g_result = grpc.infer("cnn", [g_inp])
        assert g_result.as_numpy("OUTPUT0").shape == (2, 10)
        g_param = g_result.get_response().parameters["inferplex_compute_ns"]
        assert g_param.WhichOneof("parameter_choice") == "int64_param"
        reported.append(g_param.int64_param)
        after = _compute_ns_of_batch(http.get_inference_statistics("cnn"), 2)
    # a small CNN on two images: well above a microsecond, well below a second
    assert all(isinstance(ns, int) and 1_000 < ns < 1_000_000_000 for ns in reported), reported
    assert after - before == sum(reported)
