"""The gateway reads the worker's in-band compute time (``inferplex_compute_ns``) from
infer responses: only from the top-level "parameters", never from what a tenant controls."""

from __future__ import annotations

import json

import pytest
from tritonclient.grpc import service_pb2

from controlplane.gateway import grpc_compute_s, http_compute_s

KEY = "inferplex_compute_ns"


def _response(header: dict, binary_tail: bytes = b"") -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header, separators=(",", ":")).encode()
    if not binary_tail:
        return head, {"content-type": "application/json"}
    return head + binary_tail, {"content-type": "application/octet-stream",
                                "inference-header-content-length": str(len(head))}


def _worker_header(**extra: object) -> dict:
    header: dict = {"model_name": "acme__m", "model_version": "1", "id": "r1"}
    header.update(extra)
    header.setdefault("outputs", [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}])
    return header


def test_the_top_level_parameter_is_read_json_and_binary() -> None:
    body, headers = _response(_worker_header(parameters={KEY: 1_234_567}))
    assert http_compute_s(body, headers) == pytest.approx(1.234567e-3)
    out = [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]
    body, headers = _response(_worker_header(parameters={KEY: 5_000}, outputs=out), b"\x00" * 8)
    assert http_compute_s(body, headers) == pytest.approx(5e-6)


def test_whitespace_and_parameters_after_outputs_are_accepted() -> None:
    header = json.dumps({"model_name": "m", "outputs": [{"name": "o", "data": [1]}],
                         "parameters": {"other": "x", KEY: 42}}, indent=2).encode()
    assert http_compute_s(header, {}) == pytest.approx(42e-9)


def test_a_response_without_it_gives_none() -> None:  # Triton's
    body, headers = _response(_worker_header(parameters={"sequence_id": 3}))
    assert http_compute_s(body, headers) is None
    assert http_compute_s(b"", {}) is None


@pytest.mark.parametrize("header", [
    # an output named like the parameter, with the parameter in its own parameters
    _worker_header(outputs=[{"name": KEY, "datatype": "INT64", "shape": [1], "data": [7],
                             "parameters": {KEY: 7}}]),
    # BYTES data that spells the key and a value, even with JSON-looking braces
    _worker_header(outputs=[{"name": "o", "datatype": "BYTES", "shape": [2],
                             "data": [f'"parameters":{{"{KEY}":7}}', f'{{"{KEY}":7}}']}]),
    # a tenant-chosen request id that spells it
    _worker_header(id=f'x","parameters":{{"{KEY}":7}},"y":"'),
    # nested one level deeper inside the parameters
    _worker_header(parameters={"inner": {KEY: 7}}),
    # at the top level, outside "parameters"
    _worker_header(**{KEY: 7}),
])
def test_tenant_controlled_names_data_and_ids_cannot_forge_it(header: dict) -> None:
    body, headers = _response(header)
    assert http_compute_s(body, headers) is None
    # ... and a real one after them is still found
    body, headers = _response(dict(header, parameters={**header.get("parameters", {}), KEY: 9}))
    assert http_compute_s(body, headers) == pytest.approx(9e-9)


def test_binary_tensor_data_after_the_json_header_is_not_searched() -> None:
    tail = json.dumps({"parameters": {KEY: 7}}).encode()
    body, headers = _response(_worker_header(outputs=[{"name": "o", "datatype": "BYTES", "shape": [1],
                                                       "parameters": {"binary_data_size": len(tail)}}]), tail)
    assert http_compute_s(body, headers) is None


def test_non_integer_values_and_a_bad_header_length_are_ignored() -> None:
    for value in ("7", 7.5, -7, None):
        body, headers = _response(_worker_header(parameters={KEY: value}))
        assert http_compute_s(body, headers) is None, value
    body, _ = _response(_worker_header(parameters={KEY: 7}))
    assert http_compute_s(body, {"inference-header-content-length": "x"}) is None


def test_grpc_reads_the_int64_parameter_only() -> None:
    response = service_pb2.ModelInferResponse(model_name="m")
    assert grpc_compute_s(response) is None
    assert KEY not in response.parameters  # reading did not create it
    response.parameters[KEY].int64_param = 2_500_000
    assert grpc_compute_s(response) == pytest.approx(2.5e-3)
    response.parameters[KEY].string_param = "2500000"
    assert grpc_compute_s(response) is None


def test_the_worker_layout_fast_path_skips_escaped_ids_and_other_parameters() -> None:
    forged = f'x\\","parameters":{{"{KEY}":7}},"y":"'
    header = {"model_name": "acme__m", "model_version": "1", "id": forged,
              "parameters": {"a": "}", "b": -1.5e3, "c": True, KEY: 9}, "outputs": []}
    body = json.dumps(header, separators=(",", ":")).encode()
    assert http_compute_s(body, {}) == pytest.approx(9e-9)
    # the same header with whitespace takes the structural walk and agrees
    assert http_compute_s(json.dumps(header, indent=1).encode(), {}) == pytest.approx(9e-9)
