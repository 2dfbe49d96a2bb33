"""Request bombs at the shared decoders: each is an InvalidArgument (a 400 / INVALID_ARGUMENT)
that says what to fix, refused before memory is spent on what the request only declares."""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from kserve import grpc_codec, http_codec
from kserve.errors import InvalidArgument, PayloadTooLarge
from kserve.jsonbody import MAX_JSON_DEPTH, JsonBound, check_nesting, nesting_exceeds, values_exceed
from kserve.tensors import tensor_from_values

BOMB_SHAPE = [1, 100_000_000]
# well under what any of the bombs allocated before (the BYTES one: 800 MB)
PEAK_LIMIT = 4 * 2**20


@contextmanager
def allocation_peak() -> Iterator[Callable[[], int]]:
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refused_small(decode: Callable[[], Any]) -> str:
    """The decoder's refusal message; it must come before a large allocation."""
    with allocation_peak() as peak, pytest.raises(InvalidArgument) as err:
        decode()
    assert peak() < PEAK_LIMIT, f"decoding allocated {peak()} bytes before refusing"
    return err.value.message


def http_binary(datatype: str, shape: list[int], tail: bytes) -> Callable[[], Any]:
    head = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                                   "parameters": {"binary_data_size": len(tail)}}]}).encode()
    return lambda: http_codec.decode_infer_request(head + tail, len(head), "m", "")


def http_json(tensor: dict[str, Any], **top: Any) -> Callable[[], Any]:
    body = json.dumps({"inputs": [{"name": "x", **tensor}], **top}).encode()
    return lambda: http_codec.decode_infer_request(body, None, "m", "")


def grpc_raw(datatype: str, shape: list[int], raw: bytes) -> Callable[[], Any]:
    req = service_pb2.ModelInferRequest(model_name="m", inputs=[
        service_pb2.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=shape)])
    req.raw_input_contents.append(raw)
    return lambda: grpc_codec.decode_infer_request(req)


def test_bytes_shape_bomb_is_refused_before_its_object_array_exists() -> None:
    # the 60-byte request: BYTES [1, 100000000] with 5 bytes of data allocated 763 MB
    five = struct.pack("<I", 1) + b"a"
    assert "100000000 elements" in refused_small(http_binary("BYTES", BOMB_SHAPE, five))
    assert "100000000 elements" in refused_small(grpc_raw("BYTES", BOMB_SHAPE, five))


def test_bytes_count_is_checked_against_the_length_prefixes_the_data_can_hold() -> None:
    # a shape under the request's byte size, still more elements than 4-byte prefixes fit:
    # refused before the object array, not one element at a time after it
    with pytest.raises(InvalidArgument, match="declares 3000 elements but its 4000 bytes of data can "
                                              "hold at most 1000"):
        http_binary("BYTES", [3000], b"\x00" * 4000)()
    # every length prefix is checked against what remains
    with pytest.raises(InvalidArgument, match="element 0 declares 4294967295 bytes but only 4 remain"):
        http_binary("BYTES", [1], b"\xff\xff\xff\xff" + b"abcd")()


