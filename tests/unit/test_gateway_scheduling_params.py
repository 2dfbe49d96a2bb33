"""A tenant's "priority" never reaches a shared instance (Triton orders its queue by it)."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.http as httpclient

from controlplane.gateway import _without_scheduling_parameters_http


def _binary_request(**infer_kwargs: object) -> tuple[bytes, dict[str, str]]:
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4), binary_data=True)
    body, hlen = httpclient.InferenceServerClient.generate_request_body([inp], **infer_kwargs)
    return body, {"inference-header-content-length": str(hlen)}


def test_priority_is_dropped_and_the_binary_tail_kept_with_a_new_header_length() -> None:
    body, headers = _binary_request(priority=7, request_id="r1")
    out, out_headers = _without_scheduling_parameters_http(body, headers)
    hlen = int(out_headers["inference-header-content-length"])
    head = json.loads(out[:hlen])
    assert "priority" not in head.get("parameters", {}) and head["id"] == "r1"
    assert out[hlen:] == body[int(headers["inference-header-content-length"]):]
    assert np.frombuffer(out[hlen:], np.float32).tolist() == [0, 1, 2, 3]


def test_pure_json_request_is_rewritten_without_a_header_length() -> None:
    body = json.dumps({"parameters": {"priority": 1, "keep": "x"},
                       "inputs": [{"name": "I", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode()
    out, headers = _without_scheduling_parameters_http(body, {})
    assert headers == {} and json.loads(out)["parameters"] == {"keep": "x"}


def test_requests_without_priority_are_passed_through_untouched() -> None:
    body, headers = _binary_request(request_id="r2")
    out, out_headers = _without_scheduling_parameters_http(body, headers)
    assert out is body and out_headers is headers
    # the word elsewhere (an input's parameters, a request id) is not a request parameter
    body = json.dumps({"id": "priority", "inputs": [{"name": "I", "shape": [1], "datatype": "FP32",
                       "data": [1.0], "parameters": {"priority": 3}}]}).encode()
    out, _ = _without_scheduling_parameters_http(body, {})
    assert out is body
