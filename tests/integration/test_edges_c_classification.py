"""Triton's classification extension, differentially: the same ``class_count`` request to
real NVIDIA Triton and to ``inferplex worker`` (issue 11), over HTTP JSON, HTTP binary and
gRPC, with tritonclient's own ``InferRequestedOutput(name, class_count=N)``.

Both serve ``cls``: INPUT0 (FP32 [6]) cast to an output of every type (Triton: a Python
backend model; the worker: the same as ONNX), and ``cls_nb``, the same without batching.
Triton ranks in its frontend, whatever the backend, so its strings are the reference.

Deliberate differences (the worker refuses with 400 / INVALID_ARGUMENT what cannot be
answered as asked; each is checked against what Triton does, below):
- more classes than the output has: Triton answers fewer than asked, silently;
- ``classification: 0`` over HTTP: Triton ignores it (over gRPC it refuses it);
- a negative or non-integer count over HTTP: Triton answers 500 (a server error);
- a BYTES output: Triton drops the connection (not sent to it here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.support.conformance import Exchange, http_exchange
from tests.support.models import ModelArtifact, _io, _onnx_bytes
from tests.support.procs import LoopbackServer
from tests.support.triton import run_triton
from tests.support.triton_fixtures import require_triton
from tests.support.triton_models import write_model
from tests.support.worker import run_worker

Servers = dict[str, LoopbackServer]

PYTHON_MODEL = '''\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.outputs = [(o["name"], o["data_type"]) for o in json.loads(args["model_config"])["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            tensors = []
            for name, data_type in self.outputs:
                if data_type == "TYPE_STRING":
                    value = np.array([str(v).encode() for v in x.flat], dtype=np.object_).reshape(x.shape)
                elif name == "SCALAR":
                    value = x[..., :1]
                else:
                    value = x.astype(pb_utils.triton_string_to_numpy(data_type))
                tensors.append(pb_utils.Tensor(name, value))
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
'''

CASTS = {"FP32": ("TYPE_FP32", TensorProto.FLOAT), "FP64": ("TYPE_FP64", TensorProto.DOUBLE),
         "INT32": ("TYPE_INT32", TensorProto.INT32), "INT64": ("TYPE_INT64", TensorProto.INT64),
         "FP16": ("TYPE_FP16", TensorProto.FLOAT16), "BOOL": ("TYPE_BOOL", TensorProto.BOOL),
         "STR": ("TYPE_STRING", TensorProto.STRING)}


def _outputs(batched: bool) -> list[dict[str, Any]]:
    outs = [_io(name, config_type, [6]) for name, (config_type, _) in CASTS.items()]
    return [*outs, _io("SCALAR", "TYPE_FP32", [1])]  # one value a row: one class


def python_cls(name: str, batched: bool) -> ModelArtifact:
    config = {"name": name, "backend": "python", "max_batch_size": 8 if batched else 0,
              "input": [_io("INPUT0", "TYPE_FP32", [6])], "output": _outputs(batched)}
    return ModelArtifact(config, "model.py", PYTHON_MODEL.encode())


def onnx_cls(name: str, batched: bool) -> ModelArtifact:
    dims: list[int | str] = ["batch", 6] if batched else [6]
    axis = 1 if batched else 0
    consts = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
              (("zero", 0), ("one", 1), ("axis", axis))]
    nodes = [helper.make_node("Cast", ["INPUT0"], [n], to=t) for n, (_, t) in CASTS.items()]
    nodes.append(helper.make_node("Slice", ["INPUT0", "zero", "one", "axis"], ["SCALAR"]))
    values = [helper.make_tensor_value_info(n, t, dims) for n, (_, t) in CASTS.items()]
    values.append(helper.make_tensor_value_info("SCALAR", TensorProto.FLOAT, [*dims[:-1], 1]))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, dims)],
                              values, initializer=consts)
    config = {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": 8 if batched else 0,
              "input": [_io("INPUT0", "TYPE_FP32", [6])], "output": _outputs(batched)}
    return ModelArtifact(config, "model.onnx", _onnx_bytes(graph))


MODELS = {"cls": True, "cls_nb": False}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    require_triton()
    base = tmp_path_factory.mktemp("classification")
    for name, batched in MODELS.items():
        write_model(base / "triton-repo", python_cls(name, batched))
    with run_triton(base / "triton-repo", base) as triton, \
            run_worker(base, "--memory-budget", "1GiB") as worker:
        with httpclient.InferenceServerClient(triton.http_url) as client:
            for name in MODELS:
                client.load_model(name)
        with grpcclient.InferenceServerClient(worker.grpc_url) as client:
            for name, batched in MODELS.items():
                artifact = onnx_cls(name, batched)
                client.load_model(name, config=json.dumps(artifact.config), files=artifact.files())
        yield {"triton": triton, "worker": worker}


X = np.array([[0.1, 2.5, -1.0, 3.25, 1e7, 0.000001], [5, 4, 3, 2, 1, 0]], np.float32)
INT_TIES = np.array([[0, 2, -1, 3, 7, 0], [1, 1, 1, 1, 1, 1]], np.float32)  # INT32: equal classes


def _body(model: str, outputs: list[dict[str, Any]], x: np.ndarray = X) -> dict[str, Any]:
    shape = list(x.shape) if MODELS[model] else [6]
    data = x.reshape(-1).tolist() if MODELS[model] else x[0].tolist()
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": data}], "outputs": outputs}


def _ask(name: str, count: Any, **params: Any) -> dict[str, Any]:
    return {"name": name, "parameters": {"classification": count, **params}}


def _both(servers: Servers, model: str, body: dict[str, Any]) -> tuple[Exchange, Exchange]:
    path = f"/v2/models/{model}/infer"
    return (http_exchange(servers["triton"], "POST", path, json_body=body),
            http_exchange(servers["worker"], "POST", path, json_body=body))


SAME: dict[str, tuple[str, dict[str, Any]]] = {
    "FP32 top 3": ("cls", _body("cls", [_ask("FP32", 3)])),
    "FP64 top 2": ("cls", _body("cls", [_ask("FP64", 2)])),
    "INT32 every class, ties": ("cls", _body("cls", [_ask("INT32", 6)], INT_TIES)),
    "INT64 top 1": ("cls", _body("cls", [_ask("INT64", 1)])),
    "one class of a one-class output": ("cls", _body("cls", [_ask("SCALAR", 1)])),
    "binary answer": ("cls", _body("cls", [_ask("FP32", 2, binary_data=True)])),
    "classes next to values": ("cls", _body("cls", [_ask("FP32", 2), {"name": "INT32"}])),
    "two outputs classified": ("cls", _body("cls", [_ask("FP64", 4), _ask("INT32", 2)])),
    "no batching: [N]": ("cls_nb", _body("cls_nb", [_ask("FP32", 3)])),
}


@pytest.mark.parametrize("case", list(SAME))
def test_classification_answers_are_tritons_byte_for_byte(servers: Servers, case: str) -> None:
    model, body = SAME[case]
    triton, worker = _both(servers, model, body)
    assert triton.status == 200, triton
    assert worker == triton


def test_tritonclient_class_count_over_grpc_and_http_matches_triton(servers: Servers) -> None:
    answers: dict[str, list[Any]] = {}
    for name, server in servers.items():
        got = []
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            inp = grpcclient.InferInput("INPUT0", [2, 6], "FP32")
            inp.set_data_from_numpy(X)
            result = client.infer("cls", [inp], outputs=[grpcclient.InferRequestedOutput("FP32", class_count=3)])
            out = result.get_response().outputs[0]
            got.append((out.datatype, list(out.shape), result.as_numpy("FP32").tolist()))
        with httpclient.InferenceServerClient(server.http_url) as client:
            inp = httpclient.InferInput("INPUT0", [2, 6], "FP32")
            inp.set_data_from_numpy(X, binary_data=True)
            for binary in (True, False):
                result = client.infer("cls", [inp], outputs=[
                    httpclient.InferRequestedOutput("FP32", binary_data=binary, class_count=3)])
                got.append(result.as_numpy("FP32").tolist())
        answers[name] = got
    assert answers["worker"] == answers["triton"]
    assert answers["triton"][0][:2] == ("BYTES", [2, 3])
    assert answers["triton"][0][2][1] == [b"5.000000:0", b"4.000000:1", b"3.000000:2"]


@pytest.mark.parametrize("output", ["FP16", "BOOL"])
def test_outputs_triton_cannot_rank_are_refused_in_its_words(servers: Servers, output: str) -> None:
    triton, worker = _both(servers, "cls", _body("cls", [_ask(output, 2)]))
    assert triton.status == worker.status == 400
    assert worker.error.startswith(triton.error), (triton.error, worker.error)
    for name, server in servers.items():
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            inp = grpcclient.InferInput("INPUT0", [2, 6], "FP32")
            inp.set_data_from_numpy(X)
            with pytest.raises(InferenceServerException) as err:
                client.infer("cls", [inp], outputs=[grpcclient.InferRequestedOutput(output, class_count=1)])
            assert err.value.status() == "StatusCode.INVALID_ARGUMENT", name
            assert "class result not available for output due to unsupported type" in err.value.message()


# (body, what Triton does with it): the worker refuses each with 400
DIFFERENT: dict[str, tuple[str, dict[str, Any], str]] = {
    "more classes than the output has": ("cls", _body("cls", [_ask("FP32", 7)]), "clamps"),
    "more classes than a non-batching output has": ("cls_nb", _body("cls_nb", [_ask("FP32", 9)]), "clamps"),
    "zero classes": ("cls", _body("cls", [_ask("FP32", 0)]), "ignores"),
    "negative count": ("cls", _body("cls", [_ask("FP32", -1)]), "500"),
    "fractional count": ("cls", _body("cls", [_ask("FP32", 1.5)]), "500"),
    "count as a string": ("cls", _body("cls", [_ask("FP32", "2")]), "500"),
    "count as a boolean": ("cls", _body("cls", [_ask("FP32", True)]), "500"),
    "two classes of a one-class output": ("cls", _body("cls", [_ask("SCALAR", 2)]), "clamps"),
}


@pytest.mark.parametrize("case", list(DIFFERENT))
def test_counts_that_cannot_be_answered_as_asked_are_refused_where_triton_lets_them_by(
        servers: Servers, case: str) -> None:
    model, body, triton_does = DIFFERENT[case]
    triton, worker = _both(servers, model, body)
    assert worker.status == 400, worker
    assert "classification" in worker.error and "'" in worker.error, worker.error
    if triton_does == "500":
        assert triton.status == 500 and "Unable to set 'classification'" in triton.error, triton
    else:  # Triton answers 200: fewer classes than asked, or the raw values
        assert triton.status == 200, triton
        out = triton.body["outputs"][0]
        asked = body["outputs"][0]["parameters"]["classification"]
        if triton_does == "clamps":
            assert out["datatype"] == "BYTES" and out["shape"][-1] < asked, out
        else:
            assert out["datatype"] == "FP32", out


def test_bytes_output_is_refused(servers: Servers) -> None:
    """Not sent to Triton: its HTTP server drops the connection on it (2.51)."""
    exchange = http_exchange(servers["worker"], "POST", "/v2/models/cls/infer",
                             json_body=_body("cls", [_ask("STR", 1)]))
    assert exchange.status == 400
    assert exchange.error.startswith("class result not available for output due to unsupported type 'BYTES'")


def test_negative_count_over_grpc_is_invalid_on_both(servers: Servers) -> None:
    for name, server in servers.items():
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            inp = grpcclient.InferInput("INPUT0", [2, 6], "FP32")
            inp.set_data_from_numpy(X)
            with pytest.raises(InferenceServerException) as err:
                client.infer("cls", [inp], outputs=[grpcclient.InferRequestedOutput("FP32", class_count=-2)])
            assert err.value.status() == "StatusCode.INVALID_ARGUMENT", name
            assert "invalid value for 'classification' parameter" in err.value.message()