@pytest.mark.parametrize("datatype", ["FP32", "INT8"])
def test_fixed_size_shape_bomb_is_refused_by_its_byte_count(datatype: str) -> None:
    assert "whole request is" in refused_small(http_binary(datatype, BOMB_SHAPE, b"\x00" * 5))
    assert "whole request is" in refused_small(grpc_raw(datatype, BOMB_SHAPE, b"\x00" * 5))
    # under the request's size, the exact count * itemsize check still holds
    with pytest.raises(InvalidArgument, match="unexpected total byte size 5 for input 'x', expecting 8"):
        http_binary(datatype, [8 // {"FP32": 4, "INT8": 1}[datatype]], b"\x00" * 5)()


def test_more_than_64_dimensions_is_refused() -> None:
    shape = [1] * 65
    assert "65 dimensions in its shape; at most 64" in refused_small(
        http_binary("FP32", shape, b"\x00" * 4))
    assert "65 dimensions in its shape; at most 64" in refused_small(grpc_raw("FP32", shape, b"\x00" * 4))
    assert http_binary("FP32", [1] * 64, b"\x00" * 4)().inputs[0].data.ndim == 64


@pytest.mark.parametrize("shape", [[0, 2**70], [0, 2**40, 2**40], [2**63, 0]])
def test_zero_element_shape_with_impossible_dimensions_is_refused(shape: list[int]) -> None:
    # numpy raised ValueError reshaping these (a 500)
    assert "too large for any tensor" in refused_small(http_binary("FP32", shape, b""))
    if max(shape) < 2**63:  # what an int64 shape field can carry
        assert "too large for any tensor" in refused_small(grpc_raw("FP32", shape, b""))


def test_negative_dimensions_are_refused_over_both_transports() -> None:
    assert "negative dimension" in refused_small(http_binary("FP32", [-1, 1], b"\x00" * 4))
    assert "negative dimension" in refused_small(grpc_raw("FP32", [-1, 1], b"\x00" * 4))


def test_json_data_shorter_than_its_shape_is_refused() -> None:
    assert "whole request is" in refused_small(http_json({"datatype": "FP32", "shape": BOMB_SHAPE,
                                                          "data": [1.0]}))
    with pytest.raises(InvalidArgument, match="unexpected number of elements 6 in 'data' for input 'x', "
                                              r"expecting 8 \(shape \[2, 4\]\)"):
        http_json({"datatype": "INT32", "shape": [2, 4], "data": [[1, 2, 3], [4, 5, 6]]})()


def test_json_data_count_is_checked_before_the_values_are_converted() -> None:
    values = list(range(500_000))  # an int64 array of these would be 4 MB
    with allocation_peak() as peak, pytest.raises(InvalidArgument, match="elements 500000 in 'data'"):
        tensor_from_values("x", "INT64", [500_001], values, {})
    assert peak() < 2**20


def test_grpc_typed_contents_count_is_checked_before_they_are_copied() -> None:
    req = service_pb2.ModelInferRequest(model_name="m", inputs=[
        service_pb2.ModelInferRequest.InferInputTensor(name="x", datatype="INT32", shape=[3])])
    req.inputs[0].contents.int_contents.extend([1, 2])
    with pytest.raises(InvalidArgument, match="elements 2 in int_contents for input 'x', expecting 3"):
        grpc_codec.decode_infer_request(req)


DEEP = 50_000


@pytest.mark.parametrize("where", ["data", "parameters", "tensor parameters"])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(where: str) -> None:
    nested = "[" * DEEP + "]" * DEEP if where == "data" else '{"a":' * DEEP + "1" + "}" * DEEP
    tensor = '{"name":"x","datatype":"FP32","shape":[1],"data":' + (
        nested if where == "data" else "[1]")
    if where == "tensor parameters":
        tensor += ',"parameters":' + nested
    body = '{"inputs":[' + tensor + "}]"
    if where == "parameters":
        body += ',"parameters":' + nested
    body += "}"
    with pytest.raises(InvalidArgument, match=f"more than {MAX_JSON_DEPTH} levels deep"):
        http_codec.decode_infer_request(body.encode(), None, "m", "")


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nesting_bound_counts_structure_only() -> None:
    assert not nesting_exceeds(_nested(MAX_JSON_DEPTH))
    assert nesting_exceeds(_nested(MAX_JSON_DEPTH + 1))
    # brackets inside strings are text, escaped quotes and backslashes do not end strings
    assert not nesting_exceeds(json.dumps(["[" * 200, '\\"[[[' * 50, "{" * 100]).encode())
    hidden = json.dumps(["\\", '"' + "]" * 200, json.loads(_nested(MAX_JSON_DEPTH))]).encode()
    assert nesting_exceeds(hidden)
    with pytest.raises(InvalidArgument, match="the request body JSON nests"):
        check_nesting(_nested(DEEP), "request body")


def _data_body(data: bytes, datatype: str = "FP32") -> bytes:
    return b'{"inputs":[{"name":"x","datatype":"' + datatype.encode() + b'","shape":[1],"data":' + data + b"}]}"


def test_json_with_more_values_than_its_bound_is_refused_before_it_is_parsed() -> None:
    # the 3 MB of `[],`: json.loads made 67 MB of it
    body = _data_body(b"[" + b"[]," * 1_000_000 + b"[]]")
    with allocation_peak() as peak, pytest.raises(PayloadTooLarge) as err:
        http_codec.decode_infer_request(body, None, "m", "")
    assert peak() < PEAK_LIMIT, f"refusing allocated {peak()} bytes"
    assert f"more than {2**20} values" in err.value.message and "binary tensor data" in err.value.message
    bound = JsonBound(1000, "--max-json-values")
    with pytest.raises(PayloadTooLarge, match=r"more than 1000 values .*--max-json-values"):
        http_codec.decode_infer_request(_data_body(b"[" + b"0," * 1000 + b"0]"), None, "m", "", bound)
    # the JSON header of a binary request counts alone: binary data is not JSON
    head = json.dumps({"inputs": [{"name": "x", "datatype": "INT8", "shape": [5000],
                                   "parameters": {"binary_data_size": 5000}}]}).encode()
    assert http_codec.decode_infer_request(head + b",:[{" * 1250, len(head), "m", "", bound).inputs[0].data.size == 5000


def test_values_are_counted_outside_strings_only() -> None:
    # commas and colons inside BYTES strings are text, however many
    text = json.dumps(["a,b:c[d{" * 1000, "\\\",:" * 1000, ["x"] * 10]).encode()
    assert not values_exceed(text, 20)
    assert values_exceed(json.dumps(list(range(21))).encode(), 20)
    assert not values_exceed(json.dumps(list(range(20))).encode(), 20)


def test_nesting_walk_holds_a_window_of_the_body_not_all_of_its_strings() -> None:
    # more than MAX_JSON_DEPTH brackets take the exact walk; splitting a body of a million
    # short strings on its quotes at once took 14 times the body
    body = _data_body(b"[" + b"[]," * 100 + b'"ab",' * 500_000 + b'"ab"]', "BYTES")
    with allocation_peak() as peak:
        assert not nesting_exceeds(body)
    assert peak() < PEAK_LIMIT, f"the nesting walk allocated {peak()} bytes"
