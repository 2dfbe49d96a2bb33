"""Classification through the control plane (issue 11): the gateway advertises Triton's
classification extension, passes ``class_count`` through to the instance over HTTP and
gRPC, and merges a request into a batch only with requests asking for the same classes of
the same outputs, so every caller gets the classes it asked for, shaped [rows, N]."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import ControlPlane, auth, running_up
from tests.support.models import _onnx_bytes

CLASSES = 10
MODEL = "classifier"


def classifier_onnx() -> bytes:
    """SCORES = INPUT0 * 1 (FP32 [batch, 10]); LABELS = INPUT0 as INT32."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["INPUT0", "one"], ["SCORES"]),
         helper.make_node("Cast", ["INPUT0"], ["LABELS"], to=TensorProto.INT32)],
        "classifier",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", CLASSES])],
        [helper.make_tensor_value_info("SCORES", TensorProto.FLOAT, ["batch", CLASSES]),
         helper.make_tensor_value_info("LABELS", TensorProto.INT32, ["batch", CLASSES])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    return _onnx_bytes(graph)


def top(x: np.ndarray, count: int) -> list[list[bytes]]:
    """The classes Triton answers (value as C's %f, highest first, ties by lower index),
    computed here without the code under test."""
    return [[b"%f:%d" % (row[i], i) for i in sorted(range(row.size), key=lambda i: (-row[i], i))[:count]]
            for row in x]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, str]]:
    base = tmp_path_factory.mktemp("gateway-classification")
    with running_up(base / "data", base / "up.log", workers=1) as cp:
        key = cp.create_tenant("acme")
        r = cp.upload(key, MODEL, classifier_onnx())
        assert r.status_code in (200, 201, 202), r.text
        cp.wait_model_status(key, MODEL)
        yield cp, key


def _x(seed: int, rows: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).permutation(rows * CLASSES).reshape(rows, CLASSES).astype(np.float32) / 4


def _http(cp: ControlPlane, key: str, x: np.ndarray, count: int | None, output: str = "SCORES") -> Any:
    with httpclient.InferenceServerClient(cp.http_url, network_timeout=30) as client:
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(MODEL, [inp], headers=auth(key),
                               outputs=[httpclient.InferRequestedOutput(output, class_count=count or 0)])
        return result.as_numpy(output)


def _grpc(cp: ControlPlane, key: str, x: np.ndarray, count: int, output: str = "SCORES") -> Any:
    with grpcclient.InferenceServerClient(cp.grpc_url) as client:
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(MODEL, [inp], headers=auth(key), client_timeout=30,
                              outputs=[grpcclient.InferRequestedOutput(output, class_count=count)])
        return result.as_numpy(output)


def test_the_gateway_advertises_and_passes_class_count_through(plane: tuple[ControlPlane, str]) -> None:
    cp, key = plane
    with httpclient.InferenceServerClient(cp.http_url) as client:
        assert "classification" in client.get_server_metadata(headers=auth(key))["extensions"]
    x = _x(1, rows=2)
    assert _http(cp, key, x, 3).tolist() == top(x, 3)
    assert _grpc(cp, key, x, 4).tolist() == top(x, 4)
    ints = _grpc(cp, key, x * 4, 2, output="LABELS")
    assert ints.tolist() == [[b"%d:%d" % (int(row[i]), i) for i in np.argsort(-row, kind="stable")[:2]]
                             for row in (x * 4).astype(np.int32)]


def _stats(cp: ControlPlane, key: str) -> tuple[int, int]:
    with cp.client(key) as c:
        entry = c.get(f"/v2/models/{MODEL}/stats").json()["model_stats"][0]
    return int(entry["inference_count"]), int(entry["execution_count"])


def test_concurrent_requests_get_their_own_classes_and_merge_only_with_equal_ones(
        plane: tuple[ControlPlane, str]) -> None:
    cp, key = plane
    counts = [2, 2, 3, 5, None, 2, 3, 10]
    wrong: list[Any] = []

    def one(i: int) -> None:
        x = _x(100 + i, rows=1 + i % 2)
        count = counts[i % len(counts)]
        if i % 3:
            got, want = _http(cp, key, x, count), top(x, count) if count else x.tolist()
        else:  # tritonclient's gRPC output always carries a count: 0 would be refused
            got, want = _grpc(cp, key, x, count or 1), top(x, count or 1)
        if got.tolist() != want:
            wrong.append((count, got.tolist(), want))

    before = _stats(cp, key)
    deadline = time.monotonic() + 60
    while True:  # bursts until one batch held several requests (their answers checked each time)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(32)))
        assert not wrong, f"{len(wrong)} answers were not the caller's own classes: {wrong[:3]}"
        inferences, executions = (now - then for now, then in zip(_stats(cp, key), before, strict=True))
        if executions < inferences:
            break
        assert time.monotonic() < deadline, "no burst was merged into a batch: the test proves nothing"


@pytest.mark.parametrize("count", [-1, 11, 1.5])
def test_a_bad_class_count_is_a_400_naming_nothing_internal(plane: tuple[ControlPlane, str], count: Any) -> None:
    cp, key = plane
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, CLASSES], "data": [0.5] * CLASSES}],
            "outputs": [{"name": "SCORES", "parameters": {"classification": count}}]}
    r = httpx.post(f"{cp.url}/v2/models/{MODEL}/infer", content=json.dumps(body),
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "classification" in error and "'SCORES'" in error, error
    assert "acme" not in error and "__" not in error, error
    if isinstance(count, int) and count < 0:
        with pytest.raises(InferenceServerException) as err:
            _grpc(cp, key, _x(2), count)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "positive integer" in err.value.message()
