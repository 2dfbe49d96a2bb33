"""Triton's classification extension (kserve/classification.py) and how batching treats
it (issue 11). The expected strings are what real Triton 2.51 answered for the same
values (tests/integration/test_edges_c_classification.py compares the two servers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc._utils import _get_inference_request

from kserve import http_codec
from kserve.batching import merge_key
from kserve.batching_grpc import read_grpc
from kserve.batching_http import merge_http, read_http, split_http
from kserve.classification import check_classifiable, classify, requested_classes
from kserve.errors import InvalidArgument
from kserve.tensors import InferResponse, RequestedOutput, Tensor

X = np.array([[0.1, 2.5, -1.0, 3.25, 1e7, 0.000001], [5, 4, 3, 2, 1, 0]], np.float32)


def test_float_classes_are_written_as_triton_writes_them() -> None:
    assert classify("FP32", X, 3, batched=True).tolist() == [
        [b"10000000.000000:4", b"3.250000:3", b"2.500000:1"], [b"5.000000:0", b"4.000000:1", b"3.000000:2"]]
    # every class, down to the smallest: 1e-6 as %f
    assert classify("FP64", X.astype(np.float64), 6, batched=True)[0, 3:].tolist() == [
        b"0.100000:0", b"0.000001:5", b"-1.000000:2"]


def test_equal_values_rank_by_lower_index_and_unsigned_values_do_not_wrap() -> None:
    ints = np.array([[0, 2, -1, 3, 10000000, 0]], np.int32)
    assert classify("INT32", ints, 6, batched=True).tolist() == [
        [b"10000000:4", b"3:3", b"2:1", b"0:0", b"0:5", b"-1:2"]]
    assert classify("U8", np.array([[0, 255, 3, 255]], np.uint8), 3, batched=True).tolist() == [
        [b"255:1", b"255:3", b"3:2"]]
    assert classify("U64", np.array([[2**64 - 1, 1]], np.uint64), 1, batched=True).tolist() == [
        [b"18446744073709551615:0"]]


def test_a_model_that_does_not_batch_ranks_its_whole_output() -> None:
    out = classify("FP32", X[0], 3, batched=False)
    assert out.shape == (3,)
    assert out.tolist() == [b"10000000.000000:4", b"3.250000:3", b"2.500000:1"]
    # a batched output's rows are its values flattened: [2, 2, 3] ranks 6 values a row
    cube = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    assert classify("C", cube, 2, batched=True).tolist() == [[b"5.000000:5", b"4.000000:4"],
                                                             [b"11.000000:5", b"10.000000:4"]]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None, [3]])
def test_a_class_count_that_is_not_a_positive_integer_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="positive integer") as err:
        requested_classes([RequestedOutput("OUT", None, {"classification": value})])
    assert "'OUT'" in err.value.message


def test_class_counts_are_read_per_output() -> None:
    outputs = [RequestedOutput("A", None, {"classification": 2}), RequestedOutput("B", True, {}),
               RequestedOutput("C", None, {"classification": 1})]
    assert requested_classes(outputs) == {"A": 2, "C": 1}


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "BOOL", "BYTES"])
def test_outputs_of_types_triton_cannot_rank_are_refused_in_its_words(datatype: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_classifiable("OUT", datatype, (6,), 2, batched=True)
    assert err.value.message.startswith(
        f"class result not available for output due to unsupported type '{datatype}'")


def test_more_classes_than_the_output_has_or_none_to_rank_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="top 7 classes of output 'OUT', but it has 6 per batch row"):
        check_classifiable("OUT", "FP32", (6,), 7, batched=True)
    with pytest.raises(InvalidArgument, match="has 6 per request"):
        check_classifiable("OUT", "FP32", (2, 3), 7, batched=False)
    with pytest.raises(InvalidArgument, match="no class dimension"):
        check_classifiable("OUT", "FP32", (), 1, batched=True)
    check_classifiable("OUT", "FP32", (6,), 6, batched=True)
    check_classifiable("OUT", "FP32", (-1,), 50, batched=True)  # known only once it ran:
    with pytest.raises(InvalidArgument, match="top 50 classes of output 'OUT', but it has 6"):
        classify("OUT", X, 50, batched=True)


# ---------------------------------------------------------------- batching

def _http(rows: np.ndarray, count: int | None) -> tuple[bytes, int | None]:
    inp = thttp.InferInput("INPUT0", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=True)
    outputs = [thttp.InferRequestedOutput("OUTPUT0", class_count=count or 0)]
    return thttp.InferenceServerClient.generate_request_body([inp], outputs=outputs)


def _grpc(rows: np.ndarray, count: int) -> object:
    inp = tgrpc.InferInput("INPUT0", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    return _get_inference_request("m", [inp], "1", "", [tgrpc.InferRequestedOutput("OUTPUT0", class_count=count)],
                                  0, False, False, 0, None, {})


def test_requests_asking_other_classes_never_share_a_batch() -> None:
    a, b, c, plain = (read_http(*_http(X, n)) for n in (2, 2, 3, None))
    assert a is not None and b is not None and c is not None and plain is not None
    assert merge_key(a) == merge_key(b)
    assert merge_key(a) != merge_key(c)
    assert merge_key(a) != merge_key(plain)
    g2, g2b, g3 = (read_grpc(_grpc(X, n)) for n in (2, 2, 3))
    assert merge_key(g2) == merge_key(g2b) and merge_key(g2) != merge_key(g3)


def test_a_batch_of_equal_class_counts_splits_back_to_each_callers_own_classes() -> None:
    callers = [X[:1], X[1:], np.array([[9, 8, 7, 6, 5, 4], [1, 2, 3, 4, 5, 6]], np.float32)]
    requests = [read_http(*_http(rows, 2)) for rows in callers]
    body, headers = merge_http(requests, "batch")
    hlen = int(headers["inference-header-content-length"])
    merged = http_codec.decode_infer_request(body, hlen, "m", "1")
    assert [o.parameters for o in merged.outputs] == [{"classification": 2}]  # passed through
    counts = requested_classes(merged.outputs)
    values = merged.inputs[0].data
    classes = classify("OUTPUT0", values, counts["OUTPUT0"], batched=True)
    answer = InferResponse("m", "1", "batch", [Tensor("OUTPUT0", "BYTES", list(classes.shape), classes)])
    out, out_hlen = http_codec.encode_infer_response(answer, merged.outputs, merged.binary_data_output)
    for rows, reply in zip(callers, split_http(out, out_hlen, requests), strict=True):
        head = json.loads(reply.body[:int(reply.headers["inference-header-content-length"])])
        assert head["outputs"][0]["datatype"] == "BYTES" and head["outputs"][0]["shape"] == [len(rows), 2]
        alone = classify("OUTPUT0", rows, 2, batched=True)
        tail = reply.body[int(reply.headers["inference-header-content-length"]):]
        assert tail == b"".join(len(s).to_bytes(4, "little") + s for s in alone.reshape(-1))
