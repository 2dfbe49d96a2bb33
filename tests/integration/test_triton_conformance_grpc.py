"""Differential conformance over gRPC, with unmodified tritonclient: the same calls to
real Triton and to ``inferplex worker`` (tests/support/conformance.py), compared.
Deliberate differences are the HTTP suite's (server identity, model platform, the
worker's compute-time response parameter)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.conformance import WORKER_ONLY_PARAMETERS, assert_same_error_words
from tests.support.models import simple_inputs
from tests.support.procs import LoopbackServer

Servers = dict[str, LoopbackServer]
Call = Callable[[grpcclient.InferenceServerClient], Any]
A = np.arange(32, dtype=np.int32).reshape(2, 16)
B = np.full((2, 16), 5, dtype=np.int32)


def _on_both(servers: Servers, call: Call) -> dict[str, Any]:
    """What ``call`` returned, or (status, message) of the error it raised, per server."""
    answers: dict[str, Any] = {}
    for name, server in servers.items():
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            try:
                answers[name] = call(client)
            except InferenceServerException as exc:
                answers[name] = ("error", exc.status(), exc.message())
    return answers


def _response(result: grpcclient.InferResult) -> dict[str, Any]:
    response = result.get_response(as_json=True)
    params = {k: v for k, v in response.pop("parameters", {}).items() if k not in WORKER_ONLY_PARAMETERS}
    return response | ({"parameters": params} if params else {})


def _strings(x: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: str(v).encode(), otypes=[object])(x)


def _string_inputs() -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput(n, [2, 16], "BYTES") for n in ("INPUT0", "INPUT1")]
    for inp, x in zip(inputs, (A, B), strict=True):
        inp.set_data_from_numpy(_strings(x))
    return inputs


def _wrong_datatype() -> list[grpcclient.InferInput]:
    bad = grpcclient.InferInput("INPUT1", [2, 16], "FP32")
    bad.set_data_from_numpy(B.astype(np.float32))
    return [simple_inputs(grpcclient, A)[0], bad]


SAME: dict[str, Call] = {
    "live": lambda c: c.is_server_live(),
    "ready": lambda c: c.is_server_ready(),
    "model ready": lambda c: c.is_model_ready("simple"),
    "unknown model ready": lambda c: c.is_model_ready("nope"),
    "config inputs": lambda c: c.get_model_config("simple", as_json=True)["config"]["input"],
    "config outputs": lambda c: c.get_model_config("simple_string", as_json=True)["config"]["output"],
    "config batch size": lambda c: c.get_model_config("simple", as_json=True)["config"]["max_batch_size"],
    "infer": lambda c: _response(c.infer("simple", simple_inputs(grpcclient, A, B))),
    "infer with id": lambda c: _response(c.infer("simple", simple_inputs(grpcclient, A, B), request_id="g-7")),
    "infer BYTES": lambda c: _response(c.infer("simple_string", _string_inputs())),
    "requested output": lambda c: _response(c.infer("simple", simple_inputs(grpcclient, A, B),
                                                    outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])),
    "gzip": lambda c: _response(c.infer("simple", simple_inputs(grpcclient, A, B), compression_algorithm="gzip")),
    "deflate": lambda c: _response(c.infer("simple", simple_inputs(grpcclient, A, B), compression_algorithm="deflate")),
}


@pytest.mark.parametrize("case", list(SAME))
def test_grpc_answers_match_tritons(triton_and_worker: Servers, case: str) -> None:
    answers = _on_both(triton_and_worker, SAME[case])
    assert not (isinstance(answers["triton"], tuple) and answers["triton"][0] == "error"), answers
    assert answers["worker"] == answers["triton"]


def test_grpc_metadata_matches_but_for_identity_and_platform(triton_and_worker: Servers) -> None:
    answers = _on_both(triton_and_worker, lambda c: (c.get_server_metadata(as_json=True),
                                                     c.get_model_metadata("simple", as_json=True)))
    (t_server, t_model), (w_server, w_model) = answers["triton"], answers["worker"]
    assert set(w_server["extensions"]) <= set(t_server["extensions"])  # identity: see the HTTP suite
    assert {k: v for k, v in w_model.items() if k != "platform"} == \
        {k: v for k, v in t_model.items() if k != "platform"}


ERRORS: dict[str, Call] = {
    "unknown model metadata": lambda c: c.get_model_metadata("nope"),
    "unknown version metadata": lambda c: c.get_model_metadata("simple", "9"),
    "unknown model config": lambda c: c.get_model_config("nope"),
    "unknown model stats": lambda c: c.get_inference_statistics("nope"),
    "unknown model infer": lambda c: c.infer("nope", simple_inputs(grpcclient, A)),
    "wrong datatype": lambda c: c.infer("simple", _wrong_datatype(), request_id="x1"),
    "missing input": lambda c: c.infer("simple", simple_inputs(grpcclient, A)[:1]),
    "batch too large": lambda c: c.infer("simple", simple_inputs(grpcclient, np.zeros((9, 16), np.int32))),
    "wrong shape": lambda c: c.infer("simple", simple_inputs(grpcclient, np.zeros((1, 15), np.int32))),
    "unknown output": lambda c: c.infer("simple", simple_inputs(grpcclient, A),
                                        outputs=[grpcclient.InferRequestedOutput("OUTX")]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_grpc_errors_get_tritons_code_and_words(triton_and_worker: Servers, case: str) -> None:
    answers = _on_both(triton_and_worker, ERRORS[case])
    (t_kind, t_code, t_message), (w_kind, w_code, w_message) = answers["triton"], answers["worker"]
    assert t_kind == w_kind == "error"
    assert w_code == t_code
    assert_same_error_words(t_message, w_message)
