"""The gateway swaps the instance-level model name for the tenant's in infer responses."""

from __future__ import annotations

import json

from controlplane.gateway import _rename_http_response

Q, NAME = "acme__mlp", "mlp"


def _binary_response(header: dict | str) -> tuple[bytes, dict[str, str]]:
    head = (header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))).encode()
    tail = b"\x00\x01\x02\x03" * 10
    return head + tail, {"content-type": "application/octet-stream",
                         "inference-header-content-length": str(len(head))}


def test_fast_swap_matches_a_full_reencode_and_keeps_binary_data() -> None:
    header = {"model_name": Q, "model_version": "1",
              "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 10],
                           "parameters": {"binary_data_size": 40}}]}
    body, headers = _binary_response(header)
    out, out_headers = _rename_http_response(body, headers, Q, NAME)
    hlen = int(out_headers["inference-header-content-length"])
    assert json.loads(out[:hlen]) == dict(header, model_name=NAME)
    assert out[hlen:] == body[int(headers["inference-header-content-length"]):]
    assert out_headers["content-type"] == "application/octet-stream"


def test_only_the_top_level_model_name_changes_when_a_tensor_shares_the_qualified_name() -> None:
    header = {"model_name": Q, "model_version": "1",
              "outputs": [{"name": Q, "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    body = json.dumps(header).encode()  # spaced JSON, no binary part
    out, out_headers = _rename_http_response(body, {"content-type": "application/json"}, Q, NAME)
    got = json.loads(out)
    assert got["model_name"] == NAME and got["outputs"][0]["name"] == Q
    assert "inference-header-content-length" not in out_headers


def test_a_server_that_writes_model_name_later_is_still_renamed() -> None:
    header = json.dumps({"model_version": "1", "model_name": Q, "outputs": []})
    body, headers = _binary_response(header)
    out, out_headers = _rename_http_response(body, headers, Q, NAME)
    hlen = int(out_headers["inference-header-content-length"])
    assert json.loads(out[:hlen]) == {"model_version": "1", "model_name": NAME, "outputs": []}
    assert out[hlen:] == b"\x00\x01\x02\x03" * 10


def test_a_name_that_only_starts_like_the_qualified_one_is_parsed_not_swapped() -> None:
    header = {"model_name": Q + "2", "model_version": "1", "outputs": []}
    body = json.dumps(header, separators=(",", ":")).encode()
    out, _ = _rename_http_response(body, {}, Q, NAME)
    assert json.loads(out)["model_name"] == NAME
