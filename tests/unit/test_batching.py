"""The batch codec: callers' requests merged into one, run through a reference model by the
real kserve codecs (as the worker does), split back; every caller's answer must be
exactly what it gets when its request runs alone through the same reference."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from kserve import grpc_codec, http_codec
from kserve.batching import CallerRequest, merge_key, rows
from kserve.batching_grpc import merge_grpc, read_grpc, split_grpc
from kserve.batching_http import HEADER_LENGTH, merge_http, read_http, split_http
from kserve.datatypes import numpy_to_v2
from kserve.errors import Internal
from kserve.tensors import InferRequest, InferResponse, Tensor

ROWS = (1, 3, 2)
PARAMS = {"inferplex_compute_ns": 1234}


# ---------------------------------------------------------------- the reference model


def reference(req: InferRequest, seen: list[int]) -> InferResponse:
    """Row-wise outputs of every input, in the model's own (name) order: numbers doubled
    and summed per row, BYTES upper-cased (other lengths) and their lengths."""
    seen.append(req.inputs[0].shape[0])
    made: dict[str, Tensor] = {}
    for t in sorted(req.inputs, key=lambda t: t.name):
        if t.datatype == "BYTES":
            flat = t.data.reshape(-1)
            up = np.empty(flat.size, dtype=np.object_)
            up[:] = [b.upper() + b"!" for b in flat]
            made[f"{t.name}_UP"] = Tensor(f"{t.name}_UP", "BYTES", t.shape, up.reshape(t.shape))
            lengths = np.array([len(b) for b in flat], dtype=np.int32).reshape(t.shape)
            made[f"{t.name}_LEN"] = Tensor(f"{t.name}_LEN", "INT32", t.shape, lengths)
        else:
            made[f"{t.name}_X2"] = Tensor(f"{t.name}_X2", t.datatype, t.shape, t.data * 2)
            total = t.data.sum(axis=-1, keepdims=True, dtype=t.data.dtype)
            made[f"{t.name}_SUM"] = Tensor(f"{t.name}_SUM", t.datatype, list(total.shape), total)
    names = [o.name for o in req.outputs] or list(made)
    return InferResponse(req.model_name, "1", req.id, [made[n] for n in names], dict(PARAMS))


def serve_http(body: bytes, hlen: int | None, seen: list[int]) -> tuple[bytes, int | None]:
    req = http_codec.decode_infer_request(body, hlen, "m", "1")
    return http_codec.encode_infer_response(reference(req, seen), req.outputs, req.binary_data_output)


def serve_grpc(msg: service_pb2.ModelInferRequest, seen: list[int]) -> service_pb2.ModelInferResponse:
    return grpc_codec.encode_infer_response(reference(grpc_codec.decode_infer_request(msg), seen))


# ---------------------------------------------------------------- requests as clients send them


def data(datatype: str, n: int, seed: int, width: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if datatype == "BYTES":
        words = [b"", b"alpha", "\u00fcber".encode(), b"x" * 300, b"0", b"be ta"]
        picked = [words[i] for i in rng.integers(0, len(words), n * width)]
        return np.array(picked, dtype=np.object_).reshape(n, width)
    values = rng.integers(-50, 50, (n, width)) / 4
    return values.astype(ml_dtypes.bfloat16 if datatype == "BF16" else np.dtype(datatype.lower().replace("fp", "float")))


def http_body(arrays: dict[str, np.ndarray], binary: bool, outputs: list[tuple[str, bool]] | None = None,
              binary_out: bool | None = None, **kw: object) -> tuple[bytes, int | None]:
    """tritonclient's body; ``binary_out`` sets binary_data_output (tritonclient sets it
    whenever no outputs are named, and refuses it as a custom parameter)."""
    inputs = []
    for name, a in arrays.items():
        dt = numpy_to_v2(a.dtype)
        inp = thttp.InferInput(name, list(a.shape), dt)
        inp.set_data_from_numpy(a, binary_data=binary or dt == "BF16")  # tritonclient: BF16 is binary only
        inputs.append(inp)
    wanted = [thttp.InferRequestedOutput(n, binary_data=b) for n, b in outputs] if outputs is not None else None
    body, hlen = thttp.InferenceServerClient.generate_request_body(inputs, outputs=wanted, **kw)
    if binary_out is None:
        return body, hlen
    split = len(body) if hlen is None else hlen
    head = json.loads(body[:split])
    head.setdefault("parameters", {})["binary_data_output"] = binary_out
    text = json.dumps(head).encode()
    return text + body[split:], (None if hlen is None else len(text))


def grpc_raw(arrays: dict[str, np.ndarray], outputs: list[str] | None = None, request_id: str = "",
             sequence_id: int = 0, **params: object) -> service_pb2.ModelInferRequest:
    inputs = []
    for name, a in arrays.items():
        inp = tgrpc.InferInput(name, list(a.shape), numpy_to_v2(a.dtype))
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    wanted = [tgrpc.InferRequestedOutput(n) for n in outputs] if outputs is not None else None
    return _get_inference_request("m", inputs, "1", request_id, wanted, sequence_id, bool(sequence_id),
                                  False, 0, None, params)


_TYPED = {"FP32": "fp32_contents", "INT32": "int_contents", "BYTES": "bytes_contents"}


def grpc_typed(arrays: dict[str, np.ndarray], request_id: str = "") -> service_pb2.ModelInferRequest:
    msg = service_pb2.ModelInferRequest(model_name="m", model_version="1", id=request_id)
    for name, a in arrays.items():
        dt = numpy_to_v2(a.dtype)
        entry = msg.inputs.add(name=name, datatype=dt, shape=a.shape)
        getattr(entry.contents, _TYPED[dt]).extend(a.reshape(-1).tolist())
    return msg


# ---------------------------------------------------------------- merged equals alone


def check_http(bodies: list[tuple[bytes, int | None]]) -> list[CallerRequest]:
    calls = [read_http(b, h) for b, h in bodies]
    assert all(c is not None for c in calls)
    assert len({merge_key(c) for c in calls}) == 1
    body, headers = merge_http(calls, batch_id="batch-7")
    hlen = int(headers[HEADER_LENGTH])
    head = json.loads(body[:hlen])
    assert head["id"] == "batch-7" and head["parameters"]["binary_data_output"] is True
    assert all("data" not in t for t in head["inputs"])  # JSON data travels as binary
    seen: list[int] = []
    out, out_hlen = serve_http(body, hlen, seen)
    assert seen == [sum(rows(c) for c in calls)]  # one inference for all of them
    answers = split_http(out, out_hlen, calls)
    for (b, h), answer in zip(bodies, answers, strict=True):
        alone, alone_hlen = serve_http(b, h, [])
        assert answer.status == 200
        assert answer.body == alone
        assert answer.headers.get(HEADER_LENGTH) == (None if alone_hlen is None else str(alone_hlen))
    return calls


def check_grpc(messages: list[service_pb2.ModelInferRequest]) -> None:
    calls = [read_grpc(m) for m in messages]
    assert all(c is not None for c in calls)
    assert len({merge_key(c) for c in calls}) == 1
    merged = merge_grpc(calls, batch_id="batch-7")
    assert merged.id == "batch-7" and len(merged.raw_input_contents) == len(merged.inputs)
    assert not any(t.HasField("contents") for t in merged.inputs)
    seen: list[int] = []
    answers = split_grpc(serve_grpc(merged, seen), calls)
    assert seen == [sum(rows(c) for c in calls)]
    for msg, answer in zip(messages, answers, strict=True):
        assert answer == serve_grpc(msg, [])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_callers_of_1_3_2_rows_get_what_they_get_alone(binary: bool) -> None:
    bodies = [http_body({"X": data("FP32", n, i)}, binary, request_id=f"r{i}" if i else "",
                        binary_out=binary)
              for i, n in enumerate(ROWS)]
    calls = check_http(bodies)
    assert [rows(c) for c in calls] == list(ROWS)


def test_http_mixed_forms_share_one_batch() -> None:
    arrays = [{"X": data("FP32", n, i)} for i, n in enumerate(ROWS)]
    bodies = [
        http_body(arrays[0], binary=False, binary_out=False, request_id="json-caller"),
        http_body(arrays[1], binary=True, binary_out=True, request_id="bin"),
        # binary in, one output JSON and one binary, in its own order
        http_body(arrays[2], binary=True, outputs=[("X_SUM", False), ("X_X2", True)], request_id="x"),
    ]
    keys = {merge_key(read_http(*b)) for b in bodies}
    assert len(keys) == 2  # the third asks for named outputs: never merged with "all outputs"
    check_http(bodies[:2])
    reordered = http_body(arrays[0], binary=False, outputs=[("X_X2", False), ("X_SUM", True)])
    check_http([bodies[2], reordered])  # same outputs in another order and form: one batch


def test_http_bytes_json_and_binary_with_non_utf8() -> None:
    text = [data("BYTES", n, i) for i, n in enumerate(ROWS)]
    text[2][0, 0] = b"\xff\xfe not utf-8"  # its outputs go binary even to a JSON caller
    bodies = [http_body({"S": text[0], "X": data("FP32", 1, 9)}, binary=False, binary_out=False),
              http_body({"S": text[1], "X": data("FP32", 3, 8)}, binary=True, binary_out=True),
              http_body({"X": data("FP32", 2, 7), "S": text[2]}, binary=True)]  # other input order
    check_http(bodies)


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "FP64", "INT32"])
def test_http_other_numeric_types(datatype: str) -> None:
    bodies = [http_body({"X": data(datatype, n, i)}, binary=bool(i % 2), binary_out=i == 2)
              for i, n in enumerate(ROWS)]
    check_http(bodies)


def test_http_output_subset_and_its_parameters() -> None:
    bodies = [http_body({"X": data("FP32", n, i)}, binary=bool(i % 2), outputs=[("X_SUM", i == 1)],
                        request_id=str(i)) for i, n in enumerate(ROWS)]
    calls = check_http(bodies)
    merged, headers = merge_http(calls)
    head = json.loads(merged[: int(headers[HEADER_LENGTH])])
    assert head["outputs"] == [{"name": "X_SUM", "parameters": {"binary_data": True}}]
    assert "id" not in head


def test_grpc_raw_callers_of_1_3_2_rows() -> None:
    check_grpc([grpc_raw({"X": data("FP32", n, i)}, request_id=f"g{i}") for i, n in enumerate(ROWS)])


def test_grpc_typed_contents_mixed_with_raw() -> None:
    messages = [grpc_typed({"X": data("FP32", 1, 0), "S": data("BYTES", 1, 1)}, "typed"),
                grpc_raw({"S": data("BYTES", 3, 2), "X": data("FP32", 3, 3)}, request_id="raw"),
                grpc_typed({"X": data("FP32", 2, 4), "S": data("BYTES", 2, 5)})]
    check_grpc(messages)
    check_grpc([grpc_typed({"N": data("INT32", n, i)}) for i, n in enumerate(ROWS)])


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "BYTES"])
def test_grpc_fp16_bf16_bytes(datatype: str) -> None:
    check_grpc([grpc_raw({"X": data(datatype, n, i)}) for i, n in enumerate(ROWS)])


def test_grpc_output_subsets_keep_only_what_each_asked() -> None:
    check_grpc([grpc_raw({"X": data("FP32", 1, 0)}, ["X_SUM", "X_X2"], "a"),
                grpc_raw({"X": data("FP32", 3, 1)}, ["X_X2", "X_SUM"], "b")])
    check_grpc([grpc_raw({"S": data("BYTES", n, i)}, ["S_LEN"]) for i, n in enumerate(ROWS)])


# ---------------------------------------------------------------- what may be merged


def http_key(arrays: dict[str, np.ndarray], **kw: object) -> object:
    call = read_http(*http_body(arrays, **kw))
    assert call is not None
    return merge_key(call)


def test_merge_key_ignores_form_and_deadline_only() -> None:
    x1, x3 = data("FP32", 1, 0), data("FP32", 3, 1)
    base = http_key({"X": x1}, binary=False, binary_out=False)
    assert http_key({"X": x3}, binary=True, binary_out=True, timeout=500, priority=3,
                    request_id="other") == base
    subset = http_key({"X": x1}, binary=False, outputs=[("X_SUM", False)])
    assert http_key({"X": x3}, binary=True, outputs=[("X_SUM", True)]) == subset


@pytest.mark.parametrize("other", [
    {"arrays": {"X": data("FP32", 1, 0, width=5)}},  # another non-batch dim
    {"arrays": {"X": data("FP16", 1, 0)}},  # another datatype
    {"arrays": {"X": data("FP32", 1, 0), "Y": data("FP32", 1, 0)}},  # another input
    {"arrays": {"Y": data("FP32", 1, 0)}},  # another input name
    {"outputs": [("X_SUM", False)]},  # a subset instead of all
    {"outputs": [("X_SUM", False), ("X_X2", False)]},
    {"parameters": {"temperature": 1}},  # a parameter that may change results
], ids=["dims", "datatype", "inputs", "input-name", "subset", "named-all", "parameter"])
def test_merge_key_differs(other: dict) -> None:
    base = http_key({"X": data("FP32", 1, 0)}, binary=False)
    arrays = other.pop("arrays", {"X": data("FP32", 2, 0)})
    assert http_key(arrays, binary=False, **other) != base


def test_merge_key_tells_parameter_values_apart_and_transports_apart() -> None:
    x = {"X": data("FP32", 1, 0)}
    keys = {http_key(x, binary=False, parameters={"p": v}) for v in (1, 1.0, True, "1")}
    assert len(keys) == 4
    assert merge_key(read_grpc(grpc_raw(x))) != http_key(x, binary=False)
    with_class = read_grpc(grpc_raw(x, ["X_SUM"]))
    msg = grpc_raw(x, ["X_SUM"])
    msg.outputs[0].parameters["classification"].int64_param = 2
    assert merge_key(read_grpc(msg)) != merge_key(with_class)


@pytest.mark.parametrize("body", [
    b'{"inputs": [',  # not JSON
    b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [], "data": [1]}]}',  # no batch dim
    b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [0, 2], "data": []}]}',  # no rows
    b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1]},'
    b' {"name": "Y", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}',  # rows disagree
    b'{"inputs": []}',
], ids=["json", "scalar", "zero-rows", "count", "rows-disagree", "no-inputs"])
def test_unbatchable_requests_are_left_to_the_instance(body: bytes) -> None:
    assert read_http(body, None) is None


def test_requests_of_a_sequence_are_never_merged() -> None:
    x = {"X": data("FP32", 1, 0)}
    assert read_http(*http_body(x, binary=True, sequence_id=7, sequence_start=True)) is None
    assert read_grpc(grpc_raw(x, sequence_id=7)) is None
    assert read_grpc(grpc_raw(x, sequence_id=0)) is not None


def test_merging_different_keys_is_refused() -> None:
    a = read_http(*http_body({"X": data("FP32", 1, 0)}, binary=False))
    b = read_http(*http_body({"X": data("FP16", 1, 0)}, binary=False))
    with pytest.raises(Internal, match="merge_key"):
        merge_http([a, b])
    with pytest.raises(Internal, match="at least one"):
        merge_grpc([])


# ---------------------------------------------------------------- a wrong answer from the instance


def test_split_of_an_answer_with_too_few_rows_is_internal() -> None:
    calls = [read_http(*http_body({"S": data("BYTES", n, i)}, binary=True)) for i, n in enumerate(ROWS)]
    body, headers = merge_http(calls[:2])
    out, out_hlen = serve_http(body, int(headers[HEADER_LENGTH]), [])
    with pytest.raises(Internal, match="with 4 rows .* sent 6"):
        split_http(out, out_hlen, calls)
    g = [read_grpc(grpc_raw({"X": data("FP32", n, i)})) for i, n in enumerate(ROWS)]
    with pytest.raises(Internal, match="with 4 rows .* sent 6"):
        split_grpc(serve_grpc(merge_grpc(g[:2]), []), g)


def test_split_of_unreadable_answers_is_internal() -> None:
    calls = [read_grpc(grpc_raw({"S": data("BYTES", n, i)})) for i, n in enumerate(ROWS)]
    answer = serve_grpc(merge_grpc(calls), [])
    answer.raw_output_contents[0] = answer.raw_output_contents[0][:-1]
    with pytest.raises(Internal, match="length prefixes"):
        split_grpc(answer, calls)
    del answer.raw_output_contents[1]
    with pytest.raises(Internal, match="raw_output_contents"):
        split_grpc(answer, calls)
    with pytest.raises(Internal, match="unreadable"):
        split_http(b'{"outputs": 3}', None, calls)
    subset = [read_grpc(grpc_raw({"S": data("BYTES", 1, 0)}, ["S_LEN"]))]
    with pytest.raises(Internal, match="no output 'S_LEN'"):
        split_grpc(serve_grpc(merge_grpc([read_grpc(grpc_raw({"S": data("BYTES", 1, 0)}, ["S_UP"]))]), []),
                   subset)
