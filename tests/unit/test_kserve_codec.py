"""The KServe v2 codec against itself and against unmodified tritonclient."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from kserve import grpc_codec, http_codec
from kserve.compression import compress, decompress
from kserve.datatypes import (
    V2_TO_NUMPY,
    config_type_to_v2,
    element_size,
    numpy_to_v2,
    v2_to_config_type,
)
from kserve.errors import Internal, InvalidArgument, PayloadTooLarge
from kserve.tensors import InferRequest, InferResponse, RequestedOutput
from tests.support import kserve_client_codec as client

ALL_TYPES = list(V2_TO_NUMPY)


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    n = int(np.prod(shape))
    if datatype == "BYTES":
        words = [b"", b"alpha", "\u00fcber".encode(), b"x" * 300, b"0", b"end"]
        return np.array([words[i % len(words)] for i in range(n)], dtype=np.object_).reshape(shape)
    if datatype == "BOOL":
        return (np.arange(n) % 3 == 0).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    values = np.arange(n) - (n // 2 if dtype.kind in "if" or datatype == "BF16" else 0)
    return (
        (values * (1.5 if dtype.kind == "f" or datatype == "BF16" else 1))
        .astype(dtype)
        .reshape(shape)
    )


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected)


def http_request(body: dict, tail: bytes = b"") -> tuple[bytes, int | None]:
    header = json.dumps(body).encode()
    return (header + tail, len(header)) if tail else (header, None)


def decode(body: dict, tail: bytes = b"") -> InferRequest:
    data, hl = http_request(body, tail)
    return http_codec.decode_infer_request(data, hl, "m", "1")


# ---------------------------------------------------------------- datatypes


def test_datatype_maps_round_trip_and_know_sizes() -> None:
    for v2, dt in V2_TO_NUMPY.items():
        assert numpy_to_v2(dt) == v2
        assert config_type_to_v2(v2_to_config_type(v2)) == v2
    assert v2_to_config_type("BYTES") == "TYPE_STRING"
    assert config_type_to_v2("TYPE_STRING") == "BYTES"
    assert config_type_to_v2("TYPE_FP32") == "FP32" and config_type_to_v2("TYPE_BF16") == "BF16"
    assert element_size("FP16") == 2 and element_size("BF16") == 2
    assert element_size("INT64") == 8 and element_size("BOOL") == 1
    assert element_size("BYTES") is None
    assert numpy_to_v2(np.dtype("S5")) == "BYTES"
    assert V2_TO_NUMPY["BF16"] == np.dtype(ml_dtypes.bfloat16)


def test_unknown_datatypes_are_refused_with_the_valid_list() -> None:
    with pytest.raises(InvalidArgument, match="use one of BOOL"):
        numpy_to_v2(np.dtype(np.complex64))
    with pytest.raises(InvalidArgument, match="TYPE_FP32"):
        config_type_to_v2("TYPE_FLOAT")
    with pytest.raises(InvalidArgument):
        v2_to_config_type("FLOAT32")


# ---------------------------------------------------------------- HTTP, our own encoder


@pytest.mark.parametrize("datatype", ALL_TYPES)
@pytest.mark.parametrize("binary", [True, False])
def test_http_request_and_response_round_trip_every_datatype(datatype: str, binary: bool) -> None:
    a = sample(datatype)
    req = InferRequest("m", "1", "rid", {"custom": 3}, [client.tensor("X", a)], [])
    body, hl = client.http_encode_infer_request(req, binary=binary)
    assert (hl is not None) == binary
    got = http_codec.decode_infer_request(body, hl, "m", "1")
    assert got.id == "rid" and got.parameters == {"custom": 3}
    assert_same(got.inputs[0].data, a)

    resp = InferResponse("m", "1", "rid", [client.tensor("Y", a)])
    body, hl = http_codec.encode_infer_response(resp, [], default_binary=binary)
    back = client.http_decode_infer_response(body, hl)
    assert back.id == "rid"
    assert_same(back.outputs[0].data, a)


def test_http_decodes_nested_json_data_in_row_major_order() -> None:
    req = decode(
        {
            "inputs": [
                {"name": "A", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                {"name": "B", "datatype": "BYTES", "shape": [2, 1], "data": [["x"], [""]]},
            ]
        }
    )
    assert_same(req.inputs[0].data, np.array([[1, 2], [3, 4]], dtype=np.int32))
    assert req.inputs[1].data.tolist() == [[b"x"], [b""]]


def test_http_mixed_json_and_binary_inputs_take_tail_slices_in_order() -> None:
    a = np.arange(6, dtype=np.float32)
    c = np.arange(3, dtype=np.int64)
    tail = a.tobytes() + c.tobytes()
    req = decode(
        {
            "id": "7",
            "inputs": [
                {
                    "name": "A",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": 24},
                },
                {"name": "B", "datatype": "FP64", "shape": [1], "data": [0.5]},
                {
                    "name": "C",
                    "datatype": "INT64",
                    "shape": [3],
                    "parameters": {"binary_data_size": 24},
                },
            ],
            "outputs": [{"name": "O1", "parameters": {"binary_data": True}}, {"name": "O2"}],
        },
        tail,
    )
    assert [t.name for t in req.inputs] == ["A", "B", "C"]
    assert_same(req.inputs[0].data, a.reshape(2, 3))
    assert_same(req.inputs[1].data, np.array([0.5]))
    assert_same(req.inputs[2].data, c)
    assert req.inputs[0].parameters == {}  # wire detail is not leaked to the model
    assert req.outputs == [RequestedOutput("O1", True), RequestedOutput("O2", None)]


def test_http_response_honours_per_output_binary_flag_over_request_default() -> None:
    resp = InferResponse(
        "m",
        "2",
        "",
        [
            client.tensor("J", np.ones(2, np.float32)),
            client.tensor("B", np.zeros(3, np.int8)),
        ],
    )
    outputs = [RequestedOutput("J", binary_data=False), RequestedOutput("B", binary_data=True)]
    body, hl = http_codec.encode_infer_response(resp, outputs, default_binary=False)
    assert hl is not None
    header = json.loads(body[:hl])
    assert "id" not in header  # empty id is omitted, like Triton
    assert header["outputs"][0]["data"] == [1.0, 1.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 3}
    assert body[hl:] == b"\x00\x00\x00"

    # request-level binary_data_output applies where the output says nothing
    body, hl = http_codec.encode_infer_response(resp, [RequestedOutput("J", False)], True)
    header = json.loads(body[:hl])
    assert "data" in header["outputs"][0] and "data" not in header["outputs"][1]


def test_http_all_json_response_has_no_header_length() -> None:
    resp = InferResponse("m", "1", "", [client.tensor("O", np.array([[1, 2]], np.uint16))])
    body, hl = http_codec.encode_infer_response(resp, [])
    assert hl is None
    assert json.loads(body)["outputs"][0] == {
        "name": "O",
        "datatype": "UINT16",
        "shape": [1, 2],
        "data": [1, 2],
    }


def test_http_bytes_output_that_is_not_utf8_goes_binary_even_if_json_asked() -> None:
    a = np.array([b"ok", b"\xff\xfe", b""], dtype=np.object_)
    resp = InferResponse("m", "1", "", [client.tensor("S", a)])
    body, hl = http_codec.encode_infer_response(resp, [RequestedOutput("S", binary_data=False)])
    assert hl is not None
    result = thttp.InferenceServerClient.parse_response_body(body, header_length=hl)
    assert result.as_numpy("S").tolist() == [b"ok", b"\xff\xfe", b""]


def test_encode_error_is_the_v2_error_body() -> None:
    assert json.loads(http_codec.encode_error("bad 'x'")) == {"error": "bad 'x'"}


# ---------------------------------------------------------------- HTTP vs tritonclient


def triton_http_body(
    arrays: dict[str, np.ndarray], binary: bool, outputs: list | None = None, **kw
) -> tuple[bytes, int | None]:
    inputs = []
    for name, a in arrays.items():
        dt = numpy_to_v2(a.dtype)
        inp = thttp.InferInput(name, list(a.shape), dt)
        inp.set_data_from_numpy(a, binary_data=binary or dt == "BF16")
        inputs.append(inp)
    return thttp.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kw)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_requests_decode_for_every_datatype(binary: bool) -> None:
    arrays = {f"IN_{dt}": sample(dt) for dt in ALL_TYPES}
    arrays["IN_BYTES"] = np.array([[b"a", b""], ["ü".encode(), b"zz"]], dtype=np.object_)
    outputs = [thttp.InferRequestedOutput("O", binary_data=False)]
    body, hl = triton_http_body(arrays, binary, outputs, request_id="abc", priority=2, timeout=100)
    req = http_codec.decode_infer_request(body, hl, "m", "1")
    assert req.id == "abc"
    assert req.parameters == {"priority": 2, "timeout": 100}
    assert req.outputs == [RequestedOutput("O", binary_data=False)]
    for t in req.inputs:
        assert_same(t.data, arrays[t.name])


def test_tritonclient_http_without_outputs_asks_all_outputs_binary() -> None:
    body, hl = triton_http_body({"X": np.zeros(2, np.float32)}, binary=True)
    req = http_codec.decode_infer_request(body, hl, "m", "1")
    assert req.outputs == [] and req.binary_data_output is True


@pytest.mark.parametrize("default_binary", [True, False])
def test_tritonclient_http_parses_our_responses_for_every_datatype(default_binary: bool) -> None:
    arrays = {f"OUT_{dt}": sample(dt, (3, 2)) for dt in ALL_TYPES}
    resp = InferResponse("m", "1", "id9", [client.tensor(n, a) for n, a in arrays.items()])
    body, hl = http_codec.encode_infer_response(resp, [], default_binary)
    result = thttp.InferenceServerClient.parse_response_body(body, header_length=hl)
    assert result.get_response()["id"] == "id9"
    for name, a in arrays.items():
        got = result.as_numpy(name)
        if a.dtype.kind in "O":
            # JSON BYTES come back as str in tritonclient; binary ones as bytes
            got = np.array([v if isinstance(v, bytes) else v.encode() for v in got.ravel()], object)
            assert got.tolist() == a.ravel().tolist()
        elif not default_binary and name == "OUT_BF16":
            # tritonclient rebuilds JSON data with the v2 dtype; compare values
            assert np.array_equal(got.astype(np.float32), a.astype(np.float32))
        else:
            assert_same(got, a)


def test_tritonclient_http_parses_compressed_responses() -> None:
    resp = InferResponse("m", "1", "", [client.tensor("O", np.arange(1000, dtype=np.int64))])
    body, hl = http_codec.encode_infer_response(resp, [], True)
    for accept, expected in [("gzip", "gzip"), ("deflate", "deflate")]:
        packed, encoding = compress(body, accept)
        assert encoding == expected and len(packed) < len(body)
        result = thttp.InferenceServerClient.parse_response_body(
            packed, header_length=hl, content_encoding=encoding
        )
        assert_same(result.as_numpy("O"), np.arange(1000, dtype=np.int64))


# ---------------------------------------------------------------- HTTP malformed input


def test_http_bad_json_says_so() -> None:
    with pytest.raises(InvalidArgument, match="failed to parse the request JSON"):
        http_codec.decode_infer_request(b"{not json", None, "m", "1")
    with pytest.raises(InvalidArgument, match="must be an object"):
        http_codec.decode_infer_request(b"[1]", None, "m", "1")
    with pytest.raises(InvalidArgument, match="no 'inputs'"):
        http_codec.decode_infer_request(b"{}", None, "m", "1")


@pytest.mark.parametrize(
    ("tensor", "fix"),
    [
        ({"datatype": "FP32", "shape": [1], "data": [1]}, "non-empty string 'name'"),
        ({"name": "X", "shape": [1], "data": [1]}, "has no 'datatype'; give one of BOOL"),
        ({"name": "X", "datatype": "FLOAT", "shape": [1], "data": [1]}, "invalid datatype for input X: 'FLOAT'; use one of BOOL"),
        ({"name": "X", "datatype": "FP32", "data": [1]}, "'shape' as a list of integers"),
        ({"name": "X", "datatype": "FP32", "shape": [1, -1], "data": [1]}, "negative dimension"),
        ({"name": "X", "datatype": "FP32", "shape": [1]}, "neither 'data' nor"),
        (
            {"name": "X", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5]},
            "unexpected number of elements 5 in 'data' for input 'X', expecting 6",
        ),
        ({"name": "X", "datatype": "INT32", "shape": [2], "data": [1, 2.5]}, "must hold integers"),
        ({"name": "X", "datatype": "UINT8", "shape": [1], "data": [300]}, "out of range for UINT8"),
        ({"name": "X", "datatype": "BOOL", "shape": [1], "data": [1]}, "true/false"),
        ({"name": "X", "datatype": "FP32", "shape": [2], "data": ["a", "b"]}, "got strings"),
        ({"name": "X", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3]]}, "rectangular"),
        ({"name": "X", "datatype": "BYTES", "shape": [1], "data": [5]}, "must hold strings"),
        (
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [1],
                "parameters": {"shared_memory_region": "r"},
            },
            "shared memory",
        ),
    ],
)
def test_http_malformed_tensor_is_refused_with_what_to_fix(tensor: dict, fix: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode({"inputs": [tensor]})
    assert fix in err.value.message


def test_http_duplicate_input_names_are_refused() -> None:
    x = {"name": "X", "datatype": "INT8", "shape": [1], "data": [1]}
    with pytest.raises(InvalidArgument, match="'X' appears more than once"):
        decode({"inputs": [x, x]})
    with pytest.raises(InvalidArgument, match="requested more than once"):
        decode({"inputs": [x], "outputs": [{"name": "O"}, {"name": "O"}]})


def binary_input(size: int, datatype: str = "FP32", shape: list[int] | None = None) -> dict:
    return {
        "name": "INPUT0",
        "datatype": datatype,
        "shape": shape or [16],
        "parameters": {"binary_data_size": size},
    }


def test_http_binary_size_not_matching_shape_uses_triton_wording() -> None:
    with pytest.raises(InvalidArgument) as err:
        decode({"inputs": [binary_input(60)]}, b"\x00" * 60)
    assert "unexpected total byte size 60 for input 'INPUT0', expecting 64" in err.value.message


def test_http_binary_tail_shorter_or_longer_than_declared_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="only 40 bytes of binary data remain"):
        decode({"inputs": [binary_input(64)]}, b"\x00" * 40)
    with pytest.raises(InvalidArgument, match="80 bytes after the JSON but the inputs declare 64"):
        decode({"inputs": [binary_input(64)]}, b"\x00" * 80)


def test_http_binary_without_header_length_or_with_a_bad_one_is_refused() -> None:
    header = json.dumps({"inputs": [binary_input(64)]}).encode()
    with pytest.raises(InvalidArgument, match="Inference-Header-Content-Length"):
        http_codec.decode_infer_request(header, None, "m", "1")
    with pytest.raises(InvalidArgument, match="byte length of the JSON part"):
        http_codec.decode_infer_request(header + b"\x00" * 64, len(header) + 100, "m", "1")


def test_http_bad_bytes_serialization_is_refused() -> None:
    entry = binary_input(0, "BYTES", [2])
    good = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    for tail, fix in [
        (good[:-1], "declares 2 bytes but only 1 remain"),
        (good[:5], "declares 2 elements but its 5 bytes of data can hold at most 1"),
        (struct.pack("<I", 4) + b"abcd", "holds only 1 of 2 elements"),
        (good + b"\x00", "1 bytes left after its 2 elements"),
    ]:
        entry["parameters"]["binary_data_size"] = len(tail)
        with pytest.raises(InvalidArgument) as err:
            decode({"inputs": [entry]}, tail)
        assert fix in err.value.message
    entry["parameters"]["binary_data_size"] = len(good)
    assert decode({"inputs": [entry]}, good).inputs[0].data.tolist() == [b"a", b"bc"]


def test_http_malformed_server_response_is_internal() -> None:
    with pytest.raises(Internal, match="malformed response"):
        client.http_decode_infer_response(b'{"outputs": [{"name": "O"}]}', None)
    with pytest.raises(Internal, match="model not loaded"):
        client.http_decode_infer_response(b'{"error": "model not loaded"}', None)


# ---------------------------------------------------------------- gRPC


def triton_grpc_request(arrays: dict[str, np.ndarray], **params) -> service_pb2.ModelInferRequest:
    inputs = []
    for name, a in arrays.items():
        inp = tgrpc.InferInput(name, list(a.shape), numpy_to_v2(a.dtype))
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    outputs = [tgrpc.InferRequestedOutput("O")]
    return _get_inference_request(
        "m", inputs, "2", "rid", outputs, 0, False, False, 3, None, params
    )


def test_tritonclient_grpc_requests_decode_for_every_datatype() -> None:
    arrays = {f"IN_{dt}": sample(dt) for dt in ALL_TYPES}
    req = grpc_codec.decode_infer_request(triton_grpc_request(arrays, flag=True, s="x", f=0.5))
    assert (req.model_name, req.model_version, req.id) == ("m", "2", "rid")
    assert req.parameters == {"priority": 3, "flag": True, "s": "x", "f": 0.5}
    assert [o.name for o in req.outputs] == ["O"]
    for t in req.inputs:
        assert_same(t.data, arrays[t.name])


def test_tritonclient_grpc_parses_our_responses_for_every_datatype() -> None:
    arrays = {f"OUT_{dt}": sample(dt, (1, 4)) for dt in ALL_TYPES}
    resp = InferResponse("m", "1", "r", [client.tensor(n, a) for n, a in arrays.items()])
    msg = grpc_codec.encode_infer_response(resp)
    result = tgrpc.InferResult(msg)
    for name, a in arrays.items():
        assert_same(result.as_numpy(name), a)
    back = client.grpc_decode_infer_response(msg)
    for t in back.outputs:
        assert_same(t.data, arrays[t.name])


def test_grpc_request_round_trip_through_our_encoder() -> None:
    a = sample("BYTES")
    req = InferRequest(
        "m", "1", "i", {"big": 1 << 63}, [client.tensor("S", a)], [RequestedOutput("O")]
    )
    got = grpc_codec.decode_infer_request(client.grpc_encode_infer_request(req))
    assert got.parameters == {"big": 1 << 63}  # above int64 travels as uint64_param
    assert_same(got.inputs[0].data, a)
    assert got.outputs == [RequestedOutput("O")]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "expected"),
    [
        ("BOOL", "bool_contents", [True, False], np.array([True, False])),
        ("INT8", "int_contents", [-3, 4], np.array([-3, 4], np.int8)),
        ("INT64", "int64_contents", [-(1 << 40), 1], np.array([-(1 << 40), 1], np.int64)),
        ("UINT16", "uint_contents", [65535, 0], np.array([65535, 0], np.uint16)),
        ("UINT64", "uint64_contents", [1 << 63, 1], np.array([1 << 63, 1], np.uint64)),
        ("FP32", "fp32_contents", [0.5, -2.0], np.array([0.5, -2.0], np.float32)),
        ("FP64", "fp64_contents", [0.1, 2.0], np.array([0.1, 2.0])),
        ("BYTES", "bytes_contents", [b"\xff", b""], np.array([b"\xff", b""], np.object_)),
    ],
)
def test_grpc_typed_contents_decode(datatype, field, values, expected) -> None:
    msg = service_pb2.ModelInferRequest(model_name="m")
    inp = msg.inputs.add(name="X", datatype=datatype, shape=[2])
    getattr(inp.contents, field).extend(values)
    assert_same(grpc_codec.decode_infer_request(msg).inputs[0].data, expected)


def test_grpc_malformed_requests_are_refused_with_what_to_fix() -> None:
    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="FP16", shape=[2]).contents.fp32_contents.extend([1, 2])
    with pytest.raises(InvalidArgument, match="send it in raw_input_contents"):
        grpc_codec.decode_infer_request(msg)

    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="FP32", shape=[2]).contents.int_contents.extend([1, 2])
    with pytest.raises(InvalidArgument, match="sends int_contents; use fp32_contents"):
        grpc_codec.decode_infer_request(msg)

    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="INT8", shape=[2]).contents.int_contents.extend([1, 999])
    with pytest.raises(InvalidArgument, match="999 .* out of range for INT8"):
        grpc_codec.decode_infer_request(msg)

    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="FP32", shape=[4])
    msg.inputs.add(name="Y", datatype="FP32", shape=[1])
    msg.raw_input_contents.append(b"\x00" * 16)
    with pytest.raises(InvalidArgument, match="1 entries but the message has 2 inputs"):
        grpc_codec.decode_infer_request(msg)

    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
    msg.raw_input_contents.append(b"\x00" * 60)
    with pytest.raises(
        InvalidArgument, match="unexpected total byte size 60 for input 'INPUT0', expecting 64"
    ):
        grpc_codec.decode_infer_request(msg)

    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="INT8", shape=[1]).contents.int_contents.append(1)
    msg.inputs.add(name="X", datatype="INT8", shape=[1]).contents.int_contents.append(1)
    with pytest.raises(InvalidArgument, match="more than once"):
        grpc_codec.decode_infer_request(msg)


def test_grpc_unsupported_parameter_type_is_refused() -> None:
    msg = service_pb2.ModelInferRequest()
    with pytest.raises(InvalidArgument, match="parameter 'x' has unsupported type list"):
        grpc_codec.params_to_proto({"x": [1]}, msg.parameters)
    assert "x" not in msg.parameters


# ---------------------------------------------------------------- compression


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # what tritonclient sends
        ("deflate", lambda b: raw_deflate(b)),  # what some other clients send
        ("identity", lambda b: b),
        (None, lambda b: b),
    ],
)
def test_decompress_accepts_what_clients_send(encoding, pack) -> None:
    raw = b"tensor bytes " * 1000
    packed = pack(raw)
    assert decompress(packed, encoding, limit=len(raw)) == raw


def test_tritonclient_compressed_request_body_decodes() -> None:
    body, hl = triton_http_body({"X": np.arange(100, dtype=np.float32)}, binary=True)
    for encoding, packed in [("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))]:
        plain = decompress(packed, encoding, limit=1 << 20)
        req = http_codec.decode_infer_request(plain, hl, "m", "1")
        assert_same(req.inputs[0].data, np.arange(100, dtype=np.float32))


def test_decompress_refuses_zip_bomb_without_inflating_it() -> None:
    bomb = gzip.compress(b"\x00" * (64 << 20))  # 64 MiB of zeros, ~64 KiB compressed
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="limit of 1048576 bytes"):
        decompress(bomb, "gzip", limit=1 << 20)
    with pytest.raises(PayloadTooLarge):
        decompress(zlib.compress(b"\x00" * (8 << 20)), "deflate", limit=1 << 20)
    with pytest.raises(PayloadTooLarge):
        decompress(b"\x00" * 11, None, limit=10)


def test_decompress_refuses_corrupt_truncated_or_unknown_encodings() -> None:
    packed = gzip.compress(b"hello world" * 100)
    with pytest.raises(InvalidArgument, match="not valid gzip data"):
        decompress(b"definitely not gzip", "gzip", limit=1000)
    with pytest.raises(InvalidArgument, match="truncated gzip"):
        decompress(packed[: len(packed) // 2], "gzip", limit=10_000)
    with pytest.raises(InvalidArgument, match="unsupported Content-Encoding 'br'"):
        decompress(b"x", "br", limit=10)


def test_decompress_handles_multi_member_gzip() -> None:
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 10) == b"abcd"


def test_compress_picks_an_accepted_encoding_or_identity() -> None:
    body = b"x" * 1000
    assert compress(body, None) == (body, None)
    assert compress(body, "br") == (body, None)
    assert compress(body, "gzip;q=0, deflate")[1] == "deflate"
    packed, enc = compress(body, "deflate;q=0.5, gzip")
    assert enc == "gzip" and gzip.decompress(packed) == body
    packed, enc = compress(body, "deflate")
    assert zlib.decompress(packed) == body  # zlib-wrapped, as tritonclient expects
    assert compress(body, "*")[1] == "gzip"


def test_http_json_uint64_above_int64_is_exact_and_overflow_is_refused() -> None:
    entry = {"name": "U", "datatype": "UINT64", "shape": [2], "data": [2**64 - 1, 1]}
    assert_same(decode({"inputs": [entry]}).inputs[0].data, np.array([2**64 - 1, 1], np.uint64))
    entry["data"] = [2**64, 1]
    with pytest.raises(InvalidArgument, match="out of range for UINT64"):
        decode({"inputs": [entry]})
